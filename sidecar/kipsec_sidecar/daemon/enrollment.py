"""The pod's operator-issued certificate: the first one before IKE starts, then renewals.

A document whose ``certificate`` says ``source: operator`` does not bring its key and
certificate: the sidecar makes them. Each *attempt* (:func:`request_identity`, blocking,
run in a thread) reads the pod's projected ServiceAccount token afresh (the kubelet
rotates it), asks ``GET /v1/identity`` what this pod may ask for, generates the private
key in memory, sends the CSR to ``POST /v1/csr``, checks the answer with the sidecar's
own chain validator against the trust bundle of the document (``caFiles``: the bundle the
peers will check us against), and only then writes key (0600), certificate and CA bundle
into the identity directory (:func:`~kipsec_sidecar.identity.store_identity`, an atomic
swap). The key is never sent anywhere.

:class:`Enrollment` owns the schedule: until the first certificate exists the daemon
does not start IKE and ``/healthz`` answers 503 "waiting for certificate: <the
operator's reason>"; a refused or failed attempt is retried with bounded, jittered
back-off (:class:`~kipsec_sidecar.core.backoff.Backoff`, 1 s doubling to a minute), logged with the
operator's code and reason, and counted in ``kipsec_identity_requests_total{result}``.
From the operator's ``renewalTime`` on, a new key and certificate are requested; the
daemon then reloads, and :func:`~.reload.credentials_only` keeps every SA while new
IKE_AUTH exchanges use the new certificate. The clock, the attempt and the sleep are
injectable, so tests drive renewals without waiting.

Settings come from the environment the injecting webhook sets: ``KIPSEC_OPERATOR_URL``,
``KIPSEC_TOKEN_FILE``, ``KIPSEC_IDENTITY_DIR`` (checked against the document's
``certFile``), and ``KIPSEC_OPERATOR_CA_FILE`` (the CA that signed the operator's
serving certificate; default ``operator-ca.crt`` beside the document when that file
exists, else the system's trust store). TLS to the operator is always verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..config.errors import ConfigError, FieldError, join_path
from ..config.model import Certificate, SidecarConfig
from ..core.backoff import Backoff
from ..core.errors import CertificateError
from ..exposition import CounterFamily, Family, GaugeFamily
from ..identity import (
    IdentityRequestError,
    IssuedIdentity,
    PrivateKey,
    fetch_offer,
    renewal_due,
    store_identity,
    submit_csr,
)
from ..regular_files import read_regular_file, why_unreadable

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger(__name__)

ENV_OPERATOR_URL = "KIPSEC_OPERATOR_URL"
ENV_TOKEN_FILE = "KIPSEC_TOKEN_FILE"  # noqa: S105 (a variable name)
ENV_IDENTITY_DIR = "KIPSEC_IDENTITY_DIR"
ENV_OPERATOR_CA_FILE = "KIPSEC_OPERATOR_CA_FILE"
#: The operator's serving CA as the operator delivers it: a key of the pod's Secret.
OPERATOR_CA_FILE = "operator-ca.crt"
DEFAULT_TOKEN_FILE = "/var/run/secrets/kipsec.io/token"  # noqa: S105 (a path)
#: Retries after a failed attempt: 1 s doubling to this many seconds (jittered).
RETRY_MAXIMUM = 60.0
#: Longest sleep between two looks at the clock while a certificate is valid, so a
#: suspended or stepped clock cannot make a renewal late by more than this.
CHECK_INTERVAL = 300.0

Clock = Callable[[], datetime]
Attempt = Callable[["EnrollmentSettings", datetime], tuple[PrivateKey, IssuedIdentity]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EnrollmentSettings:
    """Where to ask, with what, and where the answer goes."""

    operator_url: str
    token_file: str
    identity_dir: str
    operator_ca_file: str | None
    """Explicit CA file for the operator's TLS (``KIPSEC_OPERATOR_CA_FILE``)."""
    default_ca_file: str
    """``operator-ca.crt`` beside the document, used when it exists."""
    trust_bundles: tuple[tuple[str, tuple[str, ...]], ...]
    """(document path of ``caFiles``, the files): each must validate the certificate."""

    def ca_file(self) -> Path | None:
        """The CA for the operator's serving certificate (looked up per attempt, so a
        Secret that gains ``operator-ca.crt`` later is used); None: system CAs."""
        if self.operator_ca_file:
            return Path(self.operator_ca_file)
        return Path(self.default_ca_file) if os.path.exists(self.default_ca_file) else None


