"""The sidecar gets its certificate from the operator: key in the pod, CSR out, verified
answer stored, refusals retried, renewals on the operator's renewalTime.

The issuer is the operator's real endpoint code and CA (support.local_issuer) served by
aiohttp in the test's loop; the sidecar side is the real enrollment making real HTTP
requests (in a thread, as in the daemon). Time is an injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipsec_operator.certificates.ca import CertificateAuthority, generate_ca
from kipsec_sidecar.config.errors import ConfigError
from kipsec_sidecar.config.load import load_config_data
from kipsec_sidecar.core.backoff import Backoff
from kipsec_sidecar.core.ike.certs import validate_chain
from kipsec_sidecar.daemon import _wait_for_certificate
from kipsec_sidecar.daemon.enrollment import (
    CHECK_INTERVAL,
    ENV_IDENTITY_DIR,
    ENV_OPERATOR_URL,
    ENV_TOKEN_FILE,
    Enrollment,
    settings_from,
)
from kipsec_sidecar.exposition import Registry, render
from kipsec_sidecar.identity import generate_key
from support.local_issuer import LocalBackend, issuer_app, pod, token_review, tunnel_certificate

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POD_IP = "10.1.0.5"


class Clock:
    """The injected clock: moves only when the test says so."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Issuer:
    url: str
    backend: LocalBackend
    ca: CertificateAuthority


def make_ca(seed: int) -> CertificateAuthority:
    return generate_ca(
        START - timedelta(days=1), timedelta(days=365), random.Random(seed).randbytes
    )


@pytest.fixture(scope="module")
def operator_ca() -> CertificateAuthority:
    return make_ca(1)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest_asyncio.fixture
async def issuer(operator_ca: CertificateAuthority, clock: Clock) -> AsyncIterator[Issuer]:
    cart = pod("cart-0", POD_IP)
    backend = LocalBackend(
        ca=operator_ca,
        pods=[cart],
        tunnel_certificates=[tunnel_certificate()],
        reviews={"cart-token": token_review(cart)},
    )
    runner = web.AppRunner(issuer_app(lambda: backend, clock), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Issuer(f"http://127.0.0.1:{port}", backend, operator_ca)
    await runner.cleanup()


def document(tmp_path: Path, source: str = "operator") -> dict[str, Any]:
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {
            "addresses": [POD_IP],
            "identity": {"address": POD_IP},
            "auth": {
                "certificate": {
                    "certFile": str(tmp_path / "identity" / "tls.crt"),
                    "keyFile": str(tmp_path / "identity" / "tls.key"),
                    "caFiles": [str(tmp_path / "ca.crt")],
                    "source": source,
                }
            },
        },
        "peers": [{"name": "pb", "address": "10.1.0.6"}],
    }


def environment(tmp_path: Path, url: str, token: str = "cart-token") -> dict[str, str]:
    (tmp_path / "token").write_text(token + "\n")
    return {ENV_OPERATOR_URL: url, ENV_TOKEN_FILE: str(tmp_path / "token")}


def enrollment(
    tmp_path: Path, issuer: Issuer, clock: Clock, trusted: CertificateAuthority | None = None
) -> Enrollment:
    (tmp_path / "ca.crt").write_bytes((trusted or issuer.ca).cert_pem())
    config = load_config_data(document(tmp_path))
    settings = settings_from(
        config, str(tmp_path / "config.yaml"), environment(tmp_path, issuer.url)
    )
    assert settings is not None
    return Enrollment(settings, clock=clock, backoff=Backoff(rng=lambda: 0.5))


def stored(tmp_path: Path) -> tuple[x509.Certificate, Any]:
    directory = tmp_path / "identity"
    cert = x509.load_pem_x509_certificate((directory / "tls.crt").read_bytes())
    key = serialization.load_pem_private_key((directory / "tls.key").read_bytes(), None)
    return cert, key


def spki(public_key: Any) -> bytes:
    data: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


@pytest.mark.asyncio
async def test_the_first_certificate_is_issued_verified_and_stored_beside_its_key(
    tmp_path: Path, issuer: Issuer, clock: Clock
) -> None:
    keeper = enrollment(tmp_path, issuer, clock)
    assert keeper.waiting == "waiting for certificate"

    assert await keeper.first(asyncio.Event())

    cert, key = stored(tmp_path)
    assert spki(cert.public_key()) == spki(key.public_key())
    validate_chain(cert, [], [issuer.ca.cert], clock())
    mode = stat.S_IMODE((tmp_path / "identity" / "tls.key").stat().st_mode)
    assert mode == 0o600
    assert keeper.waiting is None and keeper.results == {"issued": 1}


