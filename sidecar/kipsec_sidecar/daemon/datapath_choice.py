"""Which datapath a sidecar runs, and why (the reason is shown in the snapshot).

``datapath: auto`` takes the kernel (XFRM) when the kernel can hold ESP SAs and the
kernel datapath exists, else the userspace one (TUN device, ESP applied in-process).
This version has no kernel datapath yet, so ``kernel`` is refused with an error that
says so, and ``auto`` always ends in userspace — with a reason that tells the operator
whether the kernel could have done it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from ..config.model import SidecarConfig
from ..config.to_core import PeerPlan
from ..core.ike.constants import EncrId, IntegId, ProtocolId
from ..datapath.base import AcquireCallback, Datapath, DatapathError, UdpSender
from ..datapath.mtu import Suite

#: Present when the kernel's ESP (IPv4) transform is loaded; absent on kernels without it.
ESP_MODULE_PATH = "/sys/module/esp4"


@dataclass(frozen=True, slots=True)
class DatapathChoice:
    name: Literal["userspace", "kernel"]
    reason: str


def kernel_esp_available(module_path: str = ESP_MODULE_PATH) -> bool:
    """Whether the running kernel has its ESP transform loaded (the cheap probe)."""
    return os.path.exists(module_path)


def choose_datapath(
    configured: Literal["auto", "userspace", "kernel"], *, kernel_esp: bool | None = None
) -> DatapathChoice:
    """The datapath for the configured value; DatapathError for ``kernel`` in this version."""
    if configured == "userspace":
        return DatapathChoice("userspace", "configured: datapath userspace")
    if configured == "kernel":
        raise DatapathError(
            "datapath: kernel is not available in this version of kipsec (the XFRM "
            "datapath comes later); use datapath: userspace or auto"
        )
    if kernel_esp is None:
        kernel_esp, why = probe_kernel()
    else:
        why = "kernel ESP support given" if kernel_esp else "no kernel ESP support given"
    if kernel_esp:
        return DatapathChoice(
            "userspace", f"auto: {why}, but this version has no kernel datapath yet"
        )
    return DatapathChoice("userspace", f"auto: {why}")


def probe_kernel() -> tuple[bool, str]:
    """(kernel can hold ESP SAs, why): the XFRM probe when it is available.

    The probe (:mod:`kipsec_sidecar.datapath.probe`) asks the kernel itself by adding and
    deleting throwaway ESP states; without it, the loaded ``esp4`` module is the hint.
    """
    try:
        from ..datapath.probe import probe_kernel_esp
    except ImportError:
        if kernel_esp_available():
            return True, "the esp4 module is loaded"
        return False, "the kernel cannot hold ESP SAs (no esp4 module)"
    result = probe_kernel_esp()
    return result.kernel, result.reason


def suites(plans: tuple[PeerPlan, ...]) -> tuple[Suite, ...]:
    """Every protocol/algorithm/mode/framing the peers may negotiate (for the TUN MTU)."""
    found: dict[Suite, None] = {}
    for plan in plans:
        protocol = ProtocolId.ESP if plan.protocol == "esp" else ProtocolId.AH
        encapsulation: Literal["udp", "raw"] = (
            "raw" if protocol == ProtocolId.AH or plan.encapsulation == "raw" else "udp"
        )
        version = 6 if ":" in plan.address else 4
        pairs: list[tuple[int | None, int | None]] = []
        if plan.ike is not None:
            for child in plan.ike.children:
                for proposal in child.proposals:
                    integs: list[int | None] = list(proposal.integrity) or [None]
                    encrs: list[int | None] = [e.encr_id for e in proposal.encryption] or [None]
                    pairs += [(e, i) for e in encrs for i in integs]
        elif plan.manual is not None:
            pairs.append((plan.manual.outbound.encr_id, plan.manual.outbound.integ_id))
        for encr, integ in pairs:
            suite = Suite(
                protocol=protocol,
                encr_id=None if encr is None else _encr(encr),
                integ_id=None if integ is None else _integ(integ),
                mode=plan.mode,
                encapsulation=encapsulation,
                outer_version=version,
                inner_version=version,
            )
            found[suite] = None
    return tuple(found)


def _encr(value: int) -> EncrId:
    return EncrId(value)


def _integ(value: int) -> IntegId:
    return IntegId(value)


def userspace_factory(
    config: SidecarConfig,
    plans: tuple[PeerPlan, ...],
    udp_sender: UdpSender,
    on_acquire: AcquireCallback,
) -> Datapath:
    """The userspace datapath sized for ``plans`` (TUN MTU from the path MTU and suites)."""
    from ..datapath.userspace import UserspaceDatapath, UserspaceOptions

    options = UserspaceOptions(path_mtu=config.mtu, suites=suites(plans))
    return UserspaceDatapath(udp_sender=udp_sender, on_acquire=on_acquire, options=options)


__all__ = [
    "DatapathChoice",
    "choose_datapath",
    "kernel_esp_available",
    "suites",
    "userspace_factory",
]
