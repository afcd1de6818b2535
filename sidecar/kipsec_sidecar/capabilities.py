"""The Linux capabilities the sidecar needs, checked when it starts.

In a pod the sidecar holds only what its container's ``securityContext.capabilities``
adds (the webhook adds NET_ADMIN and NET_BIND_SERVICE, and NET_RAW for raw ESP/AH). A
spec that lacks one would otherwise fail late and obscurely (``Permission denied`` on a
port, an ``EPERM`` from netlink halfway through installing routes); checked first, the
sidecar exits before it changes anything, with a message naming the capability and
what needs it, and the pod stays not Ready (its startup probe never answers).

Pure: :func:`required` decides from the configuration, :func:`missing` compares with
the effective set read from ``/proc/self/status`` (:func:`effective`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config.model import SidecarConfig

NET_BIND_SERVICE = 10
NET_ADMIN = 12
NET_RAW = 13
NAMES = {NET_BIND_SERVICE: "NET_BIND_SERVICE", NET_ADMIN: "NET_ADMIN", NET_RAW: "NET_RAW"}
UNPRIVILEGED_PORT_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")


@dataclass(frozen=True)
class Need:
    """One capability the sidecar needs, and what for."""

    capability: int
    why: str

    @property
    def name(self) -> str:
        return NAMES[self.capability]


class MissingCapability(RuntimeError):
    """The process lacks capabilities the configuration needs; names each one."""

    def __init__(self, needs: list[Need]) -> None:
        self.needs = needs
        listed = "; ".join(f"CAP_{n.name} (for {n.why})" for n in needs)
        super().__init__(
            f"missing capabilit{'y' if len(needs) == 1 else 'ies'} {listed}: add "
            f"{', '.join(n.name for n in needs)} to the container's "
            "securityContext.capabilities.add"
        )


def uses_raw(config: SidecarConfig) -> bool:
    """Whether any peer sends raw ESP/AH (IP protocols 50/51): AH and ``encapsulation:
    raw`` do, as the webhook decides when it adds NET_RAW (``auto`` only falls back to
    raw where no NAT is found, and is not required to)."""
    for peer in config.peers:
        encapsulation = peer.encapsulation or config.encapsulation
        if peer.protocol == "ah" or encapsulation == "raw":
            return True
    return False


def required(
    config: SidecarConfig | None, ports: tuple[int, ...], unprivileged_port_start: int
) -> list[Need]:
    """What the sidecar for ``config`` needs (None: what every configuration needs, the
    check before the configuration exists), binding the UDP ``ports`` (IKE's), when
    ports below ``unprivileged_port_start`` need NET_BIND_SERVICE."""
    needs = [
        Need(NET_ADMIN, "the TUN device, routes, rules and socket marks, or XFRM states"),
    ]
    low = sorted(p for p in ports if p < unprivileged_port_start)
    if low:
        needs.append(
            Need(
                NET_BIND_SERVICE,
                f"UDP port{'s' if len(low) > 1 else ''} {', '.join(map(str, low))}, below "
                f"net.ipv4.ip_unprivileged_port_start={unprivileged_port_start}",
            )
        )
    if config is not None and uses_raw(config):
        needs.append(Need(NET_RAW, "raw ESP/AH sockets (protocol: ah or encapsulation: raw)"))
    return needs


def effective(status: str) -> int:
    """The effective capability mask (``CapEff``) of a ``/proc/<pid>/status`` text."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise ValueError("no CapEff line in the process status")


def missing(mask: int, needs: list[Need]) -> list[Need]:
    return [need for need in needs if not mask >> need.capability & 1]


def check(config: SidecarConfig | None, ports: tuple[int, ...]) -> None:
    """Raise :class:`MissingCapability` when this process lacks what ``config`` needs."""
    try:
        start = int(UNPRIVILEGED_PORT_START.read_text().strip())
    except (OSError, ValueError):
        start = 1024
    lacking = missing(
        effective(Path("/proc/self/status").read_text()), required(config, ports, start)
    )
    if lacking:
        raise MissingCapability(lacking)


__all__ = ["MissingCapability", "Need", "check", "effective", "missing", "required", "uses_raw"]
