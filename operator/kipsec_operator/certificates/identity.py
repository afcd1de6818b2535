"""The identity the operator assigns a pod: one SPIFFE-style URI plus the pod's IPs.

``spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`` names the workload (every
pod of a service account shares it), the iPAddress SANs name this pod. The subject DN
repeats the workload (``O=<trustDomain>, OU=<namespace>, CN=<serviceAccount>``) because
kipsec's IKE sends the subject DN as its identity (ID_DER_ASN1_DN, RFC 4945 3.1.5) and
matches peers by DN or by IP address: ``identity_matches`` in the sidecar does not match
URI SANs, so the URI is for people and for other tools, the DN and IPs for IKE.

The sidecar builds the same names on its side (``kipsec_sidecar.identity``) without
importing this module; a unit test keeps the two in step.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_TRUST_DOMAIN = "cluster.local"

_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,253}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class IdentityError(ValueError):
    """A name cannot be part of a pod identity; the message names the field."""


@dataclass(frozen=True)
class PodIdentity:
    """What a pod's certificate must say: the workload URI and the pod's addresses."""

    trust_domain: str
    namespace: str
    service_account: str
    addresses: tuple[IpAddress, ...]

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise IdentityError(f"trustDomain {self.trust_domain!r} is not a SPIFFE trust domain")
        if not _DNS_LABEL.match(self.namespace):
            raise IdentityError(f"namespace {self.namespace!r} is not a DNS label")
        if not _DNS_SUBDOMAIN.match(self.service_account):
            raise IdentityError(f"serviceAccount {self.service_account!r} is not a DNS name")

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def subject(self) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, self.namespace),
                x509.NameAttribute(NameOID.COMMON_NAME, self.service_account),
            ]
        )

    def subject_alternative_names(self) -> x509.SubjectAlternativeName:
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(self.uri)]
        names += [x509.IPAddress(a) for a in self.addresses]
        return x509.SubjectAlternativeName(names)

    def san_set(self) -> frozenset[tuple[str, str]]:
        """The SANs as comparable (kind, value) pairs; order and duplicates do not matter."""
        return frozenset({("uri", self.uri)} | {("ip", str(a)) for a in self.addresses})


def san_set_of(san: x509.SubjectAlternativeName) -> frozenset[tuple[str, str]]:
    """A certificate's or CSR's SANs as (kind, value) pairs; unknown kinds keep their type.

    Keeping unknown kinds (dNSName, rfc822Name, otherName …) in the set makes any extra
    name a mismatch rather than something silently dropped.
    """
    pairs: set[tuple[str, str]] = set()
    for name in san:
        if isinstance(name, x509.UniformResourceIdentifier):
            pairs.add(("uri", name.value))
        elif isinstance(name, x509.IPAddress):
            pairs.add(("ip", str(name.value)))
        else:
            pairs.add((type(name).__name__, repr(name.value)))
    return frozenset(pairs)
