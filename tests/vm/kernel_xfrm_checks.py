"""Kernel XFRM checks run inside the test VM (a kernel with ESP/AH): one boot, many checks.

Not a pytest module: ``tests/vm/test_kernel_xfrm.py`` boots the VM once and runs this
script there (``python kernel_xfrm_checks.py``); it prints one JSON document between
:data:`BEGIN` and :data:`END` lines::

    {"checks": {"<name>": {"ok": bool, "detail": str}},
     "fixtures": {"<name>": ["<hex of one datagram>", ...]}, "seconds": float, "kernel": str}

Every scenario builds its SAs from the cores' ``IpsecSa`` and the daemon's
``PeerPolicy`` through ``datapath.xfrm_sa`` and installs them with ``XfrmSocket`` in
two node namespaces of a ``support.netns.Topology``; the wire between the nodes is
captured. ``fixtures`` are raw kernel replies, saved by the host-side test for the unit
tests of the codec. A check that raises is recorded as failed with its traceback and
the next one runs; the topology is deleted at the end whatever happened.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(REPO / "sidecar"), str(REPO / "lab"), str(REPO / "tests")]

from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId  # noqa: E402
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Lifetime, Mode  # noqa: E402
from kipsec_sidecar.core.traffic_selectors import TrafficSelector  # noqa: E402
from kipsec_sidecar.datapath.base import Encapsulation, PeerPolicy  # noqa: E402
from kipsec_sidecar.datapath.probe import probe_kernel_esp  # noqa: E402
from kipsec_sidecar.datapath.xfrm import (  # noqa: E402
    XfrmAcquire,
    XfrmExpire,
    XfrmGroup,
    XfrmSocket,
    decode,
)
from kipsec_sidecar.datapath.xfrm_sa import (  # noqa: E402
    DEFAULT_OWNER_MASK,
    REQID_RANGE,
    SaKeys,
    XfrmDir,
    XfrmEncap,
    XfrmProto,
    XfrmSelector,
    owner_mark,
    peer_policies,
    state_spec,
)
from support.capture import Capture  # noqa: E402
from support.netns import WIRE, WIRE_BRIDGE, Topology  # noqa: E402

BEGIN = "=====KIPSEC-VM-RESULT-BEGIN====="
END = "=====KIPSEC-VM-RESULT-END====="
SOL_UDP = 17
UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2
PINGS = 5
#: Software emulation: the first state of an algorithm loads and self-tests crypto.
TIMEOUT = 60.0

checks: dict[str, dict[str, Any]] = {}
fixtures: dict[str, list[str]] = {}


def check(name: str, ok: bool, detail: str = "") -> None:
    checks[name] = {"ok": bool(ok), "detail": detail}


def recorder(name: str) -> Callable[[bytes], None]:
    def record(data: bytes) -> None:
        fixtures.setdefault(name, []).append(data.hex())

    return record


class Peer:
    """One node's view: its namespace, its XFRM socket, its address."""

    def __init__(self, topo: Topology, name: str) -> None:
        self.name = name
        self.ns = topo.namespace(name)
        self.addr = ipaddress.ip_address(topo.address(name))
        self.node = topo.node(name)
        self.xfrm = XfrmSocket(netns=self.ns, timeout=TIMEOUT)

    def flush(self) -> tuple[int, int]:
        return self.xfrm.flush_owned(DEFAULT_OWNER_MASK, REQID_RANGE)


def make_sa(
    spi: int, src: Any, dst: Any, protocol: ProtocolId, mode: Mode, suite: str, **kw: Any
) -> tuple[IpsecSa, SaKeys]:
    if suite == "gcm":
        keys = SaKeys(encr_key=os.urandom(36))
        sa = IpsecSa(
            spi=spi,
            src=src,
            dst=dst,
            protocol=protocol,
            mode=mode,
            encr_id=EncrId.AES_GCM_16,
            encr_key=keys.encr_key,
            **kw,
        )
    elif suite == "chacha":
        keys = SaKeys(encr_key=os.urandom(36))
        sa = IpsecSa(
            spi=spi,
            src=src,
            dst=dst,
            protocol=protocol,
            mode=mode,
            encr_id=EncrId.CHACHA20_POLY1305,
            encr_key=keys.encr_key,
            **kw,
        )
    elif suite == "cbc":
        keys = SaKeys(encr_key=os.urandom(32), integ_key=os.urandom(32))
        sa = IpsecSa(
            spi=spi,
            src=src,
            dst=dst,
            protocol=protocol,
            mode=mode,
            encr_id=EncrId.AES_CBC,
            encr_key=keys.encr_key,
            integ_id=IntegId.HMAC_SHA2_256_128,
            integ_key=keys.integ_key,
            **kw,
        )
    elif suite == "ah":
        keys = SaKeys(integ_key=os.urandom(32))
        sa = IpsecSa(
            spi=spi,
            src=src,
            dst=dst,
            protocol=protocol,
            mode=mode,
            integ_id=IntegId.HMAC_SHA2_256_128,
            integ_key=keys.integ_key,
            **kw,
        )
    else:
        raise ValueError(suite)
    return sa, keys