@pytest.mark.asyncio
async def test_the_private_key_never_reaches_the_operator(
    tmp_path: Path, issuer: Issuer, clock: Clock
) -> None:
    keeper = enrollment(tmp_path, issuer, clock)
    assert await keeper.renew()

    key_pem = (tmp_path / "identity" / "tls.key").read_bytes()
    assert issuer.backend.bodies and all(b"PRIVATE KEY" not in b for b in issuer.backend.bodies)
    assert all(key_pem.split(b"\n")[1] not in b for b in issuer.backend.bodies)


@pytest.mark.asyncio
async def test_a_token_of_another_pod_gets_no_certificate_a_reason_and_a_later_retry(
    tmp_path: Path, issuer: Issuer, clock: Clock
) -> None:
    issuer.backend.reviews["cart-token"] = token_review(pod("cart-0", POD_IP), uid="recreated")
    keeper = enrollment(tmp_path, issuer, clock)

    renewed, delay = await keeper.step()

    assert not renewed and keeper.identity is None
    assert not (tmp_path / "identity" / "tls.crt").exists()
    assert keeper.last_error is not None and keeper.last_error.code == "pod-mismatch"
    assert keeper.waiting is not None and "pod-mismatch" in keeper.waiting
    assert 0 < delay <= 60
    assert (await keeper.step())[1] > delay  # backs off


@pytest.mark.asyncio
async def test_the_token_file_is_read_again_for_every_attempt(
    tmp_path: Path, issuer: Issuer, clock: Clock
) -> None:
    keeper = enrollment(tmp_path, issuer, clock)
    (tmp_path / "token").write_text("expired-token\n")
    assert not await keeper.renew()
    assert keeper.last_error is not None and keeper.last_error.code == "unauthenticated"

    (tmp_path / "token").write_text("cart-token\n")  # the kubelet rotated it

    assert await keeper.renew()


@pytest.mark.asyncio
async def test_a_refusal_is_counted_by_its_code_in_the_metrics(
    tmp_path: Path, issuer: Issuer, clock: Clock
) -> None:
    issuer.backend.tunnel_certificates = []
    keeper = enrollment(tmp_path, issuer, clock)
    await keeper.step()

    registry = Registry()
    registry.register(keeper.collector())
    text = render(registry).decode()

    assert 'kipsec_identity_requests_total{result="not-selected"} 1.0' in text
    assert "kipsec_identity_waiting 1.0" in text


@pytest.mark.asyncio
async def test_a_certificate_that_does_not_chain_to_the_trust_bundle_is_not_stored(
    tmp_path: Path, issuer: Issuer, clock: Clock
) -> None:
    keeper = enrollment(tmp_path, issuer, clock, trusted=make_ca(2))

    assert not await keeper.renew()

    assert keeper.last_error is not None and keeper.last_error.code == "untrusted-certificate"
    assert "local.auth.certificate.caFiles" in keeper.last_error.reason
    assert not (tmp_path / "identity" / "tls.crt").exists()


@pytest.mark.asyncio
async def test_renewal_waits_for_the_operators_renewal_time_on_the_clock(
    tmp_path: Path, issuer: Issuer, clock: Clock
) -> None:
    keeper = enrollment(tmp_path, issuer, clock)
    await keeper.first(asyncio.Event())
    first = keeper.identity
    assert first is not None
    assert first.renewal_time == first.not_after - timedelta(hours=8)
    assert keeper.next_delay() == CHECK_INTERVAL

    clock.now = first.renewal_time - timedelta(seconds=1)
    assert await keeper.step() == (False, 1.0)

    clock.now = first.renewal_time
    renewed, _ = await keeper.step()

    assert renewed and keeper.identity is not None
    cert, key = stored(tmp_path)
    assert cert.serial_number != first.certificate.serial_number
    assert spki(key.public_key()) != spki(first.certificate.public_key())  # a new key
    assert cert.subject == first.certificate.subject


@pytest.mark.asyncio
async def test_the_renewal_loop_reloads_the_daemon_after_each_new_certificate(
    tmp_path: Path, issuer: Issuer, clock: Clock
) -> None:
    async def sleep(seconds: float) -> None:  # time passes only on the injected clock
        clock.now += timedelta(seconds=seconds)
        await asyncio.sleep(0)

    keeper = enrollment(tmp_path, issuer, clock)
    keeper.sleep = sleep
    await keeper.first(asyncio.Event())
    reloads: list[datetime] = []
    done = asyncio.Event()

    async def reload() -> list[str]:
        reloads.append(clock())
        if len(reloads) == 2:
            done.set()
        return []

    task = asyncio.create_task(keeper.run(reload))
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()

    assert reloads[0] >= START + timedelta(hours=16)
    assert reloads[1] - reloads[0] >= timedelta(hours=16)
    assert keeper.results == {"issued": 3}


