"""Signing a pod's certificate with the CA.

The profile, and why:

* subject and SANs come from :class:`~.identity.PodIdentity`, never from the CSR (the
  CSR contributes only its public key, after ``csr.py`` checked its SANs);
* keyUsage digitalSignature, critical: IKE_AUTH signs with the key (RFC 4945 5.1.3.2;
  the sidecar's ``validate_chain`` refuses a leaf whose keyUsage does not allow it);
* no extendedKeyUsage: RFC 4945 5.1.3.12 says IKE must not require one, and adding
  serverAuth/clientAuth would make the certificate usable for TLS, which it is not for;
* basicConstraints CA=false, critical; subjectKeyIdentifier and authorityKeyIdentifier
  so a peer holding several CA generations finds the issuer quickly;
* notBefore ``now - CLOCK_SKEW``; notAfter ``now + duration`` but never after the CA's
  own notAfter (a leaf cannot outlive its issuer: the chain would fail from then on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .ca import CLOCK_SKEW, CertificateAuthority, Rng, random_serial
from .identity import PodIdentity
from .keys import PublicKey, signature_hash
from .rotation import renewal_time

DEFAULT_DURATION = timedelta(hours=24)
DEFAULT_RENEW_BEFORE = timedelta(hours=8)
MIN_DURATION = timedelta(hours=1)


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed leaf and the times the status reports (``notAfter``, ``renewalTime``)."""

    cert: x509.Certificate
    not_after: datetime
    renewal_time: datetime

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def issue_certificate(
    public_key: PublicKey,
    identity: PodIdentity,
    ca: CertificateAuthority,
    now: datetime,
    rng: Rng,
    duration: timedelta = DEFAULT_DURATION,
    renew_before: timedelta = DEFAULT_RENEW_BEFORE,
) -> IssuedCertificate:
    """Sign ``public_key`` for ``identity``; see the module docstring for the profile."""
    if now.tzinfo is None:
        raise ValueError("issue_certificate needs a timezone-aware 'now'")
    not_after = min(now + duration, ca.not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(identity.subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(random_serial(rng))
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(identity.subject_alternative_names(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    cert = builder.sign(ca.key, signature_hash(ca.key))
    return IssuedCertificate(
        cert=cert,
        not_after=cert.not_valid_after_utc,
        renewal_time=renewal_time(
            cert.not_valid_before_utc, cert.not_valid_after_utc, renew_before
        ),
    )