def _operator_certificates(config: SidecarConfig) -> list[tuple[str, Certificate]]:
    found: list[tuple[str, Certificate]] = []
    auths = [("local.auth", config.local.auth)]
    auths += [(join_path("peers", i, "auth"), p.auth) for i, p in enumerate(config.peers)]
    for where, auth in auths:
        certificate = auth.certificate if auth is not None else None
        if certificate is not None and certificate.source == "operator":
            found.append((join_path(where, "certificate"), certificate))
    return found


def settings_from(
    config: SidecarConfig, config_path: str, environ: Mapping[str, str] = os.environ
) -> EnrollmentSettings | None:
    """The enrollment settings of ``config``, or None when no certificate has
    ``source: operator``. Raises ConfigError naming the field when the environment
    cannot serve it or two certificates would need two identities."""
    found = _operator_certificates(config)
    if not found:
        return None
    first_where, first = found[0]
    cert_file = config.resolve_path(first.cert_file)
    errors: list[FieldError] = []
    for where, certificate in found[1:]:
        if config.resolve_path(certificate.cert_file) != cert_file:
            errors.append(
                FieldError(
                    join_path(where, "certFile"),
                    f"must be {first.cert_file} like {first_where}: a pod has one identity",
                )
            )
    url = environ.get(ENV_OPERATOR_URL, "").strip()
    if not url.startswith(("https://", "http://")):
        errors.append(
            FieldError(
                join_path(first_where, "source"),
                f"source operator needs ${ENV_OPERATOR_URL} (https://…, the operator's "
                f"identity endpoint); it is {'unset' if not url else repr(url[:60])}",
            )
        )
    directory = os.path.dirname(cert_file)
    wanted = environ.get(ENV_IDENTITY_DIR, "").strip()
    if wanted and os.path.normpath(wanted) != os.path.normpath(directory):
        errors.append(
            FieldError(
                join_path(first_where, "certFile"),
                f"is in {directory} but ${ENV_IDENTITY_DIR} is {wanted}",
            )
        )
    if errors:
        raise ConfigError(errors)
    if url.startswith("http://"):
        log.warning(
            "the operator URL is plain HTTP: the pod's token travels unencrypted",
            extra={"url": url},
        )
    return EnrollmentSettings(
        operator_url=url,
        token_file=environ.get(ENV_TOKEN_FILE, "").strip() or DEFAULT_TOKEN_FILE,
        identity_dir=directory,
        operator_ca_file=environ.get(ENV_OPERATOR_CA_FILE, "").strip() or None,
        default_ca_file=os.path.join(
            os.path.dirname(os.path.abspath(config_path)), OPERATOR_CA_FILE
        ),
        # A peer with a trust store of its own (peerTrust: own) checks our certificate
        # against anchors this pod does not know.
        trust_bundles=tuple(
            (join_path(where, "caFiles"), tuple(config.resolve_path(p) for p in c.ca_files))
            for where, c in found
            if c.peer_trust == "caFiles"
        ),
    )


def _read_token(path: str) -> str:
    try:
        token = read_regular_file(path).decode().strip()
    except (OSError, ValueError) as exc:
        raise IdentityRequestError(
            "no-token", f"cannot read the token file {path}: {why_unreadable(exc)}", retryable=True
        ) from None
    if not token:
        raise IdentityRequestError("no-token", f"the token file {path} is empty", retryable=True)
    return token


def _anchors(where: str, files: tuple[str, ...]) -> list[x509.Certificate]:
    from cryptography import x509  # only a sidecar that enrolls: see identity._csr

    anchors: list[x509.Certificate] = []
    for path in files:
        try:
            anchors += x509.load_pem_x509_certificates(read_regular_file(path))
        except (OSError, ValueError) as exc:
            raise IdentityRequestError(
                "trust-bundle", f"{where}: cannot read {path}: {exc}", retryable=True
            ) from None
    return anchors


