"""Open a Linux TUN device: the userspace datapath's door to the pod's IP stack.

A TUN device hands the datapath whole IP packets (no Ethernet header; ``IFF_NO_PI``
drops the 4-byte packet-information prefix too), one per ``read``, and takes whole IP
packets back on ``write``. The device lives in the network namespace of the process
that opened ``/dev/net/tun`` and, because it is not made persistent, disappears when
the last file descriptor on it is closed — including when the process is SIGKILLed.
That is what the fail-closed blackhole routes of :mod:`.routing` rely on: when the
device vanishes, the kernel drops the routes through it and the blackholes underneath
take over.

Addresses, MTU and link state are netlink's business (:mod:`.routing`); this module
only opens the device.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from dataclasses import dataclass, field

from .base import DatapathError

TUN_CLONE_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0  # _IOW('T', 208, unsigned int)
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
#: What :func:`open_tun` asks for with ``offload=True``: partial checksums and TCP
#: super-segments both ways (see :mod:`.offload`).
TCP_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
IFNAMSIZ = 16
_IFREQ = struct.Struct(f"{IFNAMSIZ}sH22x")


@dataclass(slots=True)
class TunDevice:
    """An open TUN device: its name and its queue file descriptors (non-blocking).

    With ``IFF_MULTI_QUEUE`` there is one descriptor per queue (the kernel spreads flows
    across them); otherwise exactly one. The caller owns the descriptors: :meth:`close`
    closes them all, which deletes the device.
    """

    name: str
    fds: list[int] = field(default_factory=list)
    #: Every read and write carries a 10-byte virtio_net_hdr (``IFF_VNET_HDR``).
    vnet_hdr: bool = False

    @property
    def fd(self) -> int:
        """The first (or only) queue's descriptor."""
        return self.fds[0]

    def close(self) -> None:
        """Close every queue; the device disappears with the last one. Idempotent."""
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.pop())


def _attach_queue(name: str, flags: int, offloads: int) -> int:
    fd = os.open(TUN_CLONE_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
        if offloads:
            fcntl.ioctl(fd, TUNSETOFFLOAD, offloads)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_tun(name: str, *, queues: int = 1, offload: bool = False, tso: bool = True) -> TunDevice:
    """Create TUN device ``name`` in the current network namespace with ``queues`` queues.

    ``queues > 1`` sets ``IFF_MULTI_QUEUE``. ``offload`` sets ``IFF_VNET_HDR`` and the
    :data:`TCP_OFFLOADS`: the caller must then read and write through :mod:`.offload`
    (every packet has a virtio_net_hdr in front; reads may be 64 KiB TCP super-segments
    or carry partial checksums). ``tso=False`` keeps the header but asks for no offloads:
    reads are then whole, checksummed packets the kernel cut (in C), while writes may
    still be GSO super-segments (the kernel takes those whatever the offload flags say).
    Raises :class:`DatapathError` naming the
    device when ``/dev/net/tun`` is missing (mount it into the container), when the
    process lacks CAP_NET_ADMIN, or when a device of that name exists and is not a TUN
    device this process may attach to.
    """
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or " " in name:
        raise DatapathError(f"TUN device name {name!r} is not a valid interface name")
    if queues < 1:
        raise DatapathError(f"TUN device {name}: queues must be at least 1, got {queues}")
    flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if queues > 1 else 0)
    if offload:
        flags |= IFF_VNET_HDR
    device = TunDevice(name, vnet_hdr=offload)
    try:
        for _ in range(queues):
            offloads = TCP_OFFLOADS if offload and tso else 0
            device.fds.append(_attach_queue(name, flags, offloads))
    except FileNotFoundError:
        device.close()
        raise DatapathError(
            f"TUN device {name}: {TUN_CLONE_DEVICE} does not exist; "
            "make the TUN character device available to the sidecar"
        ) from None
    except OSError as exc:
        device.close()
        if exc.errno == errno.EPERM:
            raise DatapathError(
                f"TUN device {name}: creating it needs CAP_NET_ADMIN in the pod's namespace"
            ) from None
        raise DatapathError(f"TUN device {name}: {os.strerror(exc.errno or 0)}") from None
    return device
