"""Configuration delivery on the sidecar's side: the answer, the atomic publish, the switch.

Real files in a temporary directory; the operator is replaced by a function returning
answers (the HTTPS exchange with the real operator is in
tests/operator/test_operator_config_delivery.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from kipsec_sidecar.atomic_files import publish_files as publish
from kipsec_sidecar.config.load import load_config
from kipsec_sidecar.daemon.config_watch import ConfigWatch
from kipsec_sidecar.daemon.delivery import (
    FALLBACK_AFTER,
    Answer,
    Delivery,
    DeliveryError,
    DeliverySettings,
    parse_answer,
)

DOCUMENT = json.dumps(
    {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {"addresses": ["10.10.1.2"], "auth": {"psk": {"secretFile": "psk-1"}}},
        "peers": [{"name": "pb", "address": "10.10.2.2"}],
    }
).encode()
PSK = b"delivered pre-shared key 0123456789abcdef"


def body(files: dict[str, bytes]) -> bytes:
    return json.dumps(
        {"files": {k: base64.b64encode(v).decode() for k, v in files.items()}}
    ).encode()


def test_an_answer_decodes_to_its_files() -> None:
    answer = parse_answer(body({"config.yaml": DOCUMENT, "psk-1": PSK}), '"e1"')
    assert answer == Answer('"e1"', {"config.yaml": DOCUMENT, "psk-1": PSK})


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"<html>", "not JSON"),
        (b'{"files": []}', "not {"),
        (b'{"files": {"../escape": "AA=="}}', "not allowed"),
        (b'{"files": {"..data": "AA=="}}', "not allowed"),
        (b'{"files": {"a/b": "AA=="}}', "not allowed"),
        (b'{"files": {"psk": "not base64!"}}', "files.psk: not base64"),
        (b'{"files": {"psk": 7}}', "files.psk: not a base64 string"),
    ],
)
def test_a_bad_answer_is_a_typed_error_naming_what_is_wrong(raw: bytes, why: str) -> None:
    with pytest.raises(DeliveryError, match=why.replace("{", r"\{")) as error:
        parse_answer(raw, None)
    assert error.value.code == "bad-answer"


def test_publish_swaps_the_whole_directory_at_once(tmp_path: Path) -> None:
    publish(tmp_path, {"config.yaml": DOCUMENT, "psk-1": PSK, "gone": b"x"})
    first = (tmp_path / "..data").resolve()

    publish(tmp_path, {"config.yaml": DOCUMENT, "psk-1": b"rotated " + PSK})

    assert (tmp_path / "psk-1").read_bytes() == b"rotated " + PSK
    assert not (tmp_path / "gone").exists() and not (tmp_path / "gone").is_symlink()
    assert not first.exists()
    assert os.readlink(tmp_path / "config.yaml") == "..data/config.yaml"
    assert stat.S_IMODE((tmp_path / "..data" / "psk-1").stat().st_mode) == 0o600


def test_a_published_document_loads_with_its_files_beside_it(tmp_path: Path) -> None:
    publish(tmp_path, {"config.yaml": DOCUMENT, "psk-1": PSK})
    watch = ConfigWatch(str(tmp_path / "config.yaml"))
    watch.applied(load_config(tmp_path / "config.yaml"), watch.begin())

    publish(tmp_path, {"config.yaml": DOCUMENT, "psk-1": b"rotated " + PSK})

    assert watch.files == (str(tmp_path / "psk-1"),)
    assert watch.changed() is not None


class Operator:
    """Answers polls from a list: an Answer, None (304) or a DeliveryError to raise."""

    def __init__(self, *answers: Answer | DeliveryError | None) -> None:
        self.answers = list(answers)
        self.etags: list[str | None] = []

    def __call__(self, _: DeliverySettings, token: str, etag: str | None) -> Answer | None:
        assert token == "pod-token"
        self.etags.append(etag)
        answer = self.answers.pop(0)
        if isinstance(answer, DeliveryError):
            raise answer
        return answer


def delivery(tmp_path: Path, operator: Operator) -> tuple[Delivery, list[str]]:
    (tmp_path / "token").write_text("pod-token\n")
    settings = DeliverySettings(
        operator_url="https://operator.test:8443",
        token_file=str(tmp_path / "token"),
        directory=str(tmp_path / "run"),
        mounted=str(tmp_path / "etc" / "config.yaml"),
    )
    followed: list[str] = []
    keeper = Delivery(settings, fetcher=operator)
    keeper.attach(followed.append, settings.mounted)
    return keeper, followed


def polls(keeper: Delivery, count: int) -> None:
    async def main() -> None:
        for _ in range(count):
            await keeper.poll_once()

    asyncio.run(main())


def test_an_answer_is_published_and_followed_and_then_asked_for_by_etag(tmp_path: Path) -> None:
    operator = Operator(Answer('"e1"', {"config.yaml": DOCUMENT, "psk-1": PSK}), None)
    keeper, followed = delivery(tmp_path, operator)

    polls(keeper, 2)

    assert (tmp_path / "run" / "config.yaml").read_bytes() == DOCUMENT
    assert followed == [str(tmp_path / "run" / "config.yaml")]
    assert operator.etags == [None, '"e1"']


def test_the_mounted_secret_is_followed_again_after_repeated_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = DeliveryError("unreachable", "connection refused")
    operator = Operator(Answer('"e1"', {"config.yaml": DOCUMENT}), *[down] * FALLBACK_AFTER, None)
    keeper, followed = delivery(tmp_path, operator)

    with caplog.at_level(logging.WARNING, logger="kipsec_sidecar.daemon.delivery"):
        polls(keeper, 1 + FALLBACK_AFTER + 1)

    run, etc = str(tmp_path / "run" / "config.yaml"), str(tmp_path / "etc" / "config.yaml")
    assert followed == [run, etc, run]  # back to the operator's copy once it answers
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one distinct error, logged once
    assert "pod-token" not in caplog.text


def test_an_answer_without_a_document_is_not_published(tmp_path: Path) -> None:
    operator = Operator(Answer('"e0"', {"operator-ca.crt": b"PEM"}))
    keeper, followed = delivery(tmp_path, operator)

    polls(keeper, 1)

    assert not (tmp_path / "run").exists()
    assert followed == []


def test_the_operator_ca_comes_from_the_mounted_secret(tmp_path: Path) -> None:
    keeper, _ = delivery(tmp_path, Operator())
    assert keeper.settings.ca_file() is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "operator-ca.crt").write_text("PEM")

    assert keeper.settings.ca_file() == str(tmp_path / "etc" / "operator-ca.crt")


def test_delivery_is_off_without_a_directory_or_an_operator_url() -> None:
    environ = {"KIPSEC_OPERATOR_URL": "https://op:8443", "KIPSEC_TOKEN_FILE": "/t"}
    assert DeliverySettings.from_environ("/etc/kipsec/config.yaml", None, environ) is None
    assert (
        DeliverySettings.from_environ("/etc/kipsec/config.yaml", "/run/kipsec/config", {}) is None
    )
    on = DeliverySettings.from_environ(
        "/etc/kipsec/config.yaml", None, {**environ, "KIPSEC_OPERATOR_CONFIG_DIR": "/run/k"}
    )
    assert on is not None and on.document == "/run/k/config.yaml"