def verify_issued(
    issued: IssuedIdentity, trust_bundles: tuple[tuple[str, tuple[str, ...]], ...], now: datetime
) -> None:
    """Check the issued certificate as a peer will: a path to each trust bundle.

    The answer's own ``caBundle`` only supplies intermediates, never trust. Raises
    IdentityRequestError('untrusted-certificate', …), retryable: during a CA rotation
    the pod's Secret may carry the new CA a moment after the operator signs with it.
    """
    from cryptography import x509

    from ..core.ike.certs import validate_chain

    intermediates = x509.load_pem_x509_certificates(issued.ca_bundle_pem)
    for where, files in trust_bundles:
        try:
            validate_chain(issued.certificate, intermediates, _anchors(where, files), now)
        except CertificateError as exc:
            raise IdentityRequestError(
                "untrusted-certificate",
                f"the operator's certificate does not validate against {where}: {exc}",
                retryable=True,
            ) from None


def request_identity(
    settings: EnrollmentSettings, now: datetime
) -> tuple[PrivateKey, IssuedIdentity]:
    """One attempt: token, offer, new key, CSR, verified answer. Blocking (HTTP)."""
    token = _read_token(settings.token_file)
    ca_file = settings.ca_file()
    offer = fetch_offer(settings.operator_url, token, ca_file)
    key = offer.generate_key()
    issued = submit_csr(settings.operator_url, offer.build_csr(key), token, ca_file, key)
    verify_issued(issued, settings.trust_bundles, now)
    return key, issued


class Enrollment:
    """The pod identity's state and schedule (see the module docstring)."""

    def __init__(
        self,
        settings: EnrollmentSettings,
        *,
        clock: Clock = utc_now,
        attempt: Attempt = request_identity,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.attempt = attempt
        self.backoff = backoff or Backoff(initial=1.0, maximum=RETRY_MAXIMUM)
        self.sleep = sleep
        self.identity: IssuedIdentity | None = None
        self.last_error: IdentityRequestError | None = None
        self.results: dict[str, int] = {}
        """Attempts by result: ``issued`` or the refusal code (``pod-mismatch`` …)."""
        self._retry_in = 0.0

    @classmethod
    def from_environment(
        cls, config: SidecarConfig, config_path: str, environ: Mapping[str, str] = os.environ
    ) -> Enrollment | None:
        """The enrollment ``config`` needs, or None (see :func:`settings_from`)."""
        settings = settings_from(config, config_path, environ)
        return cls(settings) if settings is not None else None

    @property
    def waiting(self) -> str | None:
        """Why there is no certificate yet (the /healthz 503 body); None once there is."""
        if self.identity is not None:
            return None
        if self.last_error is None:
            return "waiting for certificate"
        return f"waiting for certificate: {self.last_error}"

    def due(self) -> bool:
        return self.identity is None or renewal_due(self.identity, self.clock())

    async def renew(self) -> bool:
        """One attempt now; True when a new key and certificate are stored."""
        now = self.clock()
        try:
            try:
                key, issued = await asyncio.to_thread(self.attempt, self.settings, now)
            except ValueError as exc:  # an offer kipsec cannot honour (key size …)
                raise IdentityRequestError("bad-response", str(exc)) from None
            await asyncio.to_thread(store_identity, Path(self.settings.identity_dir), key, issued)
        except IdentityRequestError as exc:
            self._failed(exc)
            self._log_refusal(exc, now)
            return False
        except OSError as exc:
            self._failed(IdentityRequestError("store-failed", str(exc), retryable=True))
            log.error(
                "certificate not stored",
                extra={"directory": self.settings.identity_dir, "error": str(exc)},
            )
            return False
        first = self.identity is None
        self._count("issued")
        self.identity, self.last_error, self._retry_in = issued, None, 0.0
        self.backoff.reset()
        log.info(
            "certificate issued" if first else "certificate renewed",
            extra={
                "subject": issued.certificate.subject.rfc4514_string(),
                "serial": f"{issued.certificate.serial_number:x}",
                "not_after": issued.not_after.isoformat(),
                "renewal_time": issued.renewal_time.isoformat(),
            },
        )
        return True

    def next_delay(self) -> float:
        """Seconds until the next :meth:`step` should run: until the renewal time (at
        most :data:`CHECK_INTERVAL`), or the back-off after a failed attempt."""
        if self.identity is not None and not self.due():
            until = (self.identity.renewal_time - self.clock()).total_seconds()
            return min(max(until, 0.0), CHECK_INTERVAL)
        return self._retry_in

    async def step(self) -> tuple[bool, float]:
        """Renew if due; returns (renewed, :meth:`next_delay`)."""
        renewed = await self.renew() if self.due() else False
        return renewed, self.next_delay()

    async def first(
        self, stopped: asyncio.Event, on_wait: Callable[[str], None] | None = None
    ) -> bool:
        """Wait for the first certificate; False if ``stopped`` is set first.

        ``on_wait`` gets :attr:`waiting` after each failed attempt (the health
        endpoint's 503 body)."""
        while not stopped.is_set():
            _, delay = await self.step()
            if self.identity is not None:
                return True
            if on_wait is not None and self.waiting is not None:
                on_wait(self.waiting)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), delay)
        return False

    async def run(self, on_renewed: Callable[[], Awaitable[object]]) -> None:
        """Renew forever (a task the daemon cancels on stop); ``on_renewed`` after each
        new certificate (the daemon's reload). Call after :meth:`first`."""
        while True:
            await self.sleep(self.next_delay())
            renewed, _ = await self.step()
            if renewed:
                try:
                    await on_renewed()
                except Exception:
                    log.exception("reload after the certificate renewal failed")

    def _failed(self, exc: IdentityRequestError) -> None:
        self._count(exc.code)
        self.last_error = exc
        self._retry_in = self.backoff.next_delay()

    def _count(self, result: str) -> None:
        self.results[result] = self.results.get(result, 0) + 1

    def _log_refusal(self, exc: IdentityRequestError, now: datetime) -> None:
        fields: dict[str, object] = {
            "code": exc.code,
            "reason": exc.reason,
            "retryable": exc.retryable,
            "operator": self.settings.operator_url,
        }
        if self.identity is None:
            log.warning("certificate not issued; retrying", extra=fields)
        elif now >= self.identity.not_after:
            log.error("certificate expired and not renewed: new IKE SAs will fail", extra=fields)
        else:
            log.warning(
                "certificate not renewed; retrying",
                extra=fields | {"not_after": self.identity.not_after.isoformat()},
            )

    def collector(self) -> EnrollmentCollector:
        return EnrollmentCollector(self)


