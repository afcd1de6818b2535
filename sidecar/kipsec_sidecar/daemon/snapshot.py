"""The read-only views of the daemon's state that the control interface and metrics show.

Built on demand from the peers (:mod:`.peers`) and the engine's IKE SAs: SPIs in hex,
algorithm names from :mod:`kipsec_sidecar.core.algorithms`, selectors as strings,
counters from the installed SA objects. Nothing here holds or shows key material.
"""

from __future__ import annotations

from ..core import algorithms
from ..core.errors import KipsecError
from ..core.ike.constants import DhGroup, ProtocolId
from ..core.ike.engine import IkeSa
from ..core.ike_versions import AnySa, ike_version
from ..state import ChildSaView, IkeSaView, PeerView
from .peers import InstalledChild, Peer


def peer_view(peer: Peer) -> PeerView:
    """A configured peer with its preferred IKE SA and every installed child SA."""
    plan = peer.plan
    sa = peer.preferred_sa()
    return PeerView(
        name=plan.name,
        address=plan.address,
        keying=plan.keying,
        start=plan.start,
        state="established" if plan.keying == "manual" and peer.children.children else peer.state,
        ike_sa=ike_view(peer, sa) if sa is not None else None,
        children=tuple(child_view(c) for c in peer.children.children.values()),
        last_error=peer.last_error,
        last_failure=peer.last_failure,
        ike_sas=peer.ike_sa_count(),
        close_action=plan.close_action,
        dpd_action=plan.dpd_action,
        reconnect=peer.reconnect if plan.keying == "ike" else "none",
        terminated=peer.operator_stopped,
        warnings=plan.warnings,
    )


def ike_view(peer: Peer, sa: AnySa) -> IkeSaView:
    """One IKE SA as it exists now: role, SPIs and algorithms of its current context (an
    IKE SA rekey replaces all three: the rekey's initiator becomes the original
    initiator), identities and NAT from its IkeSaEstablished."""
    info = peer.established.get(sa)
    natt = bool(info and info.nat_detected) or sa.peer_addr[1] == 4500
    selection = sa.current.selection if isinstance(sa, IkeSa) else None
    if selection is not None and selection.encr_id is not None and info is not None:
        encryption = _encryption_name(selection.encr_id, selection.encr_key_bits) or ""
        prf = _prf_name(selection.prf_id) if selection.prf_id is not None else ""
        dh_group = _dh_name(selection.dh_group) if selection.dh_group is not None else ""
    else:
        encryption = (_encryption_name(info.encr_id, info.encr_key_bits) or "") if info else ""
        prf = _prf_name(info.prf_id) if info else ""
        dh_group = _dh_name(info.dh_group) if info else ""
    return IkeSaView(
        state=sa.state.value,
        initiator=sa.original_initiator,
        local_addr=f"{peer.plan.local_address}:{4500 if natt else 500}",
        remote_addr=f"{sa.peer_addr[0]}:{sa.peer_addr[1]}",
        local_id=info.local_id if info else "",
        remote_id=info.remote_id if info else "",
        spi_i=sa.spi_i.hex(),
        spi_r=sa.spi_r.hex(),
        encryption=encryption,
        prf=prf,
        dh_group=dh_group,
        nat_detected=bool(info and info.nat_detected),
        established_at=peer.established_at.get(sa),
        ike_version=ike_version(sa),
        auth_method=_auth_method(sa),
    )


def _auth_method(sa: AnySa) -> int | None:
    """The phase 1 authentication method of an IKEv1 SA once negotiated (None: IKEv2)."""
    if isinstance(sa, IkeSa):
        return None
    choice = sa.p1.choice
    return int(choice.suite.auth_method) if choice is not None else None


def _encryption_name(encr_id: int | None, bits: int) -> str | None:
    if encr_id is None:
        return None
    try:
        return f"{algorithms.encryption(encr_id).name}-{bits}"
    except KipsecError:
        return f"encr-{encr_id}"


def _integrity_name(integ_id: int | None) -> str | None:
    if integ_id is None or integ_id == 0:
        return None
    try:
        return algorithms.integrity(integ_id).name
    except KipsecError:
        return f"integ-{integ_id}"


def _prf_name(prf_id: int) -> str:
    try:  # a name only: SHA-1 is negotiated only when a legacy peer named it
        return algorithms.prf(prf_id, legacy_sha1=True).name
    except KipsecError:
        return f"prf-{prf_id}"


def _dh_name(group: int) -> str:
    try:
        return DhGroup(group).name.lower().replace("_", "-")
    except ValueError:
        return f"group-{group}"


def child_view(child: InstalledChild) -> ChildSaView:
    event = child.event
    return ChildSaView(
        name=event.name,
        state=child.state,
        mode=event.mode,
        protocol="esp" if event.protocol == ProtocolId.ESP else "ah",
        spi_in=event.spi_in.hex(),
        spi_out=event.spi_out.hex(),
        encryption=_encryption_name(event.encr_id, event.encr_key_bits),
        integrity=_integrity_name(event.integ_id),
        esn=event.esn,
        encapsulation=child.encapsulation,
        local_ts=tuple(str(ts) for ts in event.local_ts),
        remote_ts=tuple(str(ts) for ts in event.remote_ts),
        bytes_in=child.inbound.bytes,
        bytes_out=child.outbound.bytes,
        packets_in=child.inbound.packets,
        packets_out=child.outbound.packets,
        installed_at=child.installed_at,
        rekey_at=child.rekey_at,
        expire_at=child.expire_at,
    )


__all__ = ["child_view", "ike_view", "peer_view"]
