"""Manually keyed peers: SAs straight from the configuration, rotated by a new SPI.

There is no IKE: both sides install the SA pair the document gives them. To rotate keys,
the operator gives both sides a new SPI pair and new keys and reloads (the two sides
reload at different moments: a Kubernetes Secret reaches pods up to a minute apart).
Make-before-break holds as long as the SPIs change: the new inbound SA is installed next
to the old one at once; outbound moves to the new SA as soon as the peer is seen using
its new SA (it has reloaded too) or after :data:`ROTATION_GRACE` seconds; the old
inbound SA is still accepted for the same grace after that, then removed.

The manual SA pair is presented as a synthetic
:class:`~kipsec_sidecar.core.ike.events.ChildSaEstablished` (without keys), so the
snapshot and the make-before-break bookkeeping of :mod:`.peers` treat IKE and manual
children alike.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

from ..config.to_core import ManualSas, PeerPlan
from ..core.ike.events import ChildSaEstablished
from ..core.ipsec_sa import IpsecSa
from .peers import InstalledChild
from .reload import fingerprint

#: Seconds a rotated manual peer keeps sending on the old SA unless the peer is seen on
#: the new one, and keeps accepting the old inbound SA after switching.
ROTATION_GRACE = 90.0

RotationKind = Literal["rotate", "replace"]


def manual_child(
    plan: PeerPlan, *, replaces: bytes | None = None, now_wall: float | None = None
) -> InstalledChild:
    """The SA pair of a manual peer, ready for :meth:`ChildTable.established`.

    With ``replaces`` (the inbound SPI of the pair it rotates) the child is presented as
    the responder side of a rekey, so the table installs it inbound only and keeps
    sending on the old pair until the daemon retires that one.
    """
    manual = plan.manual
    if manual is None:
        raise ValueError(f"peer {plan.name!r} is not manually keyed")
    inbound = manual.inbound.build()
    outbound = manual.outbound.build()
    event = ChildSaEstablished(
        name=plan.name,
        protocol=int(inbound.protocol),
        mode=plan.mode,
        spi_in=manual.inbound.spi.to_bytes(4, "big"),
        spi_out=manual.outbound.spi.to_bytes(4, "big"),
        encr_id=None if inbound.encr_id is None else int(inbound.encr_id),
        encr_key_bits=manual.inbound.encr_key_bits or 0,
        integ_id=None if inbound.integ_id is None else int(inbound.integ_id),
        esn=inbound.esn,
        local_ts=plan.local_ts,
        remote_ts=plan.remote_ts,
        rekey_at=None,
        expire_at=None,
        initiator=replaces is None,  # a first pair is used at once: the peer has its file
        remote_addr=(plan.address, 4500),
        nat_detected=False,
        replaces=replaces,
    )
    return InstalledChild(
        event=event,
        inbound=inbound,
        outbound=outbound,
        encapsulation="udp" if outbound.udp_encap else "raw",
        installed_at=time.time() if now_wall is None else now_wall,
        rekey_at=None,
        expire_at=None,
    )


def rotation_kind(old: PeerPlan, new: PeerPlan, old_fingerprint: str, new_fp: str) -> RotationKind:
    """``rotate`` when only the manual SPIs/keys changed and the inbound SPI is new.

    Anything else (selectors, addresses, mode, or a key change that reuses the inbound
    SPI, which cannot coexist with the old SA) needs the peer to be replaced.
    """
    if old.manual is None or new.manual is None:
        return "replace"
    if new.manual.inbound.spi == old.manual.inbound.spi:
        return "replace"
    if old_fingerprint == new_fp:
        return "rotate"
    same_link = fingerprint(dataclasses.replace(old, manual=None)) == fingerprint(
        dataclasses.replace(new, manual=None)
    )
    return "rotate" if same_link else "replace"


def sa_summary(sas: ManualSas) -> dict[str, str]:
    """SPIs of a manual pair for logs (never keys)."""
    return {"spi_in": f"{sas.inbound.spi:08x}", "spi_out": f"{sas.outbound.spi:08x}"}


def spi_hex(sa: IpsecSa) -> str:
    return f"{sa.spi:08x}"


__all__ = [
    "ROTATION_GRACE",
    "RotationKind",
    "manual_child",
    "rotation_kind",
    "sa_summary",
    "spi_hex",
]
