"""Throwaway PKIs for tests: root and intermediate CAs and end-entity certificates.

Everything is built in memory with cryptography's builders, with the validity, names
and extensions a test chooses, so each certificate-related test states the one thing
it varies::

    root = CertificateAuthority.root("kipsec test root")
    inter = root.intermediate("kipsec test intermediate")
    leaf = inter.issue("pod-a", dns=["pod-a.example"], ips=["10.0.0.1"])
    validate_chain(leaf.cert, [inter.cert], [root.cert], NOW)

Keys are generated once per (kind, slot) and cached for the session: RSA and DSA key
generation dominates the cost of a PKI, and tests that need two different keys of the
same kind ask for different slots.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Literal, overload

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

KeyKind = Literal["rsa", "rsa3072", "ec256", "ec384", "ec521", "ed25519", "ed448", "dsa", "dsa1024"]
"""Key types a test can ask for. ``dsa`` is 2048-bit (q = 256 bits); ``dsa1024`` has
q = 160 bits, the size RFC 7296's DSS method (3) was written for."""

PrivateKey = (
    rsa.RSAPrivateKey
    | dsa.DSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
"""The fixed 'current time' of the test PKIs: every default validity window contains it."""

DEFAULT_NOT_BEFORE = NOW - timedelta(days=30)
DEFAULT_NOT_AFTER = NOW + timedelta(days=365)


@cache
def _make_key(kind: KeyKind, slot: int) -> PrivateKey:
    match kind:
        case "rsa":
            return rsa.generate_private_key(65537, 2048)
        case "rsa3072":
            return rsa.generate_private_key(65537, 3072)
        case "ec256":
            return ec.generate_private_key(ec.SECP256R1())
        case "ec384":
            return ec.generate_private_key(ec.SECP384R1())
        case "ec521":
            return ec.generate_private_key(ec.SECP521R1())
        case "ed25519":
            return ed25519.Ed25519PrivateKey.generate()
        case "ed448":
            return ed448.Ed448PrivateKey.generate()
        case "dsa":
            return dsa.generate_private_key(2048)
        case "dsa1024":
            return dsa.generate_private_key(1024)
    raise ValueError(f"unknown key kind {kind!r}")


@overload
def make_key(kind: Literal["rsa", "rsa3072"], slot: int = 0) -> rsa.RSAPrivateKey: ...
@overload
def make_key(
    kind: Literal["ec256", "ec384", "ec521"], slot: int = 0
) -> ec.EllipticCurvePrivateKey: ...
@overload
def make_key(kind: Literal["ed25519"], slot: int = 0) -> ed25519.Ed25519PrivateKey: ...
@overload
def make_key(kind: Literal["ed448"], slot: int = 0) -> ed448.Ed448PrivateKey: ...
@overload
def make_key(kind: Literal["dsa", "dsa1024"], slot: int = 0) -> dsa.DSAPrivateKey: ...
@overload
def make_key(kind: KeyKind, slot: int = 0) -> PrivateKey: ...
def make_key(kind: KeyKind, slot: int = 0) -> PrivateKey:
    """A private key of ``kind``; the same (kind, slot) always returns the same key."""
    return _make_key(kind, slot)


def name(common_name: str, **attributes: str) -> x509.Name:
    """A subject DN: CN plus optional O / OU / C / L / ST given by keyword."""
    oids = {
        "O": NameOID.ORGANIZATION_NAME,
        "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "C": NameOID.COUNTRY_NAME,
        "L": NameOID.LOCALITY_NAME,
        "ST": NameOID.STATE_OR_PROVINCE_NAME,
    }
    parts = [x509.NameAttribute(oids[key], value) for key, value in attributes.items()]
    return x509.Name([*parts, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _signature_hash(key: PrivateKey) -> hashes.SHA256 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA that can issue intermediates and end-entity certificates.

    ``pss`` makes an RSA CA sign with RSASSA-PSS (SHA-256, salt 32) instead of
    PKCS#1 v1.5.
    """

    cert: x509.Certificate
    key: PrivateKey
    pss: bool = False
    _serial: list[int] = field(default_factory=lambda: [1000], repr=False)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)

    @property
    def subject(self) -> x509.Name:
        return self.cert.subject

    @classmethod
    def root(
        cls,
        common_name: str = "kipsec test root",
        *,
        key_kind: KeyKind = "ec256",
        key_slot: int = 0,
        subject: x509.Name | None = None,
        not_before: datetime = DEFAULT_NOT_BEFORE,
        not_after: datetime = DEFAULT_NOT_AFTER,
        path_length: int | None = None,
        pss: bool = False,
    ) -> CertificateAuthority:
        """A self-signed root CA (basicConstraints CA, keyUsage keyCertSign + cRLSign)."""
        key = make_key(key_kind, key_slot)
        subject = subject or name(common_name, O="kipsec tests")
        builder = _base_builder(subject, subject, key, 1, not_before, not_after)
        builder = _ca_extensions(builder, ca=True, key_cert_sign=True, path_length=path_length)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        cert = _sign(builder, key, pss)
        return cls(cert, key, pss)

    def _next_serial(self) -> int:
        self._serial[0] += 1
        return self._serial[0]

    def intermediate(
        self,
        common_name: str = "kipsec test intermediate",
        *,
        key_kind: KeyKind = "ec256",
        key_slot: int = 1,
        subject: x509.Name | None = None,
        not_before: datetime = DEFAULT_NOT_BEFORE,
        not_after: datetime = DEFAULT_NOT_AFTER,
        ca: bool = True,
        key_cert_sign: bool = True,
        basic_constraints: bool = True,
        path_length: int | None = None,
        pss: bool = False,
    ) -> CertificateAuthority:
        """An intermediate CA signed by this one.

        ``ca=False`` / ``key_cert_sign=False`` / ``basic_constraints=False`` build the
        broken intermediates that validation must refuse.
        """
        key = make_key(key_kind, key_slot)
        subject = subject or name(common_name, O="kipsec tests")
        builder = _base_builder(
            subject, self.cert.subject, key, self._next_serial(), not_before, not_after
        )
        if basic_constraints:
            builder = _ca_extensions(
                builder, ca=ca, key_cert_sign=key_cert_sign, path_length=path_length
            )
        builder = _key_ids(builder, key, self.key)
        cert = _sign(builder, self.key, self.pss)
        return CertificateAuthority(cert, key, pss)

    def issue(
        self,
        common_name: str = "kipsec test peer",
        *,
        key_kind: KeyKind = "ec256",
        key_slot: int = 2,
        subject: x509.Name | None = None,
        dns: tuple[str, ...] | list[str] = (),
        emails: tuple[str, ...] | list[str] = (),
        ips: tuple[str, ...] | list[str] = (),
        uris: tuple[str, ...] | list[str] = (),
        not_before: datetime = DEFAULT_NOT_BEFORE,
        not_after: datetime = DEFAULT_NOT_AFTER,
        key_usage: x509.KeyUsage | None = None,
        extra_extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (),
    ) -> Issued:
        """An end-entity certificate signed by this CA.

        ``key_usage`` defaults to digitalSignature only (critical); SANs are added only
        when some are given. ``extra_extensions`` are (extension, critical) pairs.
        """
        key = make_key(key_kind, key_slot)
        subject = subject or name(common_name, O="kipsec tests")
        builder = _base_builder(
            subject, self.cert.subject, key, self._next_serial(), not_before, not_after
        )
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        builder = builder.add_extension(key_usage or _signing_usage(), critical=True)
        names: list[x509.GeneralName] = [
            *(x509.DNSName(d) for d in dns),
            *(x509.RFC822Name(e) for e in emails),
            *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips),
            *(x509.UniformResourceIdentifier(u) for u in uris),
        ]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = _key_ids(builder, key, self.key)
        for extension, critical in extra_extensions:
            builder = builder.add_extension(extension, critical=critical)
        return Issued(_sign(builder, self.key, self.pss), key)


def _base_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: PrivateKey,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def _signing_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_extensions(
    builder: x509.CertificateBuilder, *, ca: bool, key_cert_sign: bool, path_length: int | None
) -> x509.CertificateBuilder:
    builder = builder.add_extension(
        x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
    )
    return builder.add_extension(
        x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=key_cert_sign,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )


def _key_ids(
    builder: x509.CertificateBuilder, key: PrivateKey, issuer_key: PrivateKey
) -> x509.CertificateBuilder:
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    )
    return builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
        critical=False,
    )


def _sign(builder: x509.CertificateBuilder, key: PrivateKey, pss: bool) -> x509.Certificate:
    if pss and isinstance(key, rsa.RSAPrivateKey):
        return builder.sign(
            key,
            hashes.SHA256(),
            rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), 32),
        )
    return builder.sign(key, _signature_hash(key))


def self_signed(
    common_name: str = "kipsec pinned peer",
    *,
    key_kind: KeyKind = "ec256",
    key_slot: int = 3,
    dns: tuple[str, ...] = (),
    not_before: datetime = DEFAULT_NOT_BEFORE,
    not_after: datetime = DEFAULT_NOT_AFTER,
) -> Issued:
    """A self-signed end-entity certificate (no CA bit), for pinning tests."""
    key = make_key(key_kind, key_slot)
    subject = name(common_name, O="kipsec tests")
    builder = _base_builder(subject, subject, key, 7, not_before, not_after)
    builder = builder.add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False
        )
    return Issued(_sign(builder, key, False), key)


def tamper_signature(cert: x509.Certificate) -> x509.Certificate:
    """The same certificate with one bit of its signature flipped.

    The signature BIT STRING is the last element of the DER certificate, so flipping
    the last byte changes the signature without touching the parsed fields.
    """
    der = bytearray(cert.public_bytes(Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_certificate(bytes(der))