# --- settings from the document and the environment -----------------------------------------


def test_a_document_without_operator_certificates_needs_no_enrollment(tmp_path: Path) -> None:
    config = load_config_data(document(tmp_path, source="files"))
    assert settings_from(config, str(tmp_path / "c.yaml"), {}) is None


def test_source_operator_without_an_operator_url_names_the_field(tmp_path: Path) -> None:
    config = load_config_data(document(tmp_path))
    with pytest.raises(ConfigError) as info:
        settings_from(config, str(tmp_path / "c.yaml"), {})
    assert "local.auth.certificate.source" in str(info.value)
    assert ENV_OPERATOR_URL in str(info.value)


def test_an_identity_directory_other_than_the_documents_is_refused(tmp_path: Path) -> None:
    config = load_config_data(document(tmp_path))
    env = {ENV_OPERATOR_URL: "https://op:8443", ENV_IDENTITY_DIR: "/var/run/kipsec/identity"}
    with pytest.raises(ConfigError) as info:
        settings_from(config, str(tmp_path / "c.yaml"), env)
    assert "local.auth.certificate.certFile" in str(info.value)


def test_source_operator_needs_tls_crt_and_tls_key_in_one_directory(tmp_path: Path) -> None:
    doc = document(tmp_path)
    doc["local"]["auth"]["certificate"]["keyFile"] = str(tmp_path / "elsewhere" / "tls.key")
    with pytest.raises(ConfigError) as info:
        load_config_data(doc)
    assert "keyFile" in str(info.value)


@pytest.mark.asyncio
async def test_healthz_answers_503_with_the_operators_reason_until_the_certificate_is_stored(
    tmp_path: Path, issuer: Issuer, clock: Clock
) -> None:
    issuer.backend.tunnel_certificates = []  # the operator refuses: not-selected
    keeper = enrollment(tmp_path, issuer, clock)
    keeper.backoff = Backoff(initial=0.05, maximum=0.05, rng=lambda: 0.5)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waiting = asyncio.create_task(_wait_for_certificate(keeper, f"127.0.0.1:{port}"))

    async def healthz() -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            return response.status, await response.text()

    for _ in range(100):
        with contextlib.suppress(aiohttp.ClientError):
            status, text = await healthz()
            if "not-selected" in text:
                break
        await asyncio.sleep(0.05)
    assert status == 503 and text.startswith("waiting for certificate: not-selected")

    issuer.backend.tunnel_certificates = [tunnel_certificate()]

    assert await asyncio.wait_for(waiting, 10)
    assert (tmp_path / "identity" / "tls.crt").exists()


@pytest.mark.asyncio
async def test_an_offer_the_sidecar_cannot_honour_is_a_failed_attempt_not_a_crash(
    tmp_path: Path, issuer: Issuer, clock: Clock
) -> None:
    keeper = enrollment(tmp_path, issuer, clock)

    def attempt(settings: Any, now: datetime) -> Any:
        return generate_key("RSA", 1024)  # what an offer of a 1024-bit RSA key leads to

    keeper.attempt = attempt

    assert not await keeper.renew()
    assert keeper.last_error is not None and keeper.last_error.code == "bad-response"
    assert "2048 to 4096" in keeper.last_error.reason


@pytest.mark.asyncio
async def test_a_peer_with_its_own_trust_store_does_not_hold_back_the_certificate(
    tmp_path: Path, issuer: Issuer, clock: Clock
) -> None:
    # An external gateway: the pod trusts the gateway's CA (caFiles), the gateway trusts
    # the operator's CA for the pod; the certificate cannot chain to caFiles and need not.
    (tmp_path / "ca.crt").write_bytes(issuer.ca.cert_pem())
    (tmp_path / "gateway-ca.crt").write_bytes(make_ca(3).cert_pem())
    data = document(tmp_path)
    own = dict(data["local"]["auth"]["certificate"], caFiles=[str(tmp_path / "gateway-ca.crt")])
    data["peers"][0]["auth"] = {"certificate": {**own, "peerTrust": "own"}}
    settings = settings_from(
        load_config_data(data), str(tmp_path / "config.yaml"), environment(tmp_path, issuer.url)
    )
    assert settings is not None
    assert [where for where, _ in settings.trust_bundles] == ["local.auth.certificate.caFiles"]
    keeper = Enrollment(settings, clock=clock, backoff=Backoff(rng=lambda: 0.5))

    assert await keeper.renew(), keeper.last_error
    cert, _ = stored(tmp_path)
    validate_chain(cert, [], [issuer.ca.cert], START)
