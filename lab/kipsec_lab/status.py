"""``kipsec lab status``: what the API says about Tunnels, TunnelCertificates and
ExternalPeers, and what each sidecar says.

Tunnels, TunnelCertificates and ExternalPeers come from the API server (their status is what the
operator wrote: each condition's reason *and* message, since a reason such as
`InvalidSpec` alone does not say which field); pods from
the API server and the supervisor's ``state.json``; SAs from each sidecar's control
socket, reached through the pod's ``kipsec-run`` volume on the host (the socket the
sidecar binds at ``/run/kipsec/control.sock`` inside its mount namespace).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from kipsec_sidecar.control import DEFAULT_SOCKET, ControlClient

from . import site
from .client import LabClient
from .kubelet import host_path
from .state import Paths, PodState


@dataclass(frozen=True)
class SidecarView:
    """One sidecar's answer (``error`` when it could not be asked)."""

    datapath: str = ""
    ike_established: int = 0
    child_installed: int = 0
    peers: int = 0
    error: str = ""
    ike_versions: tuple[int, ...] = ()
    """The IKE versions of its established IKE SAs (1: IKEv1), each once, ascending."""
    auth_methods: tuple[int, ...] = ()
    """The IKEv1 authentication methods of its established IKE SAs (4: RSA public-key
    encryption), each once, ascending."""


