"""The operator's own CA, kept in one Secret, and the trust bundle the sidecars read.

State of the CA, in the Secret's ``data`` (base64 as usual for Secrets):

* ``tls.crt`` / ``tls.key``: the CA that signs now (the kubernetes.io/tls layout, so
  tools that read TLS Secrets see the signing CA);
* ``pending.crt`` / ``pending.key``: during a rotation, the next CA, already trusted
  (it is in the bundle) but not yet signing, so every sidecar has it before the first
  leaf signed by it is presented;
* ``ca.crt``: the trust bundle, every CA a sidecar must trust: signing, pending and the
  retired CAs whose leaves may still be in use;
* ``rotation.json``: when the pending CA appeared and when each retired CA stopped
  signing (SHA-256 fingerprints to timestamps), which ``rotation.py`` needs to decide
  the next step. Nothing secret is in it.

The CA keys leave the operator only into this Secret. Only ``ca.crt`` is copied to the
sidecars (it is public). ECDSA P-256 by default (``KeySpec``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from .keys import KeySpec, SigningKey, signature_hash

Rng = Callable[[int], bytes]
"""``rng(n)`` returns n random bytes; ``os.urandom`` in production, seeded in tests."""

CA_SECRET_TYPE = "kipsec.io/ca"  # noqa: S105 (a Secret type, not a password)
DEFAULT_CA_NAME = "kipsec operator CA"
CLOCK_SKEW = timedelta(minutes=5)
"""Certificates are valid from ``now - CLOCK_SKEW`` so a peer whose clock runs a little
behind the operator's accepts them at once."""


class CaSecretError(ValueError):
    """The CA Secret cannot be read; the message names the data key."""


