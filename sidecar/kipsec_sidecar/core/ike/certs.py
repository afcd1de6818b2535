"""X.509 certificates for IKEv2: loading, path validation and identity matching.

Why an own path builder instead of ``cryptography.x509.verification``: that verifier
implements the CA/Browser-Forum TLS profile (server or client), which requires TLS
extended key usages and a DNS/IP subject for servers, refuses DSA and SHA-1-free but
otherwise legitimate enterprise PKIs, and cannot be told to ignore EKU as RFC 4945
section 5.1.3.12 asks IKE implementations to. IKE needs a smaller set of checks, listed
in :func:`validate_chain`, and each failure must say which check failed
(:class:`~kipsec_sidecar.core.errors.CertificateError` ``reason``) so an operator can
act on it. Signatures are checked with cryptography's ``verify_directly_issued_by``
(RSA PKCS#1 v1.5 and PSS, ECDSA, Ed25519, Ed448, DSA).

Not implemented, on purpose or for now: revocation (CRL/OCSP), name constraints and
certificate policies. A certificate carrying any of them as a *critical* extension is
rejected rather than accepted unchecked.

No clock is read here: the caller passes ``now``.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as CryptoUnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtensionOID

from ..errors import CertificateError, LocalProtocolError
from .constants import IdType

MAX_CHAIN_DEPTH = 8
"""Most certificates in a path, end entity and trust anchor included."""

MAX_SIGNATURE_CHECKS = 64
"""Work bound of the path search: a peer sending many certificates with the same names
(cross-signed loops) cannot make the depth-first search verify signatures without end."""

MAX_CERTIFICATE_SIZE = 64 * 1024
"""A DER certificate larger than this is refused before parsing."""

_UNDERSTOOD_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.EXTENDED_KEY_USAGE,  # read and deliberately ignored (RFC 4945)
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)

_PARSE_ERRORS = (
    ValueError,
    TypeError,
    CryptoUnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
"""What cryptography raises for malformed certificate content (not all are ValueErrors)."""
_DER = Encoding.DER


def load_certificate(der: bytes) -> x509.Certificate:
    """Parse a DER certificate (the data of a CERT payload with encoding 4).

    The fields the rest of kipsec reads (names, validity, extensions, public key) are
    parsed here, eagerly, so a certificate that loads does not fail later on first
    use. Raises CertificateError('malformed', ...) for anything unparseable.
    """
    if len(der) > MAX_CERTIFICATE_SIZE:
        raise CertificateError("malformed", f"{len(der)} bytes is larger than any sane certificate")
    try:
        with warnings.catch_warnings():
            # Non-positive serials: cryptography warns today and will refuse them later.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(der)
            serial = cert.serial_number
        if serial <= 0:
            raise CertificateError("malformed", "serial number is not positive (RFC 5280)")
        cert.subject.public_bytes()
        cert.issuer.public_bytes()
        _ = cert.not_valid_before_utc, cert.not_valid_after_utc
        _ = list(cert.extensions)
        cert.public_key()
    except _PARSE_ERRORS as exc:
        raise CertificateError("malformed", str(exc) or type(exc).__name__) from exc
    return cert


def _describe(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string() or "<empty subject>"
    except _PARSE_ERRORS:
        return "<unprintable subject>"


def _extension(
    cert: x509.Certificate, ext_type: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return cert.extensions.get_extension_for_class(ext_type)
    except x509.ExtensionNotFound:
        return None
    except _PARSE_ERRORS as exc:
        raise CertificateError("malformed", f"{_describe(cert)}: {exc}") from exc


def _check_validity(cert: x509.Certificate, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateError(
            "not-yet-valid",
            f"{_describe(cert)} is valid from {cert.not_valid_before_utc.isoformat()}",
        )
    if now > cert.not_valid_after_utc:
        raise CertificateError(
            "expired", f"{_describe(cert)} expired at {cert.not_valid_after_utc.isoformat()}"
        )


def _check_critical_extensions(cert: x509.Certificate) -> None:
    try:
        extensions = list(cert.extensions)
    except _PARSE_ERRORS as exc:
        raise CertificateError("malformed", f"{_describe(cert)}: {exc}") from exc
    for ext in extensions:
        if ext.critical and ext.oid not in _UNDERSTOOD_EXTENSIONS:
            raise CertificateError(
                "untrusted",
                f"{_describe(cert)} has critical extension {ext.oid.dotted_string} "
                "that kipsec does not process",
            )


def _check_end_entity(cert: x509.Certificate) -> None:
    """RFC 4945 section 5.1.3.2: if keyUsage is present, it must allow signatures."""
    ext = _extension(cert, x509.KeyUsage)
    if ext is None:
        return
    usage = ext.value
    assert isinstance(usage, x509.KeyUsage)
    if not (usage.digital_signature or usage.content_commitment):
        raise CertificateError(
            "untrusted",
            f"{_describe(cert)} keyUsage allows neither digitalSignature nor nonRepudiation",
        )


def _check_issuer(issuer: x509.Certificate, cas_below: int) -> None:
    """An issuer must be a CA allowed to sign certificates, with room in its pathLen.

    ``cas_below`` counts the non-self-issued CA certificates between this issuer and
    the end entity (RFC 5280 section 4.2.1.9).
    """
    ext = _extension(issuer, x509.BasicConstraints)
    constraints = ext.value if ext is not None else None
    if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
        raise CertificateError("not-a-ca", f"{_describe(issuer)} is not a CA (basicConstraints)")
    usage_ext = _extension(issuer, x509.KeyUsage)
    if usage_ext is not None:
        usage = usage_ext.value
        assert isinstance(usage, x509.KeyUsage)
        if not usage.key_cert_sign:
            raise CertificateError(
                "not-a-ca", f"{_describe(issuer)} keyUsage does not include keyCertSign"
            )
    if constraints.path_length is not None and cas_below > constraints.path_length:
        raise CertificateError(
            "not-a-ca",
            f"{_describe(issuer)} allows {constraints.path_length} CA(s) below it, "
            f"the path has {cas_below}",
        )


def _check_signature(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature as exc:
        raise CertificateError(
            "bad-signature", f"{_describe(cert)} is not signed by {_describe(issuer)}"
        ) from exc
    except _PARSE_ERRORS as exc:
        raise CertificateError(
            "bad-signature", f"{_describe(cert)} / {_describe(issuer)}: {exc}"
        ) from exc


def _is_self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def validate_chain(
    end_entity: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_anchors: Sequence[x509.Certificate],
    now: datetime,
) -> None:
    """Check that a path leads from ``end_entity`` to one of ``trust_anchors``.

    ``intermediates`` are the peer's other CERT payloads, in any order, possibly with
    extras; the path is searched depth-first (at most :data:`MAX_CHAIN_DEPTH`
    certificates). ``now`` must be timezone-aware (UTC). On each path:

    * every certificate, the anchor included, is valid at ``now`` (``expired`` /
      ``not-yet-valid``);
    * each certificate's signature verifies with its issuer's key (``bad-signature``);
    * each issuer has basicConstraints CA=true, keyCertSign if keyUsage is present,
      and a pathLenConstraint that admits the CAs below it (``not-a-ca``);
    * the end entity's keyUsage, if present, allows signatures, and no certificate
      carries a critical extension kipsec does not process (``untrusted``);
    * a certificate that is itself a trust anchor ends the path (pinned self-signed
      certificates work).

    When no path exists, the error of the most promising one is raised, or
    ``untrusted`` when no issuer was found at all.
    """
    if now.tzinfo is None:
        raise LocalProtocolError("validate_chain needs a timezone-aware 'now'")
    anchors = list(trust_anchors)
    anchor_ders = {a.public_bytes(_DER) for a in anchors}
    _check_validity(end_entity, now)
    _check_critical_extensions(end_entity)
    _check_end_entity(end_entity)
    if end_entity.public_bytes(_DER) in anchor_ders:
        return
    _extend(end_entity, 0, list(intermediates), anchors, now, 1, [MAX_SIGNATURE_CHECKS])


def _spend(budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise CertificateError(
            "untrusted", f"no path found within {MAX_SIGNATURE_CHECKS} signature checks"
        )


def _extend(
    cert: x509.Certificate,
    cas_below: int,
    pool: list[x509.Certificate],
    anchors: list[x509.Certificate],
    now: datetime,
    depth: int,
    budget: list[int],
) -> None:
    """Find an issuer for ``cert``: an anchor ends the path, an intermediate recurses.

    ``budget`` is the shared count of signature checks left (see MAX_SIGNATURE_CHECKS).
    """
    errors: list[CertificateError] = []
    for anchor in anchors:
        if anchor.subject != cert.issuer:
            continue
        _spend(budget)
        try:
            _check_signature(cert, anchor)
            _check_issuer(anchor, cas_below)
            _check_validity(anchor, now)
            return
        except CertificateError as exc:
            errors.append(exc)
    if depth + 1 < MAX_CHAIN_DEPTH:
        for candidate in pool:
            if candidate.subject != cert.issuer or candidate is cert:
                continue
            _spend(budget)
            try:
                _check_signature(cert, candidate)
                _check_issuer(candidate, cas_below)
                _check_validity(candidate, now)
                _check_critical_extensions(candidate)
                rest = [c for c in pool if c is not candidate]
                below = cas_below if _is_self_issued(candidate) else cas_below + 1
                _extend(candidate, below, rest, anchors, now, depth + 1, budget)
                return
            except CertificateError as exc:
                errors.append(exc)
    elif any(c.subject == cert.issuer for c in pool):
        errors.append(
            CertificateError("untrusted", f"path longer than {MAX_CHAIN_DEPTH} certificates")
        )
    if errors:
        raise errors[0]
    raise CertificateError(
        "untrusted", f"no trusted issuer {cert.issuer.rfc4514_string()!r} for {_describe(cert)}"
    )


# --- identities --------------------------------------------------------------------


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        ext = _extension(cert, x509.SubjectAlternativeName)
    except CertificateError:
        return None
    if ext is None:
        return None
    value = ext.value
    return value if isinstance(value, x509.SubjectAlternativeName) else None


def _ascii(data: bytes) -> str | None:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() and text else None


def _fqdn_matches(cert: x509.Certificate, id_data: bytes) -> bool:
    name = _ascii(id_data)
    san = _san(cert)
    if name is None or san is None:
        return False
    wanted = name.rstrip(".").lower()
    return any(dns.rstrip(".").lower() == wanted for dns in san.get_values_for_type(x509.DNSName))


def _split_email(address: str) -> tuple[str, str] | None:
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        return None
    return local, domain.lower()


def _email_matches(cert: x509.Certificate, id_data: bytes) -> bool:
    text = _ascii(id_data)
    san = _san(cert)
    if text is None or san is None:
        return False
    wanted = _split_email(text)
    if wanted is None:
        return False
    # RFC 5280 section 7.5: the local part is case-sensitive, the domain is not.
    return any(_split_email(e) == wanted for e in san.get_values_for_type(x509.RFC822Name))


def _ip_matches(cert: x509.Certificate, id_data: bytes, length: int) -> bool:
    san = _san(cert)
    if len(id_data) != length or san is None:
        return False
    wanted = ipaddress.ip_address(id_data)
    return any(ip == wanted for ip in san.get_values_for_type(x509.IPAddress))


def _dn_matches(cert: x509.Certificate, id_data: bytes) -> bool:
    try:
        subject = cert.subject.public_bytes()
    except _PARSE_ERRORS:
        return False
    return subject == id_data


def identity_matches(cert: x509.Certificate, id_type: int, id_data: bytes) -> bool:
    """Does the peer's IDi/IDr (type, data) name the certificate it authenticated with?

    RFC 4945 section 3.1 and 5.1.3: ID_FQDN must equal a dNSName SAN (case-insensitive,
    no wildcards, no fallback to the subject CN); ID_RFC822_ADDR an rfc822Name SAN
    (domain case-insensitive); ID_IPV4_ADDR / ID_IPV6_ADDR an iPAddress SAN;
    ID_DER_ASN1_DN the subject DN, compared as DER bytes. Other ID types
    (ID_DER_ASN1_GN, ID_KEY_ID) never match a certificate: kipsec does not support
    them for certificate authentication. Never raises for any ``id_data``.
    """
    if id_type == IdType.ID_FQDN:
        return _fqdn_matches(cert, id_data)
    if id_type == IdType.ID_RFC822_ADDR:
        return _email_matches(cert, id_data)
    if id_type == IdType.ID_IPV4_ADDR:
        return _ip_matches(cert, id_data, 4)
    if id_type == IdType.ID_IPV6_ADDR:
        return _ip_matches(cert, id_data, 16)
    if id_type == IdType.ID_DER_ASN1_DN:
        return _dn_matches(cert, id_data)
    return False


def identity_for_certificate(cert: x509.Certificate) -> tuple[int, bytes]:
    """The identity kipsec sends with a certificate: (ID_DER_ASN1_DN, subject DER).

    The subject DN always exists and always matches (RFC 4945 section 3.1.5), whereas
    a SAN-based identity would need configuration to pick one of several names.
    """
    return IdType.ID_DER_ASN1_DN, cert.subject.public_bytes()
