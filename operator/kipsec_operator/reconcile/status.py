"""A Tunnel's status from what the operator rendered and what the sidecars report.

Ready means every link the configuration asks for has an established child SA *as the
sidecars report it*, not as the operator hopes. Degraded means something needs a
person: an invalid spec (the message names the field), a pod pair claimed by two
Tunnels, a namespace whose pods a side selects but which does not consent to the
Tunnel's namespace (:mod:`.consent`; those pods take no part), or a sidecar error.
`lastError` comes from a sidecar; it is cut to a bounded length and any secret value
the operator knows for the Tunnel (PSK, manual master key) is replaced,
so it can never leak into status or an Event.

Secrets stay out of the conditions by construction: every message the operator writes
is built from field paths, object names and fixed sentences (a PSK that is too short is
"shorter than 8 bytes (the value is not shown)"), never from a Secret's data.
Redaction (:func:`sanitize`) is the last line of defence for the text the operator
does not write, a sidecar's `lastError`, and is applied to every message anyway. It
must not garble: replacing every occurrence of a PSK `short` once turned
`Secret "rb-short" key "psk" is shorter than 8 bytes` into
`Secret "rb-[redacted]" key "psk" is [redacted]er than 8 bytes`, unreadable and
telling the value by what surrounds it. So it replaces a value only as a whole token
(bounded by the start or end of the text, white space, quotes or punctuation, not
inside a word or a name such as `rb-short`) and only values of at least
:data:`MIN_REDACTED_LENGTH` characters: a shorter PSK is refused (the Tunnel is
`InvalidSpec`, no sidecar uses it) and short values match ordinary words.

Reasons (stable, for alerts and `kubectl wait`):

Ready: `AllSasEstablished`, `SasPending`, `PeerCertificatesPending` (public-key
encryption: some pods wait for their peers' certificates, so those links cannot be up
yet), `PodsPending`, `NoPodsSelected`, `NoPeers`,
`PeerConflict`, `NoCertificate`, `NamespaceNotConsenting` (when that is why there is no
link: Ready names the real cause, not a guess), `InvalidSpec`. Degraded: `AsExpected`,
`InvalidSpec`, `PeerConflict` (a pod pair, or a pod and an ExternalPeer, already linked
by another Tunnel: both Tunnels are named for an ExternalPeer), `NoCertificate` (a pod the
ExternalPeer's TunnelCertificate does not select), `NamespaceNotConsenting`,
`SidecarError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kipsec_sidecar.config.errors import FieldError
from kipsec_sidecar.config.model import MIN_PSK_LENGTH

from ..crds.models import TunnelSpec
from .cluster import Cluster, K8sObject, ObjectKey, key_of
from .external import ExternalLink
from .peers import refusals, selected
from .render import Rendering, remote_certificate
from .validation import (
    deprecation_warnings,
    external_peer_names,
    parse_spec,
    public_key_encryption,
)

MAX_ERROR_LENGTH = 1024
REDACTED = "[redacted]"
MIN_REDACTED_LENGTH = MIN_PSK_LENGTH
"""Shorter values are not redacted (see the module docstring): a PSK that short is
refused, and a manual master key is 32 bytes at least."""
_BOUNDARY = r"\s\"'`,;:=()\[\]{}<>.!?/\\|"
"""Characters that end a token (besides the start and end of the text)."""


@dataclass(frozen=True)
class SidecarReport:
    """What one pod's sidecar reports: peers with an established child SA, last error."""

    established: frozenset[str] = frozenset()
    """Peer names (`namespace/pod`) with at least one established child SA."""
    last_error: str | None = None
    failures: frozenset[tuple[str, str]] = frozenset()
    """(peer name, reason) of every listed peer that is not established and says why;
    the reason is one of :data:`kipsec_sidecar.handshake_failures.REASONS`."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SidecarReport:
        """From `{"established": [...], "lastError": "..."}` (the sidecar's report)."""
        error = data.get("lastError")
        return cls(
            frozenset(str(p) for p in data.get("established") or []),
            str(error) if error else None,
        )


def build_condition(
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    text = "True" if status else "False"
    since = now
    for old in (previous or {}).get("conditions") or []:
        if old.get("type") == kind and old.get("status") == text:
            since = old.get("lastTransitionTime") or now
    condition: dict[str, Any] = {
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def secret_values(tunnel: K8sObject, cluster: Cluster) -> list[str]:
    """The secret values (decoded text) the Tunnel references, for redaction."""
    parsed = parse_spec(tunnel)
    if isinstance(parsed, list):
        return []
    namespace = key_of(tunnel)[0]
    refs: list[tuple[str, str]] = []
    auth = parsed.authentication
    if auth is not None and auth.psk is not None:
        refs.append((auth.psk.secret_ref.name, auth.psk.secret_ref.key))
    if parsed.manual is not None:
        refs += [(parsed.manual.secret_ref.name, k) for k in ("key", "previousKey")]
    values = []
    for name, key in refs:
        raw = (cluster.secret_data(namespace, name) or {}).get(key)
        if raw is None:
            continue
        try:
            text = base64.b64decode(raw, validate=True).decode("utf-8", "replace").strip()
        except (binascii.Error, ValueError):
            continue
        if text:
            values.append(text)
    return values


def redact(message: str, secrets: Iterable[str]) -> str:
    """`message` with each value of `secrets` (of :data:`MIN_REDACTED_LENGTH` or more
    characters) replaced where it stands as a whole token; see the module docstring."""
    for value in sorted(set(secrets), key=len, reverse=True):
        if len(value) < MIN_REDACTED_LENGTH:
            continue
        token = rf"(?<![^{_BOUNDARY}]){re.escape(value)}(?![^{_BOUNDARY}])"
        message = re.sub(token, REDACTED, message)
    return message


def sanitize(message: str, secrets: Iterable[str]) -> str:
    """`message` on one line, bounded, redacted (:func:`redact`)."""
    message = redact(message, secrets)
    message = " ".join(message.split())
    if len(message) > MAX_ERROR_LENGTH:
        message = message[: MAX_ERROR_LENGTH - 1] + "…"
    return message


def problems_message(problems: Sequence[FieldError]) -> str:
    """The first five problems of a spec, for an InvalidSpec condition."""
    message = "; ".join(str(p) for p in problems[:5])
    if len(problems) > 5:
        message += f"; and {len(problems) - 5} more"
    return message


def tunnel_status(
    tunnel: K8sObject,
    rendering: Rendering,
    cluster: Cluster,
    reports: Mapping[ObjectKey, SidecarReport],
    *,
    now: str,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `status` of `tunnel`; `now` is an RFC 3339 time (kept when nothing changed).

    `previous` is the current status, so that `lastTransitionTime` only moves when a
    condition's status does.
    """
    key = key_of(tunnel)
    generation = (tunnel.get("metadata") or {}).get("generation")
    secrets = secret_values(tunnel, cluster)

    def condition(kind: str, status: bool, reason: str, message: str) -> dict[str, Any]:
        return build_condition(kind, status, reason, message, generation, now, previous)

    if key in rendering.problems:
        message = sanitize(problems_message(rendering.problems[key]), secrets)
        return _status(
            generation,
            [
                condition("Ready", False, "InvalidSpec", message),
                condition("Degraded", True, "InvalidSpec", message),
            ],
            pods=0,
            expected=0,
            established=0,
            last_error=None,
        )
    chosen = sorted(rendering.selected.get(key, frozenset()))
    with_ip = [k for k in chosen if cluster.ref(k) is not None]
    pending = len(chosen) - len(with_ip)
    pairs = [(link.local.key, link.remote.peer_name) for link in rendering.links.of_tunnel(key)]
    pairs += [(link.local.key, link.peer_name) for link in rendering.external_of_tunnel(key)]
    links = pairs
    established = sum(
        1 for pod, peer in pairs if peer in reports.get(pod, SidecarReport()).established
    )
    errors = [
        f"{namespace}/{name}: {reports[(namespace, name)].last_error}"
        for namespace, name in with_ip
        if (namespace, name) in reports and reports[(namespace, name)].last_error
    ]
    last_error = sanitize(errors[0], secrets) if errors else None

    conflicts = [
        f"spec.selector: {pair} are already linked by another Tunnel"
        for pair in sorted(
            {
                f"{link.local.peer_name} and {link.remote.peer_name}"
                for link in rendering.links.conflicts
                if link.tunnel == key
            }
        )
    ]
    conflicts += sorted(
        f"spec.selector.to.externalPeers: Tunnels {winner[1]!r} and {key[1]!r} both "
        f'link pod {link.local.peer_name} to ExternalPeer "{link.peer[1]}"; '
        f"{winner[1]!r} (first by name) is used"
        for link, winner in rendering.external_conflicts
        if link.tunnel == key
    )
    conflict_message = (
        conflicts[0] + (f" (and {len(conflicts) - 1} more pairs)" if len(conflicts) > 1 else "")
        if conflicts
        else ""
    )
    uncertified = sorted(
        f"spec.selector.from: pod {link.local.peer_name} is not selected by TunnelCertificate "
        f'"{_certificate_name(link, cluster)}" that ExternalPeer "{link.peer[1]}" presents '
        "(its spec.authentication.certificate.tunnelCertificateRef): it gets no entry for it"
        for link in rendering.uncertified
        if link.tunnel == key
    )
    uncertified_message = (
        uncertified[0] + (f" (and {len(uncertified) - 1} more)" if len(uncertified) > 1 else "")
        if uncertified
        else ""
    )
    refused = refusals(tunnel, rendering.specs[key], cluster)
    waiting = _awaiting_certificates(rendering, key, cluster)
    refused_message = (
        refused[0] + (f" (and {len(refused) - 1} more)" if len(refused) > 1 else "")
        if refused
        else ""
    )

    if not chosen and refused:  # every pod it would select is in a refusing namespace
        ready = condition("Ready", False, "NamespaceNotConsenting", refused_message)
    elif not chosen:
        ready = condition("Ready", False, "NoPodsSelected", "no pod matches spec.selector")
    elif pending and not links:
        ready = condition("Ready", False, "PodsPending", f"{pending} pod(s) have no IP yet")
    elif not links and conflicts:
        ready = condition("Ready", False, "PeerConflict", conflict_message)
    elif not links and uncertified:
        ready = condition("Ready", False, "NoCertificate", uncertified_message)
    elif not links and refused:
        ready = condition("Ready", False, "NamespaceNotConsenting", refused_message)
    elif not links:
        ready = condition(
            "Ready", False, "NoPeers", _no_peers(tunnel, rendering.specs[key], cluster)
        )
    elif established == len(links) and not pending:
        ready = condition(
            "Ready",
            True,
            "AllSasEstablished",
            f"{established} of {len(links)} child SAs established",
        )
    elif established == len(links):
        ready = condition("Ready", False, "PodsPending", f"{pending} pod(s) have no IP yet")
    elif waiting:
        ready = condition(
            "Ready",
            False,
            "PeerCertificatesPending",
            f"{len(waiting)} pod(s) wait for their peers' certificates (public-key "
            "encryption: a peer is configured once its pod has enrolled and its certificate "
            f"is signed); {established} of {len(links)} child SAs established",
        )
    else:
        ready = condition(
            "Ready", False, "SasPending", f"{established} of {len(links)} child SAs established"
        )

    if conflicts:
        degraded = condition("Degraded", True, "PeerConflict", conflict_message)
    elif uncertified:
        degraded = condition("Degraded", True, "NoCertificate", uncertified_message)
    elif refused:
        degraded = condition("Degraded", True, "NamespaceNotConsenting", refused_message)
    elif last_error is not None:
        degraded = condition("Degraded", True, "SidecarError", last_error)
    else:
        degraded = condition("Degraded", False, "AsExpected", "")
    spec = rendering.specs[key]
    status = _status(
        generation,
        [ready, degraded],
        pods=len(with_ip),
        expected=len(links),
        established=established,
        last_error=last_error,
    )
    # A Tunnel to ExternalPeers uses their algorithms: each ExternalPeer warns itself.
    status["warnings"] = (
        [] if external_peer_names(spec) else deprecation_warnings(spec.ike_version, spec.proposals)
    )
    return status


def _awaiting_certificates(
    rendering: Rendering, key: ObjectKey, cluster: Cluster
) -> set[ObjectKey]:
    """The pods of the Tunnel `key` left without an entry for a peer whose certificate
    the operator cannot hand out yet (public-key encryption; :func:`remote_certificate`,
    the rule the rendering follows, so this holds for pods not rendered in this pass)."""
    spec = rendering.specs[key]
    if public_key_encryption(spec) is None:
        return set()
    return {
        link.local.key
        for link in rendering.links.of_tunnel(key)
        if remote_certificate(link, spec, cluster) is None
    }


def _certificate_name(link: ExternalLink, cluster: Cluster) -> str:
    """The TunnelCertificate the ExternalPeer of `link` names (its spec is valid)."""
    spec = cluster.external_checks[link.peer]
    return str(spec.authentication.certificate.tunnel_certificate_ref.name)


def _no_peers(tunnel: K8sObject, spec: TunnelSpec, cluster: Cluster) -> str:
    """Why the selected pods (all with an IP) make no link, as exactly as it can be told."""
    from_keys, to_keys = selected(tunnel, spec, cluster)
    from_ip = [k for k in from_keys if cluster.ref(k) is not None]
    to_ip = [k for k in to_keys if cluster.ref(k) is not None]
    if spec.selector.to is None and len(from_ip) < 2:
        return f"spec.selector.from: only {len(from_ip)} pod selected; a mesh links two or more"
    if not from_ip:
        return "spec.selector.from: no pod selected"
    if spec.selector.to is not None and not spec.selector.to.selects_pods:
        return (
            "spec.selector.to.externalPeers: the selected pods have no address of the "
            "IP version of the external peers' addresses"
        )
    if not to_ip:
        return "spec.selector.to: no pod selected"
    if set(from_ip) == set(to_ip) and len(from_ip) == 1:
        return "spec.selector: from and to select the same single pod; it has no peer"
    return "the selected pods have no IP version in common (IPv4 with IPv6 cannot be linked)"


def _status(
    generation: int | None,
    conditions: list[dict[str, Any]],
    *,
    pods: int,
    expected: int,
    established: int,
    last_error: str | None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "conditions": conditions,
        "pods": pods,
        "peersExpected": expected,
        "childSasEstablished": established,
        "lastError": last_error,
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


__all__ = [
    "MAX_ERROR_LENGTH",
    "MIN_REDACTED_LENGTH",
    "REDACTED",
    "SidecarReport",
    "build_condition",
    "problems_message",
    "redact",
    "sanitize",
    "secret_values",
    "tunnel_status",
]
