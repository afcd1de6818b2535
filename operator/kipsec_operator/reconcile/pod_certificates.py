"""Pods' own certificates, as the operator hands them to their peers (IKEv1 public-key
encryption, where each side must know the other's RSA key before the exchange).

Where they come from: the replica that signs a pod's CSR writes the certificate
(public, never a key: the key stays in the pod) into that pod's configuration Secret
under :data:`~.render.POD_CERTIFICATE_KEY`, so every replica, and the leader after a
restart, reads it from the Secret it already watches; the rendering carries it forward.
A value found there is used only when it is what the operator would have issued to
that pod: an X.509 certificate naming the pod's address among its IP SANs, signed by a
CA of the Tunnel's trust bundle, with an RSA key (anyone who can edit Secrets in the
namespace could otherwise plant a key of theirs for a peer to encrypt to).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa


def _certificate(value: str) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, TypeError):
        return None


def _names(certificate: x509.Certificate, address: str) -> bool:
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return ipaddress.ip_address(address) in sans.get_values_for_type(x509.IPAddress)


@lru_cache(maxsize=16384)
def names_pod(value: str, address: str) -> bool:
    """Whether `value` (a Secret value: base64 PEM) is a certificate naming `address`
    (the pod's primary IP): a pod's Secret keeps it only while it does."""
    certificate = _certificate(value)
    return certificate is not None and _names(certificate, address)


@lru_cache(maxsize=16384)
def peer_certificate(value: str, address: str, bundle: str) -> bool:
    """Whether `value` (base64 PEM) may be given to a pod as the certificate of the
    peer at `address`: it names that address, has an RSA key and is signed by a CA of
    `bundle` (PEM, the TunnelCertificate's trust bundle)."""
    certificate = _certificate(value)
    if certificate is None or not _names(certificate, address):
        return False
    if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
        return False
    try:
        authorities = x509.load_pem_x509_certificates(bundle.encode())
    except ValueError:
        return False
    for authority in authorities:
        try:
            certificate.verify_directly_issued_by(authority)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


__all__ = ["names_pod", "peer_certificate"]