class EnrollmentCollector:
    """``kipsec_identity_*``: requests by result, the certificate's notAfter and renewal
    time, and whether the sidecar still waits for its first certificate. The pod's own
    certificate, so an alert on it holds whichever operator replica signed it."""

    def __init__(self, enrollment: Enrollment) -> None:
        self.enrollment = enrollment

    def describe(self) -> list[Family]:
        """The families without samples (the registry's duplicate check, the catalog
        the dashboard and alerts are checked against)."""
        return list(self._families(None))

    def collect(self) -> Iterator[Family]:
        yield from self._families(self.enrollment)

    @staticmethod
    def _families(enrollment: Enrollment | None) -> Iterator[Family]:
        requests = CounterFamily(
            "kipsec_identity_requests",
            "Certificate requests to the operator by result (issued, or the refusal code)",
            labels=["result"],
        )
        identity = enrollment.identity if enrollment is not None else None
        waiting = GaugeFamily(
            "kipsec_identity_waiting",
            "1 while the sidecar waits for its first certificate (IKE not started)",
        )
        not_after = GaugeFamily(
            "kipsec_identity_certificate_not_after_seconds",
            "When the pod's certificate expires (Unix time)",
        )
        renewal = GaugeFamily(
            "kipsec_identity_certificate_renewal_seconds",
            "When the pod's certificate is renewed (Unix time)",
        )
        if enrollment is not None:
            for result, count in sorted(enrollment.results.items()):
                requests.add_metric([result], count)
            waiting.add_metric([], 1.0 if identity is None else 0.0)
        if identity is not None:
            not_after.add_metric([], identity.not_after.timestamp())
            renewal.add_metric([], identity.renewal_time.timestamp())
        yield requests
        yield waiting
        if enrollment is None or identity is not None:
            yield not_after
            yield renewal


__all__ = [
    "CHECK_INTERVAL",
    "DEFAULT_TOKEN_FILE",
    "ENV_IDENTITY_DIR",
    "ENV_OPERATOR_CA_FILE",
    "ENV_OPERATOR_URL",
    "ENV_TOKEN_FILE",
    "OPERATOR_CA_FILE",
    "Enrollment",
    "EnrollmentCollector",
    "EnrollmentSettings",
    "request_identity",
    "settings_from",
    "utc_now",
    "verify_issued",
]
