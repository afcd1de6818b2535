"""When the CA that signs a TunnelCertificate's pods nears its end: the `CertificateExpiring`
warning.

Issuing caps a pod certificate's `notAfter` at its CA's (:mod:`.issue`), so once the CA
expires within one `spec.duration`, every certificate issued is cut short, pods renew
ever more often, and at the CA's `notAfter` every pod of the TunnelCertificate loses its
identity at once. The operator rotates its own CA well before that (:mod:`.rotation`),
so this fires for it only when rotation is broken; a CA from a `CASecret` issuer is the
user's to replace, and this is the warning that it is time.

What the operator does not judge here: whether each pod renewed its own certificate.
Both replicas serve the CSR endpoint and each remembers only what it signed, so the
leader's record of a pod's renewal can be missing while the pod is fine; a warning from
it would be false about half the time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from . import terms as terms_module
from .terms import CertificateTerms


def ca_expiring(ca_not_after: datetime, terms: CertificateTerms, now: datetime) -> str | None:
    """The warning message when the CA expires within `terms.duration` of `now`, else None.

    The message names the issuer (the Secret, or the operator's CA) and the CA's
    `notAfter`; it is the same on every call for one CA, so a caller can post it once.
    """
    if ca_not_after - now > terms.duration:
        return None
    issuer = (
        f"issuer CA in Secret {terms.namespace}/{terms.issuer_secret}"
        if terms.issuer_secret is not None
        else "the operator's CA"
    )
    if ca_not_after <= now:
        return (
            f"{issuer} expired at {ca_not_after.isoformat()}: no pod certificate it signed "
            "is valid; replace the CA"
        )
    return (
        f"{issuer} expires at {ca_not_after.isoformat()}, within spec.duration: pod "
        "certificates are cut short to it and every pod loses its identity then; "
        "replace the CA before"
    )


def ca_unusable(ca_not_after: datetime, now: datetime, issuer: str) -> str | None:
    """Why the CA cannot sign now, or None: it has expired, or expires within the
    shortest renewal interval (a certificate cut short to it would have to be renewed
    almost at once, and pods would ask again and again). ``issuer`` names it (the
    Secret); the CSR endpoint refuses with this (``ca-unavailable``) and the
    TunnelCertificate is ``IssuerUnavailable`` with it."""
    left = ca_not_after - now
    if left <= timedelta(0):
        return f"{issuer}: the CA expired at {ca_not_after.isoformat()}; replace it"
    if left < terms_module.LIFETIME_BOUNDS.min_renewal_interval:
        return (
            f"{issuer}: the CA expires at {ca_not_after.isoformat()}, too soon to sign "
            "a certificate that lasts until its renewal; replace it"
        )
    return None


__all__ = ["ca_expiring", "ca_unusable"]
