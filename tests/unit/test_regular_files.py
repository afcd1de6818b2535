"""Files the sidecar is given: only regular files, at most 1 MiB, never blocking on a FIFO,
and a bad one reported like every other configuration error (field path + message)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from kipsec_sidecar.config import ConfigError, load_config, load_config_data, to_core
from kipsec_sidecar.config.to_core import read_file
from kipsec_sidecar.daemon.config_watch import digest
from kipsec_sidecar.daemon.enrollment import _read_token
from kipsec_sidecar.identity import IdentityRequestError, tls_context
from kipsec_sidecar.regular_files import MAX_FILE_BYTES, FileRefused, read_regular_file
from support.pki import CertificateAuthority
from support.sidecar_config_files import PSK

#: A bound for calls that must return at once (a FIFO would block them forever).
PROMPT = 10.0


def psk_document(secret_file: str) -> dict[str, Any]:
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {"addresses": ["10.0.0.1"], "auth": {"psk": {"secretFile": secret_file}}},
        "peers": [{"name": "b", "address": "10.0.0.2"}],
    }


def returns_promptly(call: Callable[[], Any]) -> Any:
    """``call()``'s result or exception, failing the test if it blocks (a FIFO open)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PROMPT)
    assert not thread.is_alive(), f"blocked for {PROMPT} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    yield path
    # Unblock a reader that (before the fix) waits in open(): a writer arrives and leaves.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # no reader waiting
    os.close(fd)


# --- the reader ------------------------------------------------------------------------


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * MAX_FILE_BYTES)
    assert read_regular_file(tmp_path / "f") == b"x" * MAX_FILE_BYTES


def test_a_symlink_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(PSK)
    (tmp_path / "link").symlink_to(tmp_path / "f")
    assert read_regular_file(tmp_path / "link") == PSK


@pytest.mark.parametrize(
    ("path", "kind"), [("/dev/zero", "a character device"), ("/dev/urandom", "a character device")]
)
def test_a_device_is_refused_without_reading_it(path: str, kind: str) -> None:
    with pytest.raises(FileRefused, match=rf"^{kind}, not a regular file"):
        read_regular_file(path)


def test_a_fifo_is_refused_without_blocking(fifo: Path) -> None:
    with pytest.raises(FileRefused, match=r"^a FIFO, not a regular file"):
        returns_promptly(lambda: read_regular_file(fifo))


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileRefused, match=r"^a directory, not a regular file"):
        read_regular_file(tmp_path)


def test_a_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    with pytest.raises(FileRefused, match=r"^larger than 1 MiB"):
        read_regular_file(tmp_path / "big")
    with pytest.raises(FileRefused, match=r"^larger than 10 bytes"):
        read_regular_file(tmp_path / "big", limit=10)


def test_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "missing")


# --- every file a document names goes through it ------------------------------------------


def test_to_core_reads_through_the_regular_file_reader() -> None:
    with pytest.raises(FileRefused):
        read_file("/dev/zero")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: "/dev/zero", "cannot read /dev/zero: a character device, not a regular"),
        (lambda tmp: str(tmp), "a directory, not a regular file"),
        (lambda tmp: str(tmp / "missing"), "No such file or directory"),
    ],
    ids=["device", "directory", "missing"],
)
def test_an_unusable_psk_file_is_a_config_error_at_its_field(
    tmp_path: Path, make: Callable[[Path], str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        to_core(load_config_data(psk_document(make(tmp_path))))
    assert info.value.paths == ("local.auth.psk.secretFile",)
    assert message in info.value.errors[0].message


def test_a_fifo_psk_file_is_a_config_error_not_a_hang(fifo: Path) -> None:
    config = load_config_data(psk_document(str(fifo)))
    with pytest.raises(ConfigError) as info:
        returns_promptly(lambda: to_core(config))
    assert info.value.paths == ("local.auth.psk.secretFile",)
    assert "a FIFO, not a regular file" in info.value.errors[0].message


def test_a_fifo_certificate_file_is_refused_at_its_field(tmp_path: Path, fifo: Path) -> None:
    document = psk_document("unused")
    document["local"]["auth"] = {
        "certificate": {"certFile": str(fifo), "keyFile": str(fifo), "caFiles": [str(fifo)]}
    }
    with pytest.raises(ConfigError) as info:
        returns_promptly(lambda: to_core(load_config_data(document)))
    assert info.value.paths == ("local.auth.certificate.certFile",)


def test_a_fifo_document_is_refused_without_blocking(fifo: Path) -> None:
    with pytest.raises(ConfigError) as info:
        returns_promptly(lambda: load_config(fifo))
    assert "a FIFO, not a regular file" in str(info.value)


def test_the_reload_watch_digests_a_fifo_without_blocking(tmp_path: Path, fifo: Path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(psk_document(str(fifo))))
    found = returns_promptly(lambda: digest(str(tmp_path / "config.yaml"), [str(fifo)]))
    assert found.document is not None


# --- how the daemon reports it ----------------------------------------------------------


@pytest.mark.parametrize("secret", ["missing", "directory", "short", "fifo"])
def test_the_daemon_reports_a_bad_secret_file_as_a_config_error_block(
    tmp_path: Path, secret: str
) -> None:
    paths = {"missing": tmp_path / "missing", "directory": tmp_path, "fifo": tmp_path / "fifo"}
    path = paths.get(secret, tmp_path / "short")
    if secret == "short":
        path.write_bytes(b"tiny\n")
    if secret == "fifo":
        os.mkfifo(path)
    document = psk_document(str(path))
    document["datapath"] = "userspace"  # no kernel probe: the files are read before
    document["control"] = {"socket": str(tmp_path / "control.sock")}
    document["metrics"] = {"enabled": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
    sidecar = Path(sys.executable).with_name("kipsec-sidecar")
    result = subprocess.run(
        [str(sidecar), "run", "--config", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    block = f"invalid sidecar configuration in {tmp_path / 'config.yaml'}: 1 error\n"
    block += "  local.auth.psk.secretFile: "
    assert f"kipsec-sidecar: {block}" in result.stderr, result.stderr


# --- files named by the environment: the pod's token, the operator's CA ------------------


def test_a_fifo_token_file_is_a_retryable_failure_not_a_hang(fifo: Path) -> None:
    with pytest.raises(IdentityRequestError) as info:
        returns_promptly(lambda: _read_token(str(fifo)))
    assert info.value.code == "no-token" and info.value.retryable
    assert "a FIFO, not a regular file" in info.value.reason


def test_the_operator_ca_is_read_through_the_reader(tmp_path: Path, fifo: Path) -> None:
    ca = CertificateAuthority.root("operator CA")
    (tmp_path / "ca.crt").write_bytes(ca.cert.public_bytes(Encoding.PEM))
    assert tls_context(tmp_path / "ca.crt").cert_store_stats()["x509_ca"] == 1
    with pytest.raises(FileRefused):
        returns_promptly(lambda: tls_context(fifo))
