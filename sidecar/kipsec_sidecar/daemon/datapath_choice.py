"""Which datapath a sidecar runs, and why (the reason is shown in the snapshot).

``datapath: auto`` asks the kernel (:func:`~kipsec_sidecar.datapath.probe.probe_kernel_esp`
adds and deletes throwaway ESP states in the sidecar's namespace): the kernel (XFRM)
datapath when it accepts them, else the userspace one (TUN device, ESP applied
in-process). ``datapath: kernel`` on a kernel that refuses them is a startup error that
carries the probe's reason; ``userspace`` never probes. The reason ends up in the log,
the snapshot (``datapath_reason``) and the ``kipsec_datapath_info`` metric's label.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..config.model import SidecarConfig
from ..config.to_core import PeerPlan
from ..core.ike.constants import EncrId, IntegId, ProtocolId
from ..datapath.base import AcquireCallback, Datapath, DatapathError, UdpSender
from ..datapath.mtu import Suite

if TYPE_CHECKING:
    # The probe (its own XFRM packing, no pyroute2): imported when a probe runs, not on
    # the userspace path (see choose_datapath).
    from ..datapath.probe import ProbeResult

#: The capability probe: ``ProbeResult(kernel, reason)``; tests pass a fixed answer.
Probe = Callable[[], "ProbeResult"]
#: Builds a datapath: (config, peer plans, UDP-4500 sender, acquire callback).
Factory = Callable[[SidecarConfig, tuple[PeerPlan, ...], UdpSender, AcquireCallback], Datapath]


@dataclass(frozen=True, slots=True)
class DatapathChoice:
    name: Literal["userspace", "kernel"]
    reason: str


def choose_datapath(
    configured: Literal["auto", "userspace", "kernel"], *, probe: Probe | None = None
) -> DatapathChoice:
    """The datapath for the configured value (``probe``: the kernel's, unless given).

    Raises DatapathError for ``kernel`` when the probe says the kernel cannot hold
    kipsec's ESP SAs; the message names the probe's reason (errno, missing module, or
    missing CAP_NET_ADMIN).
    """
    if configured == "userspace":
        return DatapathChoice("userspace", "configured: datapath userspace")
    if probe is None:
        # Here, not at import: `datapath: userspace` never probes. The probe packs its
        # two XFRM states itself (xfrm_wire), so an `auto` start on a kernel without ESP
        # never loads pyroute2; only the kernel datapath does.
        from ..datapath.probe import probe_kernel_esp

        probe = probe_kernel_esp
    kernel, reason = probe()
    if configured == "kernel":
        if not kernel:
            raise DatapathError(
                f"datapath: kernel is unavailable here: {reason}; "
                "use datapath: auto or userspace to run the userspace datapath"
            )
        return DatapathChoice("kernel", f"configured: datapath kernel; {reason}")
    return DatapathChoice("kernel" if kernel else "userspace", f"auto: {reason}")


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
    """The userspace datapath sized for ``plans`` (TUN MTU from the path MTU and suites),
    in one process or two (``datapathWorkers``, :func:`userspace_workers`)."""
    from ..datapath.userspace import UserspaceDatapath, UserspaceOptions

    options = UserspaceOptions(path_mtu=config.mtu, suites=suites(plans))
    natt_socket = getattr(udp_sender, "natt_socket", None)
    if userspace_workers(config) == 2 and natt_socket is not None:
        from ..datapath.split import SplitDatapath

        return SplitDatapath(
            udp_sender=udp_sender,
            udp_socket=natt_socket,
            on_acquire=on_acquire,
            options=options,
        )
    return UserspaceDatapath(udp_sender=udp_sender, on_acquire=on_acquire, options=options)


def userspace_workers(config: SidecarConfig, cores: int | None = None) -> int:
    """1 or 2 processes for the userspace datapath: ``auto`` is 2 with two or more cores."""
    if config.datapath_workers == "auto":
        count = os.cpu_count() if cores is None else cores
        return 2 if (count or 1) >= 2 else 1
    return config.datapath_workers


def kernel_factory(
    config: SidecarConfig,
    plans: tuple[PeerPlan, ...],
    udp_sender: UdpSender,
    on_acquire: AcquireCallback,
) -> Datapath:
    """The kernel (XFRM) datapath in the sidecar's own namespace.

    The template source is the first peer's local address (transport mode needs one);
    ``fwd`` policies are added when a local traffic selector covers more than one
    address (a gateway protecting hosts behind it). ``udp_sender`` is unused: the kernel
    sends ESP itself. The daemon attaches its EXPIRE handler and NAT-T port afterwards
    (:meth:`~kipsec_sidecar.datapath.kernel.KernelDatapath.attach`).
    """
    from ..datapath.kernel import KernelDatapath

    address = ipaddress.ip_address(
        plans[0].local_address if plans else str(config.local.addresses[0])
    )
    local_addr = None if address.is_unspecified else address
    forward = any(ts.start_addr != ts.end_addr for plan in plans for ts in plan.local_ts)
    return KernelDatapath(local_addr=local_addr, on_acquire=on_acquire, forward=forward)


def factory_for(choice: DatapathChoice) -> Factory:
    """The factory of the chosen datapath."""
    return kernel_factory if choice.name == "kernel" else userspace_factory


__all__ = [
    "DatapathChoice",
    "Factory",
    "Probe",
    "choose_datapath",
    "factory_for",
    "kernel_factory",
    "suites",
    "userspace_factory",
]