def random_serial(rng: Rng) -> int:
    """A positive 127-bit serial (RFC 5280: at most 20 octets, CA/B: 64 bits of entropy)."""
    value = int.from_bytes(rng(16), "big") & ((1 << 127) - 1)
    return value or 1


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate with its private key."""

    cert: x509.Certificate
    key: SigningKey

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def generate_ca(
    now: datetime,
    duration: timedelta,
    rng: Rng,
    key_spec: KeySpec | None = None,
    common_name: str = DEFAULT_CA_NAME,
) -> CertificateAuthority:
    """A new self-signed root CA valid for ``duration`` from ``now``.

    pathLen 0 (it signs leaves only), keyUsage keyCertSign + cRLSign, critical as RFC
    5280 asks. The serial is part of the subject's uniqueness: two generations of the
    CA have different serials but share the subject, so ``validate_chain`` tries each
    anchor with that subject and the signature picks the right one.
    """
    spec = key_spec or KeySpec()
    key = spec.generate()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kipsec"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(random_serial(rng))
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + duration)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, signature_hash(key))
    )
    return CertificateAuthority(cert, key)


@dataclass(frozen=True)
class RetiredCa:
    """A CA that no longer signs but stays trusted until its leaves have expired."""

    cert: x509.Certificate
    retired_at: datetime


@dataclass(frozen=True)
class CaState:
    """Everything the CA Secret holds, parsed."""

    signing: CertificateAuthority
    pending: CertificateAuthority | None = None
    pending_since: datetime | None = None
    retired: tuple[RetiredCa, ...] = field(default=())

    def bundle(self) -> list[x509.Certificate]:
        """The trust anchors a sidecar needs now: signing, pending, then retired CAs."""
        certs = [self.signing.cert]
        if self.pending is not None:
            certs.append(self.pending.cert)
        certs += [r.cert for r in self.retired]
        return certs

    def bundle_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.bundle())

    def with_pending(self, pending: CertificateAuthority, now: datetime) -> CaState:
        return replace(self, pending=pending, pending_since=now)

    def promoted(self, now: datetime) -> CaState:
        """The pending CA signs from ``now``; the old signing CA is retired at ``now``."""
        if self.pending is None:
            raise ValueError("no pending CA to promote")
        retired = (RetiredCa(self.signing.cert, now), *self.retired)
        return CaState(signing=self.pending, retired=retired)

    def without_retired(self, fingerprints: frozenset[str]) -> CaState:
        kept = tuple(r for r in self.retired if fingerprint(r.cert) not in fingerprints)
        return replace(self, retired=kept)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def to_secret_data(state: CaState) -> dict[str, str]:
    """The Secret ``data`` for ``state`` (values base64, as the API wants them)."""
    rotation: dict[str, object] = {
        "pendingSince": state.pending_since.isoformat() if state.pending_since else None,
        "retired": {fingerprint(r.cert): r.retired_at.isoformat() for r in state.retired},
    }
    data = {
        "tls.crt": _b64(state.signing.cert_pem()),
        "tls.key": _b64(state.signing.key_pem()),
        "ca.crt": _b64(state.bundle_pem()),
        "rotation.json": _b64(json.dumps(rotation, sort_keys=True).encode()),
    }
    if state.pending is not None:
        data["pending.crt"] = _b64(state.pending.cert_pem())
        data["pending.key"] = _b64(state.pending.key_pem())
    return data


def _decode(data: Mapping[str, object], key: str) -> bytes:
    value = data.get(key)
    if not isinstance(value, str):
        raise CaSecretError(f"data.{key}: missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CaSecretError(f"data.{key}: not base64") from exc


def _load_ca(data: Mapping[str, object], cert_key: str, key_key: str) -> CertificateAuthority:
    try:
        cert = x509.load_pem_x509_certificate(_decode(data, cert_key))
    except ValueError as exc:
        raise CaSecretError(f"data.{cert_key}: not a PEM certificate") from exc
    try:
        key = serialization.load_pem_private_key(_decode(data, key_key), password=None)
    except (ValueError, TypeError) as exc:
        # The key's bytes are never put in the message.
        raise CaSecretError(f"data.{key_key}: not an unencrypted PEM private key") from exc
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise CaSecretError(f"data.{key_key}: does not belong to data.{cert_key}")
    return CertificateAuthority(cert, key)  # type: ignore[arg-type]


def _time(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise CaSecretError(f"{where}: not a timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CaSecretError(f"{where}: not an ISO 8601 timestamp") from exc
    if parsed.tzinfo is None:
        raise CaSecretError(f"{where}: timestamp without a timezone")
    return parsed


def from_secret_data(data: Mapping[str, object]) -> CaState:
    """Parse a CA Secret's ``data``; raises CaSecretError naming the bad key."""
    signing = _load_ca(data, "tls.crt", "tls.key")
    pending = _load_ca(data, "pending.crt", "pending.key") if "pending.crt" in data else None
    try:
        rotation = json.loads(_decode(data, "rotation.json")) if "rotation.json" in data else {}
    except ValueError as exc:
        raise CaSecretError("data.rotation.json: not JSON") from exc
    if not isinstance(rotation, dict):
        raise CaSecretError("data.rotation.json: not a JSON object")
    since_raw = rotation.get("pendingSince")
    since = _time(since_raw, "data.rotation.json pendingSince") if since_raw else None
    if pending is not None and since is None:
        raise CaSecretError("data.rotation.json pendingSince: missing while pending.crt exists")
    retired_times = rotation.get("retired") or {}
    if not isinstance(retired_times, dict):
        raise CaSecretError("data.rotation.json retired: not a JSON object")
    try:
        bundle = x509.load_pem_x509_certificates(_decode(data, "ca.crt"))
    except ValueError as exc:
        raise CaSecretError("data.ca.crt: not PEM certificates") from exc
    active = {fingerprint(signing.cert)} | ({fingerprint(pending.cert)} if pending else set())
    retired = []
    for cert in bundle:
        fp = fingerprint(cert)
        if fp in active:
            continue
        if fp not in retired_times:
            raise CaSecretError(f"data.rotation.json retired: no entry for CA {fp[:16]}…")
        retired.append(RetiredCa(cert, _time(retired_times[fp], f"retired {fp[:16]}…")))
    return CaState(signing, pending, since if pending else None, tuple(retired))


def ca_secret(name: str, namespace: str, state: CaState) -> dict[str, object]:
    """The whole Secret object for the CA (type ``kipsec.io/ca``, not ``kubernetes.io/tls``:
    it holds more keys than a TLS Secret and must not be mistaken for a serving cert)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": CA_SECRET_TYPE,
        "data": to_secret_data(state),
    }