def encap_socket(peer: Peer) -> socket.socket:
    """The UDP 4500 socket with UDP_ENCAP set: the kernel's ESP-in-UDP receive hook."""
    from pyroute2.netns import create_socket

    sock = create_socket(netns=peer.ns, family=socket.AF_INET, socket_type=socket.SOCK_DGRAM)
    sock.setsockopt(SOL_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)
    sock.bind(("0.0.0.0", 4500))
    return sock  # type: ignore[no-any-return]  # pyroute2 is untyped


def ip_xfrm(peer: Peer, what: str) -> str:
    out = subprocess.run(
        ["ip", "-n", peer.ns, "xfrm", what, "list"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return out.stdout


def entries(text: str) -> list[str]:
    """``ip xfrm`` output split into entries (each starts with a "src" line)."""
    blocks: list[str] = []
    for line in text.splitlines():
        if line.startswith("src "):
            blocks.append(line)
        elif blocks:
            blocks[-1] += "\n" + line
    return blocks


def scenario(
    topo: Topology,
    a: Peer,
    b: Peer,
    name: str,
    *,
    protocol: ProtocolId,
    mode: Mode,
    suite: str,
    udp: bool = False,
    esn: bool = False,
    spi_base: int,
    reqid: int,
) -> None:
    """Install one bidirectional link a<->b, ping across, check listings, stats, wire."""
    mark = owner_mark()
    if mode == Mode.TUNNEL:
        a_ts = (TrafficSelector.from_network(a.node.pod_cidr),)
        b_ts = (TrafficSelector.from_network(b.node.pod_cidr),)
        ping_from, ping_to = "pa", topo.address("pb")
    else:
        a_ts = (TrafficSelector.host(a.addr),)
        b_ts = (TrafficSelector.host(b.addr),)
        ping_from, ping_to = "a", str(b.addr)
    encapsulation: Encapsulation = "udp" if udp else "raw"
    forward = mode == Mode.TUNNEL
    pol_a = PeerPolicy("b", b.addr, a_ts, b_ts, mode.value, protocol, encapsulation)
    pol_b = PeerPolicy("a", a.addr, b_ts, a_ts, mode.value, protocol, encapsulation)
    spi_ab, spi_ba = spi_base, spi_base + 1
    kw: dict[str, Any] = {"udp_encap": udp, "esn": esn}
    sa_ab, keys_ab = make_sa(spi_ab, a.addr, b.addr, protocol, mode, suite, **kw)
    sa_ba, keys_ba = make_sa(spi_ba, b.addr, a.addr, protocol, mode, suite, **kw)
    encap = XfrmEncap(4500, 4500) if udp else None
    sockets = [encap_socket(a), encap_socket(b)] if udp else []
    try:
        for peer, out_sa, out_keys, in_sa, in_keys, pol in (
            (a, sa_ab, keys_ab, sa_ba, keys_ba, pol_a),
            (b, sa_ba, keys_ba, sa_ab, keys_ab, pol_b),
        ):
            peer.xfrm.new_sa(state_spec(out_sa, out_keys, reqid=reqid, mark=mark, encap=encap))
            peer.xfrm.new_sa(state_spec(in_sa, in_keys, reqid=reqid, mark=mark, encap=encap))
            for spec in peer_policies(
                pol, local_addr=peer.addr, reqid=reqid, mark=mark, forward=forward
            ):
                peer.xfrm.new_policy(spec)
        with tempfile.TemporaryDirectory() as tmp:
            with Capture(topo, WIRE, WIRE_BRIDGE, Path(tmp) / "wire.pcap") as cap:
                ping = topo.run(
                    ping_from,
                    "ping",
                    "-n",
                    "-q",
                    "-i",
                    "0.2",
                    "-c",
                    str(PINGS),
                    "-w",
                    "8",
                    ping_to,
                    check=False,
                    timeout=15,
                )
            summary = cap.summary
        check(f"{name}/ping", ping.returncode == 0, ping.stdout[-300:] + ping.stderr[-300:])
        kind = "ah" if protocol == ProtocolId.AH else ("esp-in-udp" if udp else "esp")
        carried = len(summary.of_kind(kind))
        plain = len(summary.of_kind("icmp"))
        check(
            f"{name}/wire",
            carried >= 2 * PINGS and plain == 0,
            f"{kind}={carried} icmp={plain}\n{summary.describe()}",
        )
        proto = XfrmProto.AH if protocol == ProtocolId.AH else XfrmProto.ESP
        out_a = a.xfrm.get_sa(b.addr, spi_ab, proto, mark)
        in_b = b.xfrm.get_sa(b.addr, spi_ab, proto, mark)
        check(
            f"{name}/stats",
            out_a.packets >= PINGS
            and in_b.packets >= PINGS
            and in_b.integrity_errors == 0
            and in_b.replay_errors == 0,
            f"out_a={out_a} in_b={in_b}",
        )
        for peer, spis in ((a, (spi_ab, spi_ba)), (b, (spi_ab, spi_ba))):
            states = entries(ip_xfrm(peer, "state"))
            ok = len(states) == 2 and all(
                any(f"spi {spi:#010x}" in s for s in states) for spi in spis
            )
            if udp:
                ok = ok and all("encap type espinudp sport 4500 dport 4500" in s for s in states)
            if esn:
                ok = ok and all("esn" in s for s in states)
            check(f"{name}/ip-xfrm-state-{peer.name}", ok, "\n".join(states))
            policies = [p for p in entries(ip_xfrm(peer, "policy")) if "socket" not in p]
            dirs = sorted(
                line.split()[1]
                for p in policies
                for line in p.splitlines()
                if line.strip().startswith("dir ")
            )
            expected = ["fwd", "in", "out"] if forward else ["in", "out"]
            check(
                f"{name}/ip-xfrm-policy-{peer.name}",
                dirs == expected and all(f"reqid {reqid}" in p for p in policies),
                "\n".join(policies),
            )
    finally:
        for sock in sockets:
            sock.close()
        for peer in (a, b):
            n_states, n_pols = peer.flush()
            left = entries(ip_xfrm(peer, "state")) + entries(ip_xfrm(peer, "policy"))
            check(
                f"{name}/flush-{peer.name}",
                not left and n_states == 2,
                f"states={n_states} policies={n_pols} left={left}",
            )


def acquire_check(topo: Topology, a: Peer, b: Peer) -> None:
    """Traffic hitting a policy without a state makes the kernel send ACQUIRE."""
    mark = owner_mark()
    reqid = REQID_RANGE[50]
    pol = PeerPolicy(
        "b",
        b.addr,
        (TrafficSelector.host(a.addr),),
        (TrafficSelector.host(b.addr),),
        "transport",
        ProtocolId.ESP,
        "raw",
    )
    with XfrmSocket(
        netns=a.ns, groups=XfrmGroup.ACQUIRE | XfrmGroup.EXPIRE, recorder=recorder("acquire")
    ) as events:
        for spec in peer_policies(pol, local_addr=a.addr, reqid=reqid, mark=mark):
            a.xfrm.new_policy(spec)
        ping = topo.run(
            "a", "ping", "-n", "-q", "-c", "1", "-w", "1", str(b.addr), check=False, timeout=5
        )
        got = events.read_events(timeout=3.0)
    acquires = [e for e in got if isinstance(e, XfrmAcquire)]
    check(
        "acquire/received",
        bool(acquires)
        and acquires[0].dst == str(b.addr)
        and acquires[0].src == str(a.addr)
        and acquires[0].proto == 50,
        f"events={got}",
    )
    check("acquire/fail-closed", ping.returncode != 0, ping.stdout[-200:])
    a.flush()


def expire_check(a: Peer, b: Peer) -> None:
    """A state with 1 s soft / 2 s hard add-lifetimes produces soft then hard EXPIRE."""
    mark = owner_mark()
    sa, keys = make_sa(0x7E570001, a.addr, b.addr, ProtocolId.ESP, Mode.TRANSPORT, "gcm")
    spec = state_spec(sa, keys, reqid=REQID_RANGE[60], mark=mark, lifetime_seconds=(1, 2))
    with XfrmSocket(netns=a.ns, groups=XfrmGroup.EXPIRE, recorder=recorder("expire")) as ev:
        a.xfrm.new_sa(spec)
        got: list[Any] = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not any(
            isinstance(e, XfrmExpire) and e.hard for e in got
        ):
            got += ev.read_events(timeout=0.5)
    expires = [e for e in got if isinstance(e, XfrmExpire) and e.spi == 0x7E570001]
    check("expire/soft-then-hard", [e.hard for e in expires] == [False, True], f"events={got}")
    a.flush()


def allocspi_check(a: Peer, b: Peer) -> None:
    """ALLOCSPI reserves an SPI as a larval state; UPDSA completes it; GETSA finds it."""
    mark = owner_mark()
    sa, keys = make_sa(0x100, b.addr, a.addr, ProtocolId.ESP, Mode.TRANSPORT, "gcm")
    spec = state_spec(sa, keys, reqid=REQID_RANGE[70], mark=mark)
    spi = a.xfrm.allocspi(spec, 0xC0000000, 0xC0FFFFFF)
    sa2, _ = make_sa(spi, b.addr, a.addr, ProtocolId.ESP, Mode.TRANSPORT, "gcm")
    a.xfrm.update_sa(state_spec(sa2, keys, reqid=REQID_RANGE[70], mark=mark))
    a.xfrm.recorder = recorder("getsa_reply")
    got = a.xfrm.get_sa(a.addr, spi, XfrmProto.ESP, mark)
    a.xfrm.recorder = None
    check(
        "allocspi/range-and-update",
        0xC0000000 <= spi <= 0xC0FFFFFF
        and got.algorithms == ("rfc4106(gcm(aes))",)
        and got.reqid == REQID_RANGE[70],
        f"spi={spi:#x} state={got}",
    )
    a.flush()


def dump_fixtures(a: Peer, b: Peer) -> None:
    """Record a policy dump and a CBC+HMAC / UDP-encap / ESN state dump for the unit tests."""
    mark = owner_mark()
    sa, keys = make_sa(
        0x0C0C0001,
        a.addr,
        b.addr,
        ProtocolId.ESP,
        Mode.TUNNEL,
        "cbc",
        udp_encap=True,
        esn=True,
        lifetime=Lifetime(soft_bytes=1 << 20, hard_bytes=1 << 21),
    )
    a.xfrm.new_sa(
        state_spec(sa, keys, reqid=REQID_RANGE[80], mark=mark, encap=XfrmEncap(4500, 4501))
    )
    pol = PeerPolicy(
        "b",
        b.addr,
        (TrafficSelector.from_network("10.10.1.0/24"),),
        (TrafficSelector.from_network("10.10.2.0/24", 6, 443, 443),),
        "tunnel",
        ProtocolId.ESP,
        "udp",
    )
    for spec in peer_policies(pol, local_addr=a.addr, reqid=REQID_RANGE[80], mark=mark):
        a.xfrm.new_policy(spec)
    a.xfrm.recorder = recorder("dump_states")
    states = a.xfrm.states()
    a.xfrm.recorder = recorder("dump_policies")
    pols = a.xfrm.policies()
    a.xfrm.recorder = None
    out = a.xfrm.get_policy(
        XfrmSelector(
            ipaddress.ip_network("10.10.1.0/24"),
            ipaddress.ip_network("10.10.2.0/24"),
            6,
            0,
            0,
            443,
            0xFFFF,
        ),
        XfrmDir.OUT,
        mark,
    )
    states = [s for s in states if s.spi != 0]  # minus the ACQUIRE check's larval state
    check(
        "dump/decoded",
        len(states) == 1
        and states[0].encap == (2, 4500, 4501)
        and states[0].esn
        and len(pols) == 2
        and out.templates[0][4] == REQID_RANGE[80],
        f"states={states} policies={pols}",
    )
    # The kernel's refusal of a bad algorithm, with its extended-ack text.
    bad = state_spec(sa, keys, reqid=REQID_RANGE[80], mark=mark, encap=XfrmEncap(4500, 4501))
    import dataclasses

    from kipsec_sidecar.datapath.xfrm_sa import XfrmAlgorithm

    bad = dataclasses.replace(
        bad, spi=0x0C0C0002, crypt=XfrmAlgorithm("cbc(nonexistent)", b"k" * 16)
    )
    a.xfrm.recorder = recorder("error_ext_ack")
    try:
        a.xfrm.new_sa(bad)
        check("error/ext-ack", False, "kernel accepted an unknown algorithm")
    except OSError as exc:
        check("error/ext-ack", "ENOSYS" in str(exc) and "not found" in str(exc), str(exc))
    a.xfrm.recorder = None
    a.flush()
    # The host must not see a policy or state left behind by the dump fixtures.
    left = [s for s in a.xfrm.states() if s.spi != 0]
    check("dump/flushed", not left and not a.xfrm.policies(), f"left={left}")
    _ = decode  # the codec entry point the unit tests use on these fixtures


def main() -> None:
    started = time.monotonic()
    modules = [
        "esp4",
        "ah4",
        "esp6",
        "ah6",
        "xfrm_user",
        "xfrm4_tunnel",
        "tunnel4",
        "gcm",
        "chacha20poly1305",
        "cbc",
        "authenc",
        "authencesn",
        "seqiv",
        "echainiv",
    ]
    subprocess.run(["modprobe", "-a", *modules], check=False, timeout=60)
    try:
        with Topology(prefix="kvm") as topo:
            topo.add_node("a")
            topo.add_node("b")
            topo.add_pod("pa", "a")
            topo.add_pod("pb", "b")
            a, b = Peer(topo, "a"), Peer(topo, "b")
            ok, reason = probe_kernel_esp(netns=a.ns, timeout=TIMEOUT)
            check("probe/kernel", ok, reason)
            check("probe/left-nothing", not a.xfrm.states(), "")
            steps: list[tuple[str, Callable[[], None]]] = [
                (
                    "esp-tunnel-gcm",
                    lambda: scenario(
                        topo,
                        a,
                        b,
                        "esp-tunnel-gcm",
                        protocol=ProtocolId.ESP,
                        mode=Mode.TUNNEL,
                        suite="gcm",
                        spi_base=0x10000010,
                        reqid=REQID_RANGE[1],
                    ),
                ),
                (
                    "esp-transport-chacha",
                    lambda: scenario(
                        topo,
                        a,
                        b,
                        "esp-transport-chacha",
                        protocol=ProtocolId.ESP,
                        mode=Mode.TRANSPORT,
                        suite="chacha",
                        spi_base=0x10000020,
                        reqid=REQID_RANGE[2],
                    ),
                ),
                (
                    "esp-tunnel-cbc",
                    lambda: scenario(
                        topo,
                        a,
                        b,
                        "esp-tunnel-cbc",
                        protocol=ProtocolId.ESP,
                        mode=Mode.TUNNEL,
                        suite="cbc",
                        spi_base=0x10000030,
                        reqid=REQID_RANGE[3],
                    ),
                ),
                (
                    "esp-tunnel-gcm-udp",
                    lambda: scenario(
                        topo,
                        a,
                        b,
                        "esp-tunnel-gcm-udp",
                        protocol=ProtocolId.ESP,
                        mode=Mode.TUNNEL,
                        suite="gcm",
                        udp=True,
                        spi_base=0x10000040,
                        reqid=REQID_RANGE[4],
                    ),
                ),
                (
                    "esp-transport-gcm-esn",
                    lambda: scenario(
                        topo,
                        a,
                        b,
                        "esp-transport-gcm-esn",
                        protocol=ProtocolId.ESP,
                        mode=Mode.TRANSPORT,
                        suite="gcm",
                        esn=True,
                        spi_base=0x10000050,
                        reqid=REQID_RANGE[5],
                    ),
                ),
                (
                    "ah-tunnel",
                    lambda: scenario(
                        topo,
                        a,
                        b,
                        "ah-tunnel",
                        protocol=ProtocolId.AH,
                        mode=Mode.TUNNEL,
                        suite="ah",
                        spi_base=0x10000060,
                        reqid=REQID_RANGE[6],
                    ),
                ),
                (
                    "ah-transport",
                    lambda: scenario(
                        topo,
                        a,
                        b,
                        "ah-transport",
                        protocol=ProtocolId.AH,
                        mode=Mode.TRANSPORT,
                        suite="ah",
                        spi_base=0x10000070,
                        reqid=REQID_RANGE[7],
                    ),
                ),
                ("acquire", lambda: acquire_check(topo, a, b)),
                ("expire", lambda: expire_check(a, b)),
                ("allocspi", lambda: allocspi_check(a, b)),
                ("dump", lambda: dump_fixtures(a, b)),
            ]
            for name, step in steps:
                print(f"kipsec-vm: {name} at {time.monotonic() - started:.1f}s", flush=True)
                try:
                    step()
                except Exception:
                    check(f"{name}/ran", False, traceback.format_exc())
                    for peer in (a, b):
                        with contextlib.suppress(Exception):
                            peer.flush()
            a.xfrm.close()
            b.xfrm.close()
    except Exception:
        check("topology/ran", False, traceback.format_exc())
    result = {
        "checks": checks,
        "fixtures": fixtures,
        "seconds": time.monotonic() - started,
        "kernel": os.uname().release,
    }
    print(BEGIN)
    print(json.dumps(result))
    print(END, flush=True)


if __name__ == "__main__":
    main()