def sidecar_view(paths: Paths, pod: PodState, container: str = "kipsec") -> SidecarView:
    """Ask the pod's sidecar for its SAs over its control socket."""
    spec_files = list(paths.pods.glob(f"{pod.namespace}_{pod.name}_*/{container}.json"))
    if pod.sidecar != "running" or not spec_files:
        return SidecarView(error=pod.sidecar)
    mounts = json.loads(spec_files[0].read_text())["mounts"]
    socket = host_path(mounts, DEFAULT_SOCKET)
    if socket is None:
        return SidecarView(error="no control socket mount")
    try:
        directory = os.open(socket.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return SidecarView(error=f"{socket.parent}: {exc.strerror}")
    try:
        # A unix socket path holds at most 107 bytes; the state directory may be deep.
        short = f"/proc/self/fd/{directory}/{socket.name}"
        data: dict[str, Any] = ControlClient(short, timeout=5).request("sas")
    except Exception as exc:  # a status display shows the failure instead of stopping
        return SidecarView(error=f"{type(exc).__name__}: {exc}"[:80])
    finally:
        os.close(directory)
    peers = data.get("peers") or []
    sas = [p.get("ike_sa") or {} for p in peers]
    established = [ike for ike in sas if ike.get("state") == "established"]
    return SidecarView(
        datapath=str(data.get("datapath", "")),
        ike_established=sum(
            1 for p in peers if (p.get("ike_sa") or {}).get("state") == "established"
        ),
        child_installed=sum(
            1 for p in peers for c in p.get("children") or [] if c.get("state") == "installed"
        ),
        peers=len(peers),
        ike_versions=tuple(sorted({int(ike.get("ike_version", 2)) for ike in established})),
        auth_methods=tuple(
            sorted({int(m) for ike in established if (m := ike.get("auth_method")) is not None})
        ),
    )


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for found in (obj.get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return dict(found)
    return {}


def tunnels_ready(tunnels: list[dict[str, Any]]) -> bool:
    return bool(tunnels) and all(condition(t, "Ready").get("status") == "True" for t in tunnels)


def _ready_cell(ready: dict[str, Any]) -> str:
    if ready.get("status") == "True":
        return "[green]True[/]"
    return f"[red]{escape(str(ready.get('status', '-')))}[/]"


def _why(obj: dict[str, Any]) -> str:
    """Ready's reason and message, then Degraded's when it is True and says more."""
    ready, degraded = condition(obj, "Ready"), condition(obj, "Degraded")
    lines = [": ".join(str(p) for p in (ready.get("reason"), ready.get("message")) if p)]
    if degraded.get("status") == "True" and degraded.get("message") != ready.get("message"):
        lines.append(f"Degraded {degraded.get('reason', '')}: {degraded.get('message', '')}")
    return escape("\n".join(line for line in lines if line))


def tunnel_table(tunnels: list[dict[str, Any]]) -> Table:
    table = Table(title="Tunnels")
    for column in ("namespace", "name", "Ready", "why", "pods", "SAs established", "last error"):
        table.add_column(column, overflow="fold")
    for tunnel in tunnels:
        status = tunnel.get("status") or {}
        table.add_row(
            tunnel["metadata"].get("namespace", ""),
            tunnel["metadata"]["name"],
            _ready_cell(condition(tunnel, "Ready")),
            _why(tunnel),
            str(status.get("pods", "")),
            f"{status.get('childSasEstablished', '-')}/{status.get('peersExpected', '-')}",
            escape(str(status.get("lastError") or "")),
        )
    return table


def certificate_table(certificates: list[dict[str, Any]]) -> Table:
    table = Table(title="TunnelCertificates")
    for column in ("namespace", "name", "Ready", "why", "pods issued", "notAfter", "renewal"):
        table.add_column(column, overflow="fold")
    for certificate in certificates:
        status = certificate.get("status") or {}
        table.add_row(
            certificate["metadata"].get("namespace", ""),
            certificate["metadata"]["name"],
            _ready_cell(condition(certificate, "Ready")),
            _why(certificate),
            str(status.get("podsIssued", "")),
            str(status.get("notAfter") or "-"),
            str(status.get("renewalTime") or "-"),
        )
    return table


def external_peer_table(peers: list[dict[str, Any]]) -> Table:
    """ExternalPeers: where, Ready and why, and the pods connected to each (those whose
    sidecar reports an established child SA with it) of the pods configured."""
    table = Table(title="ExternalPeers")
    for column in ("namespace", "name", "address", "Ready", "why", "pods connected", "errors"):
        table.add_column(column, overflow="fold")
    for peer in peers:
        status = peer.get("status") or {}
        errors = ", ".join(
            f"{e.get('pod')}: {e.get('reason')}" for e in status.get("podErrors") or []
        )
        table.add_row(
            peer["metadata"].get("namespace", ""),
            peer["metadata"]["name"],
            escape(str((peer.get("spec") or {}).get("address") or "")),
            _ready_cell(condition(peer, "Ready")),
            _why(peer),
            f"{status.get('podsEstablished', '-')}/{status.get('pods', '-')}",
            escape(errors),
        )
    return table


def ike_cell(view: SidecarView) -> str:
    """The pod table's IKE SAs cell: established/peers, and for IKEv1 the version and
    the authentication methods (`1/1 IKEv1 method 4`)."""
    if not view.peers:
        return "-"
    cell = f"{view.ike_established}/{view.peers}"
    if 1 in view.ike_versions:
        cell += " IKEv1" if view.ike_versions == (1,) else " IKEv1+IKEv2"
    if view.auth_methods:
        cell += " method " + ",".join(str(m) for m in view.auth_methods)
    return cell


def pod_table(paths: Paths, pods: list[PodState]) -> Table:
    table = Table(title="Pods")
    columns = (
        "pod",
        "node",
        "IP",
        "sidecar",
        "image",
        "restarts",
        "datapath",
        "IKE SAs",
        "child SAs",
    )
    for column in columns:
        table.add_column(column)
    for pod in pods:
        view = sidecar_view(paths, pod)
        table.add_row(
            f"{pod.namespace}/{pod.name}",
            pod.node,
            pod.ip,
            pod.sidecar
            if not view.error or pod.sidecar != "running"
            else f"running ({view.error})",
            pod.image or "-",
            str(pod.restarts),
            view.datapath,
            ike_cell(view),
            str(view.child_installed) if view.peers else "-",
        )
    return table


def site_table(directory: Path, pods: list[PodState]) -> Table:
    """The external site's gateway: each IKE SA charon holds, with the pod at its remote
    address (``swanctl --list-sas`` in short)."""
    table = Table(title=f"External site gateway (strongSwan; {directory}/charon.log)")
    for column in ("connection", "pod", "remote", "IKE SA", "child SAs", "remote TS"):
        table.add_column(column, overflow="fold")
    if site.charon_pid(directory) is None:
        table.add_row("-", "-", "-", "[red]charon stopped[/]", "-", "-")
        return table
    try:
        sas = site.list_sas(directory)
    except (OSError, site.SiteError) as exc:
        table.add_row("-", "-", "-", f"[red]{escape(str(exc))}[/]", "-", "-")
        return table
    by_ip = {pod.ip: f"{pod.namespace}/{pod.name}" for pod in pods}
    for sa in sorted(sas, key=lambda s: (s.connection, s.remote_host)):
        state = sa.state + (" (gateway initiated)" if sa.initiator else "")
        table.add_row(
            sa.connection,
            by_ip.get(sa.remote_host, "-"),
            escape(f"{sa.remote_host} {sa.remote_id}"),
            f"[green]{state}[/]" if sa.state == "ESTABLISHED" else state,
            str(sa.children_installed),
            ", ".join(sa.remote_ts),
        )
    return table


def tunnels(client: LabClient) -> list[dict[str, Any]]:
    return client.list("Tunnel")


__all__ = [
    "SidecarView",
    "certificate_table",
    "condition",
    "ike_cell",
    "pod_table",
    "sidecar_view",
    "site_table",
    "tunnel_table",
    "tunnels",
    "tunnels_ready",
]
