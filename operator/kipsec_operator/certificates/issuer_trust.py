"""The trust bundle of a TunnelCertificate whose CA comes from the user's Secret.

The operator's own CA rotates with an overlap (:mod:`.rotation`: the new CA is trusted
before it signs, the old one until its certificates are gone). A CA in a user's Secret
(``spec.issuer.type: CASecret``, e.g. written by cert-manager) is replaced whenever the
user replaces it; trusting only the Secret's ``tls.crt`` then rejected every pod still
holding a certificate of the old CA until it renewed. So the operator remembers: when
the CA in the Secret differs from the one it last published, the old one stays in the
bundle for ``spec.duration`` more — the longest a certificate it signed can live — and
the pods' trust bundles carry both meanwhile.

The memory is the TunnelCertificate's status (``issuerCA``, ``retiredIssuerCAs``: public
certificates and an end time), so it survives operator restarts and leader changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

MAX_RETIRED = 4
"""Retired CAs kept at most (the oldest go first): rotations faster than spec.duration."""


@dataclass(frozen=True)
class IssuerTrust:
    """What to publish: the bundle (the Secret's CA, then the retired ones still trusted)
    and the status fields that remember it."""

    bundle: bytes
    status: dict[str, Any]


def issuer_trust(
    current: bytes, status: Mapping[str, Any], now: datetime, overlap: timedelta
) -> IssuerTrust:
    """The bundle for the CA PEM ``current`` given the last ``status`` written.

    A retired CA is kept until its ``until`` (``now`` + ``overlap`` when it was
    replaced); one that comes back into the Secret is current again, not retired.
    Malformed status entries are dropped rather than trusted.
    """
    text = current.decode("ascii").strip()
    retired: list[dict[str, str]] = []
    for entry in status.get("retiredIssuerCAs") or []:
        if not isinstance(entry, Mapping):
            continue
        pem, until = entry.get("certificate"), entry.get("until")
        if not isinstance(pem, str) or not isinstance(until, str) or pem.strip() == text:
            continue
        try:
            if datetime.fromisoformat(until) <= now:
                continue
        except ValueError:
            continue
        retired.append({"certificate": pem.strip(), "until": until})
    previous = status.get("issuerCA")
    old = previous.strip() if isinstance(previous, str) else ""
    if old and old != text and all(r["certificate"] != old for r in retired):
        retired.append({"certificate": old, "until": (now + overlap).isoformat()})
    retired = retired[-MAX_RETIRED:]
    bundle = "\n".join([text, *(r["certificate"] for r in retired)]) + "\n"
    return IssuerTrust(bundle.encode("ascii"), {"issuerCA": text, "retiredIssuerCAs": retired})


__all__ = ["MAX_RETIRED", "IssuerTrust", "issuer_trust"]
