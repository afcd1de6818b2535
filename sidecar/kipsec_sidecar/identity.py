"""The sidecar's side of pod identities: its own key, the CSR, the operator's answer.

The private key is generated here, in the pod, and never leaves it: only the CSR (the
public key and the names asked for) goes to the operator, with the pod's projected
ServiceAccount token (audience ``kipsec``) as proof of who asks. The operator answers
with the signed certificate, the CA trust bundle and the time to renew (see
docs/identities.md for the whole exchange).

The names asked for must be exactly those the operator assigns, or it refuses:
``spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`` and, unless the
TunnelCertificate turns it off, every pod IP. The sidecar does not guess them: it first
asks ``GET /v1/identity`` (same token), which answers the URI, the IPs and the key
algorithm the TunnelCertificate demands (:meth:`IdentityRequest.from_offer`). The
sidecar never imports the operator; a unit test keeps the two ends in step.

Pure parts (key, CSR, response parsing, renewal timing) take no clock and do no I/O;
:func:`submit_csr` is the one function that talks HTTP and :func:`store_identity`
the one that writes files.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .atomic_files import publish_files
from .regular_files import read_regular_file, why_unreadable

if TYPE_CHECKING:
    from cryptography import x509

KeyAlgorithm = Literal["ECDSA", "RSA", "Ed25519"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CSR_PATH = "/v1/csr"
IDENTITY_PATH = "/v1/identity"
TOKEN_AUDIENCE = "kipsec"  # noqa: S105 (an audience name, not a secret)
MAX_RESPONSE_SIZE = 256 * 1024


class IdentityRequestError(Exception):
    """The operator refused the CSR or answered nonsense; ``code`` is its machine reason."""

    def __init__(self, code: str, reason: str, retryable: bool = False) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.retryable = retryable


def generate_key(algorithm: KeyAlgorithm = "ECDSA", size: int | None = None) -> PrivateKey:
    """A new private key: ECDSA P-256 (default) or P-384, RSA 2048-4096, or Ed25519."""
    if algorithm == "ECDSA":
        curves: dict[int, ec.EllipticCurve] = {256: ec.SECP256R1(), 384: ec.SECP384R1()}
        if (size or 256) not in curves:
            raise ValueError(f"ECDSA size {size}: use 256 or 384")
        return ec.generate_private_key(curves[size or 256])
    if algorithm == "RSA":
        bits = size or 2048
        if not 2048 <= bits <= 4096:
            raise ValueError(f"RSA size {bits}: use 2048 to 4096")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if algorithm == "Ed25519":
        if size is not None:
            raise ValueError("Ed25519 has no size")
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"algorithm {algorithm!r}: use ECDSA, RSA or Ed25519")


def spiffe_uri(trust_domain: str, namespace: str, service_account: str) -> str:
    """The workload URI the operator assigns (must equal the operator's, see module doc)."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class IdentityRequest:
    """What the sidecar asks for; filled from the downward API and the configuration."""

    trust_domain: str
    namespace: str
    service_account: str
    pod_ips: tuple[IpAddress, ...]

    @classmethod
    def from_strings(
        cls, trust_domain: str, namespace: str, service_account: str, pod_ips: Sequence[str]
    ) -> IdentityRequest:
        """From downward-API values (``status.podIPs`` as strings); raises ValueError."""
        return cls(
            trust_domain,
            namespace,
            service_account,
            tuple(ipaddress.ip_address(ip.strip()) for ip in pod_ips if ip.strip()),
        )

    @property
    def uri(self) -> str:
        return spiffe_uri(self.trust_domain, self.namespace, self.service_account)


@dataclass(frozen=True)
class IdentityOffer:
    """The operator's ``GET /v1/identity`` answer: the names and the key to use."""

    uri: str
    ips: tuple[IpAddress, ...]
    algorithm: KeyAlgorithm
    size: int | None

    def generate_key(self) -> PrivateKey:
        return generate_key(self.algorithm, self.size)

    def build_csr(self, key: PrivateKey) -> bytes:
        return _csr(key, self.uri, self.ips)


def parse_offer(body: bytes) -> IdentityOffer:
    """Parse ``GET /v1/identity``; IdentityRequestError('bad-response', …) otherwise."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise IdentityRequestError("bad-response", "not JSON") from None
    if not isinstance(doc, dict):
        raise IdentityRequestError("bad-response", "not a JSON object")
    uri, ips, key = doc.get("uri"), doc.get("ips"), doc.get("privateKey")
    if not isinstance(uri, str) or not uri.startswith("spiffe://"):
        raise IdentityRequestError("bad-response", "uri: not a spiffe:// URI")
    if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
        raise IdentityRequestError("bad-response", "ips: not a list of addresses")
    if not isinstance(key, dict) or key.get("algorithm") not in ("ECDSA", "RSA", "Ed25519"):
        raise IdentityRequestError("bad-response", "privateKey.algorithm: unknown")
    size = key.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise IdentityRequestError("bad-response", "privateKey.size: not an integer")
    try:
        addresses = tuple(ipaddress.ip_address(ip) for ip in ips)
    except ValueError:
        raise IdentityRequestError("bad-response", "ips: not IP addresses") from None
    return IdentityOffer(uri, addresses, key["algorithm"], size)


def build_csr(key: PrivateKey, request: IdentityRequest) -> bytes:
    """A PEM CSR signed by ``key`` asking for exactly the URI and IP SANs of ``request``.

    The subject is left empty: the operator sets it. SHA-256 signature (none for Ed25519).
    """
    return _csr(key, request.uri, request.pod_ips)


def _csr(key: PrivateKey, uri: str, ips: Sequence[IpAddress]) -> bytes:
    # cryptography.x509 (~2 MiB) is imported where used: a sidecar that enrolls no
    # certificate (and does not verify any) never loads it.
    from cryptography import x509

    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    names += [x509.IPAddress(ip) for ip in ips]
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, algorithm)
    )
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class IssuedIdentity:
    """The operator's answer: our certificate, the CAs to trust, when to renew."""

    certificate_pem: bytes
    ca_bundle_pem: bytes
    not_after: datetime
    renewal_time: datetime

    @property
    def certificate(self) -> x509.Certificate:
        from cryptography import x509

        return x509.load_pem_x509_certificate(self.certificate_pem)


def _timestamp(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise IdentityRequestError("bad-response", f"{field}: missing")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise IdentityRequestError("bad-response", f"{field}: not a timestamp") from None
    if parsed.tzinfo is None:
        raise IdentityRequestError("bad-response", f"{field}: timestamp without timezone")
    return parsed


def parse_response(body: bytes, key: PrivateKey) -> IssuedIdentity:
    """Check and parse a 200 answer; the certificate must carry our public key.

    Raises IdentityRequestError('bad-response', …) for anything else, so a confused
    operator cannot make the sidecar install a certificate it cannot use.
    """
    try:
        doc = json.loads(body)
    except ValueError:
        raise IdentityRequestError("bad-response", "not JSON") from None
    if not isinstance(doc, dict):
        raise IdentityRequestError("bad-response", "not a JSON object")
    cert_pem, bundle_pem = doc.get("certificate"), doc.get("caBundle")
    if not isinstance(cert_pem, str) or not isinstance(bundle_pem, str):
        raise IdentityRequestError("bad-response", "certificate or caBundle missing")
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        x509.load_pem_x509_certificates(bundle_pem.encode())
    except ValueError:
        raise IdentityRequestError("bad-response", "certificate or caBundle is not PEM") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise IdentityRequestError("bad-response", "the certificate is not for our key")
    return IssuedIdentity(
        certificate_pem=cert_pem.encode(),
        ca_bundle_pem=bundle_pem.encode(),
        not_after=_timestamp(doc.get("notAfter"), "notAfter"),
        renewal_time=_timestamp(doc.get("renewalTime"), "renewalTime"),
    )


def parse_refusal(status: int, body: bytes) -> IdentityRequestError:
    """The error for a non-200 answer (the operator's JSON, or the HTTP status alone)."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("reason"), str):
        return IdentityRequestError(
            str(doc.get("code") or f"http-{status}"),
            doc["reason"],
            bool(doc.get("retryable")) or status >= 500,
        )
    return IdentityRequestError(f"http-{status}", f"HTTP {status}", status >= 500 or status == 429)


def renewal_due(identity: IssuedIdentity, now: datetime) -> bool:
    """True from the operator's renewalTime on: make a new key and CSR then."""
    return now >= identity.renewal_time


def tls_context(ca_file: str | Path | None) -> ssl.SSLContext:
    """A client context trusting ``ca_file`` (PEM; None: the system's trust store).

    The bundle is read through :func:`~kipsec_sidecar.regular_files.read_regular_file`
    like every other certificate file, not by OpenSSL from the path. Raises OSError
    (also ``ssl.SSLError``: no certificate in it) or
    :class:`~kipsec_sidecar.regular_files.FileRefused`.
    """
    if ca_file is None:
        return ssl.create_default_context()
    pem = read_regular_file(ca_file).decode("ascii", "replace")
    return ssl.create_default_context(cadata=pem)


def _call(url: str, token: str, ca_file: Path | None, timeout: float, body: bytes | None) -> bytes:
    # Here, not at the top: urllib.request brings http.client and email (~2 MiB, 25
    # modules) into every sidecar, and only one that enrolls a certificate calls this.
    import urllib.error
    import urllib.request

    try:
        context = tls_context(ca_file)
    except (OSError, ValueError) as exc:
        raise IdentityRequestError(
            "operator-ca", f"cannot use {ca_file}: {why_unreadable(exc)}", retryable=True
        ) from None
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(  # noqa: S310 (the URL is the operator's, from config)
        url, data=body, headers=headers, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            return bytes(response.read(MAX_RESPONSE_SIZE))
    except urllib.error.HTTPError as exc:
        raise parse_refusal(exc.code, exc.read(MAX_RESPONSE_SIZE)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise IdentityRequestError("unreachable", str(exc), retryable=True) from None


def fetch_offer(
    base_url: str, token: str, ca_file: Path | None, timeout: float = 10.0
) -> IdentityOffer:
    """``GET <base_url>/v1/identity``: what this pod may ask for. Blocking."""
    return parse_offer(_call(base_url.rstrip("/") + IDENTITY_PATH, token, ca_file, timeout, None))


def submit_csr(
    base_url: str,
    csr_pem: bytes,
    token: str,
    ca_file: Path | None,
    key: PrivateKey,
    timeout: float = 10.0,
) -> IssuedIdentity:
    """``POST <base_url>/v1/csr`` and parse the answer. Blocking; run it in a thread.

    ``token`` is the projected ServiceAccount token (re-read from its file before each
    call: the kubelet rotates it). ``ca_file`` verifies the operator's serving
    certificate (None: the system CAs).
    """
    body = json.dumps({"csr": csr_pem.decode("ascii")}).encode()
    return parse_response(
        _call(base_url.rstrip("/") + CSR_PATH, token, ca_file, timeout, body), key
    )


_FILES = ("tls.key", "tls.crt", "ca.crt")


def store_identity(directory: Path, key: PrivateKey, identity: IssuedIdentity) -> None:
    """Write ``tls.key`` (0600), ``tls.crt`` and ``ca.crt`` into ``directory``, together.

    The kubelet's way for Secret volumes: the three files go into a fresh hidden
    directory, then one symlink (``..data``) is swapped atomically, and ``tls.key`` etc.
    are symlinks through it. A reader (the sidecar reloads on change) never sees a new
    certificate with an old key. The previous generation is removed afterwards.
    """
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    contents = dict(
        zip(_FILES, (key_pem, identity.certificate_pem, identity.ca_bundle_pem), strict=True)
    )
    publish_files(directory, contents, modes={"tls.crt": 0o644, "ca.crt": 0o644})
