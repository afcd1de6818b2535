"""Can this kernel carry kipsec's ESP traffic? The capability probe behind ``datapath: auto``.

The only reliable answer is the kernel's own: the probe adds throwaway ESP states in the
current network namespace and deletes them at once. Loaded modules, ``/proc/crypto``
and kernel configs all lie in one case or another (modules load on demand, containers
see the host's ``/proc``). The states use documentation addresses (RFC 5737
192.0.2.0/24), a random SPI, kipsec's owner mark and a reqid inside kipsec's range, so
no packet can match them and a crash between add and delete leaves something the next
start's cleanup removes.

Two states are tried: AES-CBC + HMAC-SHA2-256 (tells whether the ESP type exists at
all) and AES-GCM-16 (kipsec's default suite). Both must succeed for the kernel datapath.

The messages are packed by :mod:`.xfrm_wire` and sent with :mod:`.netlink`, not with
:mod:`.xfrm`: a node whose kernel refuses ESP runs the userspace datapath, which would
otherwise hold pyroute2 (~13 MiB) for its whole life only to have asked this question.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import platform
import secrets
from typing import NamedTuple

from .netlink import NetlinkError
from .xfrm_sa import (
    DEFAULT_OWNER_MASK,
    REQID_RANGE,
    XfrmAlgorithm,
    XfrmMode,
    XfrmProto,
    XfrmSelector,
    XfrmStateSpec,
    owner_mark,
)
from .xfrm_wire import DEFAULT_TIMEOUT, XfrmNetlink

log = logging.getLogger(__name__)

_PROBE_SRC = ipaddress.IPv4Address("192.0.2.1")
_PROBE_DST = ipaddress.IPv4Address("192.0.2.2")
#: The reqid of probe states: the last of kipsec's range, never given to a peer.
PROBE_REQID = REQID_RANGE[-1]


class ProbeResult(NamedTuple):
    """The probe's verdict; unpacks as ``(kernel, reason)``. ``reason`` is one line for the
    log and the datapath metric's label help."""

    kernel: bool
    reason: str


def _probe_states(owner_mask: int) -> list[XfrmStateSpec]:
    mark = owner_mark(owner_mask)
    common = {
        "src": _PROBE_SRC,
        "dst": _PROBE_DST,
        "proto": XfrmProto.ESP,
        "mode": XfrmMode.TRANSPORT,
        "reqid": PROBE_REQID,
        "mark": mark,
        "selector": XfrmSelector.any(4),
    }
    # Keys are random and thrown away with the state: the probe never carries traffic.
    cbc = XfrmStateSpec(
        spi=_random_spi(),
        crypt=XfrmAlgorithm("cbc(aes)", secrets.token_bytes(16)),
        auth=XfrmAlgorithm("hmac(sha256)", secrets.token_bytes(32), 128),
        **common,  # type: ignore[arg-type]
    )
    gcm = XfrmStateSpec(
        spi=_random_spi(),
        aead=XfrmAlgorithm("rfc4106(gcm(aes))", secrets.token_bytes(36), 128),
        **common,  # type: ignore[arg-type]
    )
    return [cbc, gcm]


def _random_spi() -> int:
    return 0x100 + secrets.randbelow(0xFFFFFFFF - 0x100)


def _module_hint() -> str:
    if os.path.isdir("/sys/module/esp4"):
        return ""
    release = platform.release()
    if not os.path.isdir(f"/lib/modules/{release}"):
        return f"; the esp4 module is not available (no /lib/modules/{release})"
    return "; the esp4 module is not loaded"


def probe_kernel_esp(
    *,
    netns: str | None = None,
    owner_mask: int = DEFAULT_OWNER_MASK,
    timeout: float = DEFAULT_TIMEOUT,
) -> ProbeResult:
    """Try the kernel: ``ProbeResult(True, …)`` if it accepts kipsec's ESP states here.

    Never raises for a kernel answer: every refusal becomes ``kernel=False`` with the
    errno name and the kernel's explanation in ``reason``. ``netns`` runs the probe in
    a named namespace (tests); the sidecar probes its own.
    """
    try:
        sock = XfrmNetlink(netns=netns, timeout=timeout)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return ProbeResult(False, f"no XFRM netlink socket: {name} ({exc.strerror})")
    with sock:
        for spec in _probe_states(owner_mask):
            alg = (spec.aead or spec.crypt or spec.auth or XfrmAlgorithm("?", b"")).name
            try:
                sock.new_sa(spec)
            except TimeoutError:
                return ProbeResult(False, f"kernel did not answer an ESP SA ({alg}) in {timeout}s")
            except NetlinkError as exc:
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                hint = ""
                if exc.errno in (errno.EPROTONOSUPPORT, errno.ENOSYS):
                    hint = _module_hint()
                elif exc.errno == errno.EPERM:
                    hint = "; the sidecar needs CAP_NET_ADMIN"
                detail = exc.kernel_message or os.strerror(exc.errno or 0)
                reason = f"kernel refused ESP SA ({alg}): {name} ({detail}){hint}"
                log.info("kernel datapath probe failed", extra={"reason": reason})
                return ProbeResult(False, reason)
            try:
                sock.delete_sa(spec.dst, spec.spi, spec.proto, spec.mark)
            except NetlinkError as exc:
                # The probe state stays until the next start's cleanup: say so, loudly.
                log.warning(
                    "could not delete the probe SA",
                    extra={"spi": f"{spec.spi:#010x}", "error": str(exc)},
                )
    return ProbeResult(True, "kernel accepted ESP SAs (cbc(aes)+hmac(sha256), rfc4106(gcm(aes)))")
