"""The lab's own CA and the operator's serving certificate (webhook, CSR endpoint).

In a cluster the chart (or cert-manager) issues the webhook's certificate; in the lab,
``kipsec lab up`` does: a throwaway ECDSA CA that lives as long as the lab, trusted by
the lab API server (admission calls) and by the pods (the sidecar's CSR calls).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALIDITY = datetime.timedelta(days=30)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_ca(subject: x509.Name) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed ECDSA CA valid for :data:`VALIDITY` (5 minutes of clock skew allowed)."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def new_leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    names: Sequence[x509.GeneralName],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An ECDSA end-entity certificate from ``ca`` for ``names`` (subjectAltName)."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """``key`` as unencrypted PKCS#8 PEM, mode 0600 before any byte is written."""
    path.touch(mode=0o600)
    path.write_bytes(_pem_key(key))


def issue_serving(
    directory: Path, dns_names: Sequence[str], addresses: Sequence[str]
) -> tuple[Path, Path, Path]:
    """Write ``ca.crt``, ``tls.crt`` and ``tls.key`` (0600) into ``directory``: a new CA
    and a serving certificate for ``dns_names`` and ``addresses``. Returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = new_ca(_name("kipsec lab CA"))
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    subject = _name(dns_names[0] if dns_names else "kipsec-operator")
    cert, key = new_leaf(ca, ca_key, subject, names)
    ca_file, cert_file, key_file = (
        directory / "ca.crt",
        directory / "tls.crt",
        directory / "tls.key",
    )
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(key_file, key)
    return ca_file, cert_file, key_file


__all__ = ["issue_serving", "new_ca", "new_leaf", "write_key"]
