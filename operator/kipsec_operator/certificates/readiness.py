"""A TunnelCertificate's `Ready` condition: what is true of its pods' certificates now.

Counting signed certificates alone once left `Ready=True AllPodsIssued` on a
TunnelCertificate whose CA Secret had been deleted, long after every certificate had
expired, with the real reason only in the sidecars' logs. So the condition is decided
here, from everything the operator knows, most fundamental first:

1. ``InvalidSpec``: the spec cannot be used (the message names the field);
2. ``IssuerUnavailable``: the issuer's CA cannot be loaded (the message names the
   Secret and what is wrong with it);
3. ``NoPodsSelected``;
4. ``IssuanceFailed``: a selected pod without a current certificate was refused its
   last request (the message names the pod and the refusal);
5. ``PodsPending``: some selected pods hold no current certificate yet;
6. ``AllPodsIssued``: every selected pod holds one that has not expired.

A certificate counts only until its ``notAfter``: an expired one is no identity.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from ..reconcile.cluster import ObjectKey

MAX_NAMED_PODS = 3
"""Refused pods named in the message at most (the rest are counted)."""


@dataclass(frozen=True)
class Readiness:
    """The `Ready` condition's status, reason and message."""

    ready: bool
    reason: str
    message: str


def readiness(
    selected: Collection[ObjectKey],
    issued: Mapping[ObjectKey, datetime],
    refused: Mapping[ObjectKey, str],
    now: datetime,
    *,
    invalid_spec: str | None = None,
    issuer_problem: str | None = None,
) -> Readiness:
    """Decide `Ready` (see the module docstring for the order).

    ``issued`` is each pod's last certificate's ``notAfter``; ``refused`` each pod's
    last refusal (secret-free text, as the CSR endpoint answers it); pods not in
    ``selected`` are ignored in both.
    """
    if invalid_spec is not None:
        return Readiness(False, "InvalidSpec", invalid_spec)
    if issuer_problem is not None:
        return Readiness(False, "IssuerUnavailable", issuer_problem)
    if not selected:
        return Readiness(False, "NoPodsSelected", "no pod matches spec.selector")
    current = {k for k in selected if k in issued and issued[k] > now}
    expired = sum(1 for k in selected if k in issued and issued[k] <= now)
    count = f"{len(current)} of {len(selected)} selected pods hold a current certificate"
    if expired:
        count += f" ({expired} expired)"
    failing = sorted(k for k in selected if k not in current and k in refused)
    if failing:
        named = "; ".join(
            f"pod {ns}/{name}: {refused[(ns, name)]}" for ns, name in failing[:MAX_NAMED_PODS]
        )
        more = (
            f"; and {len(failing) - MAX_NAMED_PODS} more" if len(failing) > MAX_NAMED_PODS else ""
        )
        return Readiness(False, "IssuanceFailed", f"{count}; refused: {named}{more}")
    if len(current) == len(selected):
        return Readiness(True, "AllPodsIssued", count)
    return Readiness(False, "PodsPending", count)


__all__ = ["MAX_NAMED_PODS", "Readiness", "readiness"]
