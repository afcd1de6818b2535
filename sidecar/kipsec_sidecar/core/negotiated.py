"""From a negotiated child SA (an IKE event) to the two datapath SAs that carry it.

IKEv2 hands over one :class:`~.ike.events.ChildSaEstablished` per child SA; the datapath
needs one :class:`~.ipsec_sa.IpsecSa` per direction. This is the one place that pairs the
keys with the SPIs and addresses, so the userspace and kernel datapaths (and the demo)
cannot disagree about which key protects which direction.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ike.constants import EncrId, IntegId, ProtocolId
from .ike.events import ChildSaEstablished
from .ipsec_sa import IpsecSa, Mode, as_address
from .traffic_selectors import IPAddress

_MODES = {"tunnel": Mode.TUNNEL, "transport": Mode.TRANSPORT}


@dataclass(frozen=True, slots=True)
class SaPair:
    """The inbound SA (peer → us, our SPI) and the outbound SA (us → peer, its SPI)."""

    inbound: IpsecSa
    outbound: IpsecSa


def sa_pair(
    event: ChildSaEstablished,
    local_addr: IPAddress | str,
    remote_addr: IPAddress | str,
    *,
    replay_window: int | None = None,
) -> SaPair:
    """Build both directions of a negotiated child SA.

    ``local_addr``/``remote_addr`` are the IPsec endpoints (the outer header in tunnel
    mode); for UDP encapsulation after NAT detection they are the addresses the sockets
    use. Raises :class:`~.errors.LocalProtocolError` (or a subclass) if the negotiated
    algorithms cannot be installed, which the engine's proposal checks should prevent.
    """
    local, remote = as_address(local_addr), as_address(remote_addr)
    protocol = ProtocolId(event.protocol)
    encr = EncrId(event.encr_id) if event.encr_id is not None else None
    integ = IntegId(event.integ_id) if event.integ_id is not None else None
    common = {
        "protocol": protocol,
        "mode": _MODES[event.mode],
        "encr_id": encr,
        "encr_key_bits": event.encr_key_bits or None,
        "integ_id": integ,
        "esn": event.esn,
        "udp_encap": event.nat_detected and protocol == ProtocolId.ESP,
        "local_ts": event.local_ts,
        "remote_ts": event.remote_ts,
    }
    if replay_window is not None:
        common["replay_window"] = replay_window
    inbound = IpsecSa(
        spi=int.from_bytes(event.spi_in, "big"),
        src=remote,
        dst=local,
        encr_key=event.encr_key_in,
        integ_key=event.integ_key_in,
        **common,  # type: ignore[arg-type]
    )
    outbound = IpsecSa(
        spi=int.from_bytes(event.spi_out, "big"),
        src=local,
        dst=remote,
        encr_key=event.encr_key_out,
        integ_key=event.integ_key_out,
        **common,  # type: ignore[arg-type]
    )
    return SaPair(inbound, outbound)
