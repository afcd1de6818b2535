"""An ExternalPeer's status from what the operator rendered and the sidecars report.

Ready means every pod configured towards the peer reports an established child SA with
it. Degraded means something needs a person: an invalid spec (the message names the
field, :mod:`.external`) or pods whose sidecar reports a failure towards the peer
(`podErrors`: per pod, one of the fixed, secret-free reasons of
:data:`kipsec_sidecar.handshake_failures.REASONS`, never a sidecar's free text).

Reasons: Ready `AllSasEstablished`, `SasPending`, `NotUsed`, `InvalidSpec`; Degraded
`AsExpected`, `InvalidSpec`, `SidecarError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .cluster import Cluster, K8sObject, ObjectKey, key_of
from .external import addresses_of, external_peer_name
from .render import Rendering
from .status import SidecarReport, build_condition, problems_message, sanitize
from .validation import deprecation_warnings, external_peer_names

MAX_POD_ERRORS = 32
"""Pods listed in `status.podErrors` (the count of the rest is in the message)."""

_SPEC_HINTS: Final[Mapping[str, str]] = {
    "authentication_failed": (
        "check spec.identity (the identity the gateway must prove) and spec.authentication"
    ),
    "no_proposal_chosen": "check spec.proposals",
    "ts_unacceptable": "check spec.subnets",
    "peer_dead": "check spec.address and that the peer answers IKE",
}
"""The spec fields to look at per failure reason, appended to the Degraded message: a
gateway proving another identity than the one expected fails as authentication_failed
in the pods, so the condition points at `spec.identity`. Fixed text, never a secret."""


def external_peer_status(
    obj: K8sObject,
    rendering: Rendering,
    cluster: Cluster,
    reports: Mapping[ObjectKey, SidecarReport],
    *,
    now: str,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `status` of the ExternalPeer `obj`; `now` is an RFC 3339 time."""
    key = key_of(obj)
    generation = (obj.get("metadata") or {}).get("generation")

    def condition(kind: str, status: bool, reason: str, message: str) -> dict[str, Any]:
        return build_condition(kind, status, reason, message, generation, now, previous)

    checked = cluster.external_checks.get(key)
    if checked is None or isinstance(checked, list):
        message = sanitize(problems_message(checked or []), ())
        return _status(
            generation,
            [
                condition("Ready", False, "InvalidSpec", message),
                condition("Degraded", True, "InvalidSpec", message),
            ],
        )
    name = external_peer_name(key)
    links = rendering.of_external_peer(key)
    tunnels = [
        tunnel
        for tunnel, spec in rendering.specs.items()
        if tunnel[0] == key[0] and key[1] in external_peer_names(spec)
    ]
    established = [
        link for link in links if name in reports.get(link.local.key, SidecarReport()).established
    ]
    errors = sorted(
        (link.local.peer_name, reason)
        for link in links
        if link not in established
        for peer, reason in reports.get(link.local.key, SidecarReport()).failures
        if peer == name
    )
    if not links:
        ready = condition(
            "Ready",
            False,
            "NotUsed",
            "no pod is configured towards it: no valid Tunnel with a selected pod names it "
            "in spec.selector.to.externalPeers",
        )
    elif len(established) == len(links):
        ready = condition(
            "Ready", True, "AllSasEstablished", f"{len(links)} of {len(links)} pods established"
        )
    else:
        ready = condition(
            "Ready", False, "SasPending", f"{len(established)} of {len(links)} pods established"
        )
    if errors:
        pod, reason = errors[0]
        more = f" (and {len(errors) - 1} more pods)" if len(errors) > 1 else ""
        hint = _SPEC_HINTS.get(reason.lower())
        message = f"{pod}: {reason}{more}" + (f"; {hint}" if hint else "")
        degraded = condition("Degraded", True, "SidecarError", message)
    else:
        degraded = condition("Degraded", False, "AsExpected", "")
    status = _status(
        generation,
        [ready, degraded],
        addresses=list(addresses_of(checked, cluster)),
        tunnels=len(tunnels),
        pods=len(links),
        established=len(established),
        pod_errors=[{"pod": pod, "reason": reason} for pod, reason in errors[:MAX_POD_ERRORS]],
    )
    status["warnings"] = deprecation_warnings(checked.ike_version, checked.proposals)
    return status


def _status(
    generation: int | None,
    conditions: list[dict[str, Any]],
    *,
    addresses: list[str] | None = None,
    tunnels: int = 0,
    pods: int = 0,
    established: int = 0,
    pod_errors: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "conditions": conditions,
        "addresses": addresses or [],
        "tunnels": tunnels,
        "pods": pods,
        "podsEstablished": established,
        "podErrors": pod_errors or [],
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


__all__ = ["MAX_POD_ERRORS", "external_peer_status"]
