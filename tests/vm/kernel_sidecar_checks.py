"""Two ``kipsec-sidecar run`` daemons on the kernel datapath, checked inside the test VM.

Not a pytest module: ``tests/vm/test_kernel_sidecars.py`` boots the VM once and runs this
script, which prints ``{"checks": {...}}`` between the result markers (like the other
``*_checks.py`` scripts). One topology (nodes a and b, pod pa behind a, pod pb behind
b); the sidecars run in the pods, and several configurations follow each other:

- ``esp-tunnel-udp``: ESP, tunnel mode, ESP in UDP 4500; pa says ``datapath: auto``
  (the probe must pick the kernel), pb says ``kernel``. Traffic both ways, ``ip xfrm``
  shows exactly the expected states and policies, a capture decrypted by scapy with the
  keys read back from the kernel (``ip xfrm state`` prints them) holds what was sent, a
  child rekey (``kipsec-sidecar rekey --child``) under a UDP stream and a ping loses
  nothing, and SIGTERM leaves no state or policy behind.
- ``esp-transport-raw``: ESP, transport mode, raw IP protocol 50. (AH on the kernel
  datapath: ``kernel_interop_checks.py`` against the userspace datapath and charon,
  ``kernel_xfrm_checks.py`` kernel to kernel.)
- ``on-demand``: pb's peer is onDemand; after pa ends the SAs, pb's traffic brings them
  back (kernel ACQUIRE → the daemon initiates).
- ``crash``: a SIGKILLed sidecar leaves its states; the next start removes them.
- ``mixed``: a kernel-datapath sidecar against a userspace-datapath one.

The kernel datapath against strongSwan's charon (and AH against the userspace datapath)
is ``kernel_interop_checks.py``'s.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(REPO / "sidecar"), str(REPO / "lab"), str(REPO / "tests")]

import support.sidecars as sidecars_module  # noqa: E402
from support.capture import Capture, CapturedPacket  # noqa: E402
from support.netns import WIRE, WIRE_BRIDGE, Topology  # noqa: E402
from support.sidecars import MARKER, Sidecar, peer_entry, wait_until  # noqa: E402

BEGIN = "=====KIPSEC-VM-RESULT-BEGIN====="
END = "=====KIPSEC-VM-RESULT-END====="
#: Software emulation makes every Python start slow: give the daemons time to come up.
START_TIMEOUT = 150.0
UP_TIMEOUT = 90.0
STOP_GRACE = 30.0
OWNER_MARK = "0x800000"

checks: dict[str, dict[str, Any]] = {}


def check(name: str, ok: bool, detail: object = "") -> None:
    checks[name] = {"ok": bool(ok), "detail": str(detail)[-6000:]}


@contextmanager
def checking(name: str) -> Iterator[None]:
    """Record an exception in the body as a failed ``<name>/ran`` check and go on."""
    try:
        yield
    except Exception:
        check(f"{name}/ran", False, traceback.format_exc())


# ------------------------------------------------------------------ ip xfrm, parsed


@dataclass(frozen=True)
class State:
    src: str
    dst: str
    proto: str
    spi: int
    mode: str
    mark: str
    encap: str | None  #: "espinudp 4500 4500" or None
    aead_key: bytes | None
    text: str


@dataclass(frozen=True)
class Policy:
    src: str
    dst: str
    direction: str
    mark: str
    tmpl: str  #: "src X dst Y proto esp mode tunnel" or ""
    text: str


def _blocks(text: str) -> list[str]:
    blocks: list[str] = []
    for line in text.splitlines():
        if line.startswith("src "):
            blocks.append(line)
        elif blocks and line.startswith(("\t", " ")):
            blocks[-1] += "\n" + line
    return blocks


def xfrm_states(ns: str) -> list[State]:
    """The namespace's states with a real SPI (larval ACQUIRE states have SPI 0)."""
    out = subprocess.run(
        ["ip", "-n", ns, "xfrm", "state", "list"], capture_output=True, text=True, timeout=10
    ).stdout
    states = []
    for block in _blocks(out):
        head = re.match(r"src (\S+) dst (\S+)", block)
        body = re.search(r"proto (\w+) spi (0x[0-9a-f]+) reqid \d+ mode (\w+)", block)
        if head is None or body is None or int(body.group(2), 16) == 0:
            continue
        mark = re.search(r"mark (\S+)", block)
        encap = re.search(r"encap type (\w+) sport (\d+) dport (\d+)", block)
        aead = re.search(r"aead \S+ 0x([0-9a-f]+)", block)
        states.append(
            State(
                src=head.group(1),
                dst=head.group(2),
                proto=body.group(1),
                spi=int(body.group(2), 16),
                mode=body.group(3),
                mark=mark.group(1) if mark else "",
                encap=" ".join(encap.groups()) if encap else None,
                aead_key=bytes.fromhex(aead.group(1)) if aead else None,
                text=block,
            )
        )
    return states


def xfrm_policies(ns: str) -> list[Policy]:
    """The namespace's policies, without per-socket ones (the daemon's IKE bypass)."""
    out = subprocess.run(
        ["ip", "-n", ns, "xfrm", "policy", "list"], capture_output=True, text=True, timeout=10
    ).stdout
    policies = []
    for block in _blocks(out):
        head = re.match(r"src (\S+) dst (\S+)", block)
        direction = re.search(r"\n\s*dir (\w+)", block)
        if head is None or direction is None:
            continue  # "socket in/out" policies
        mark = re.search(r"mark (\S+)", block)
        tmpl = re.search(r"tmpl src (\S+) dst (\S+)\s+proto (\w+) .*?mode (\w+)", block, re.S)
        policies.append(
            Policy(
                src=head.group(1),
                dst=head.group(2),
                direction=direction.group(1),
                mark=mark.group(1) if mark else "",
                tmpl=" ".join(tmpl.groups()) if tmpl else "",
                text=block,
            )
        )
    return policies


def describe(ns: str) -> str:
    states = "\n".join(s.text for s in xfrm_states(ns))
    policies = "\n".join(p.text for p in xfrm_policies(ns))
    # Never print keys, even in a failed check's detail.
    return re.sub(r"0x[0-9a-f]{32,}", "0x<key>", f"{states}\n{policies}")


# ------------------------------------------------------------------ sidecars and traffic


def sidecar(
    topo: Topology, pod: str, workdir: Path, peers: list[dict[str, Any]], **doc: Any
) -> Sidecar:
    workdir.mkdir(parents=True, exist_ok=True)
    car = Sidecar(topo, pod, workdir)
    car.write(peers, **doc)
    return car


def start(*cars: Sidecar) -> None:
    """Start the sidecars side by side (each start waits for its control socket)."""
    with ThreadPoolExecutor(len(cars)) as pool:
        for future in [pool.submit(car.start) for car in cars]:
            future.result()


def settled(topo: Topology, *cars: tuple[Sidecar, str]) -> None:
    """Wait until each sidecar has exactly one installed child for its peer and the
    kernel exactly its two states (a duplicate IKE SA of a simultaneous start is gone)."""

    def one_each() -> bool:
        for car, peer in cars:
            children = car.installed(peer)
            if len(children) != 1:
                return False
            spis = {s.spi for s in xfrm_states(topo.namespace(car.pod))}
            if spis != set(child_spis(car, peer)):
                return False
        return True

    try:
        wait_until("one child SA and its two states per sidecar", one_each, 30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(*cars)}") from None


def diagnose(*cars: tuple[Sidecar, str]) -> str:
    """The sidecars' children, kernel entries and log tails, for a failed wait."""
    parts = []
    for car, peer in cars:
        try:
            children = [
                (c["spi_in"], c["spi_out"], c["state"], c["protocol"], c["mode"])
                for c in car.peer(peer)["children"]
            ]
        except Exception as exc:
            children = [("snapshot failed", str(exc), "", "", "")]
        parts.append(
            f"--- {car.pod}: children {children}\n{describe(car.topology.namespace(car.pod))}\n"
            + "\n".join(line for line in car.tail(80).splitlines() if "command=sas" not in line)
        )
    return "\n".join(parts)


def up(
    *cars: tuple[Sidecar, str], check_view: Callable[[dict[str, Any]], bool] | None = None
) -> None:
    """Wait until every (sidecar, peer) has an installed child (matching ``check_view``)."""

    def done() -> bool:
        for car, peer in cars:
            view = car.peer(peer)
            children = car.installed(peer)
            if view["state"] != "established" or not children:
                return False
            if check_view is not None and not all(check_view(c) for c in children):
                return False
        return True

    try:
        wait_until("child SAs installed", done, UP_TIMEOUT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(*cars)}") from None


#: Pod name → the address to use instead of the topology's (IPv6 scenarios).
Addresses = dict[str, str]


def ping(
    topo: Topology, src: str, dst: str, *, count: int = 2, addresses: Addresses | None = None
) -> str | None:
    """Ping with :data:`MARKER`'s first 16 bytes as the payload pattern; None when
    answered, else what went wrong. ``addresses`` maps pod names to other addresses."""
    target = (addresses or {}).get(dst) or topo.address(dst)
    result = topo.run(
        src,
        *("ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-w", "15"),
        *("-p", MARKER[:16].hex(), target),
        check=False,
        timeout=25,
    )
    return None if result.returncode == 0 else f"{src}->{target}: {result.stdout[-200:]}"


def two_way(prefix: str, topo: Topology, addresses: Addresses | None = None) -> None:
    """Pings in both directions; records ``<prefix>/traffic-both-ways``."""
    problems = [
        p
        for p in (
            ping(topo, "pa", "pb", addresses=addresses),
            ping(topo, "pb", "pa", addresses=addresses),
        )
        if p
    ]
    check(f"{prefix}/traffic-both-ways", not problems, "; ".join(problems))


def captured_two_way(
    prefix: str, topo: Topology, work: Path, kind: str, addresses: Addresses | None = None
) -> Capture:
    """:func:`two_way` under a capture of the node segment; ``<prefix>/wire-is-<kind>``:
    that kind was seen, nothing but IPsec and IKE was (IPv4: IPv6 neighbour discovery
    is not IPsec either), and (unless AH, which does not encrypt) the payload pattern
    never appeared in clear."""
    capture = Capture(topo, WIRE, WIRE_BRIDGE, work / f"{prefix}.pcap", start_timeout=30)
    with capture:
        two_way(prefix, topo, addresses)
    summary = capture.summary
    seen = summary.kinds[kind] + sum(1 for p in summary.of_kind("ipv6") if ipv6_kind(p) == kind)
    check(
        f"{prefix}/wire-is-{kind}",
        seen > 0
        and (kind == "ah" or not summary.contains(MARKER[:16]))
        and (addresses is not None or not summary.unexpected()),
        summary.describe(),
    )
    return capture


def ipv6_kind(packet: CapturedPacket) -> str:
    """The kind of an IPv6 frame (the capture's summary leaves them all ``ipv6``):
    ``esp``, ``ah``, ``esp-in-udp``, ``ike`` or ``other``."""
    from scapy.layers.inet import UDP
    from scapy.layers.l2 import Ether

    if packet.protocol in (50, 51):
        return "esp" if packet.protocol == 50 else "ah"
    frame = Ether(packet.data)
    if UDP not in frame:
        return "other"
    udp, payload = frame[UDP], bytes(frame[UDP].payload)
    if 500 in (udp.sport, udp.dport) or payload.startswith(bytes(4)):
        return "ike"
    return "esp-in-udp" if 4500 in (udp.sport, udp.dport) and len(payload) > 8 else "other"


def stop_clean(prefix: str, topo: Topology, *cars: Sidecar) -> None:
    """SIGTERM every sidecar: exit 0 and no state or policy left in its namespace.

    Each gets :data:`STOP_GRACE` seconds: under emulation the DELETE wait, the nftables
    and XFRM cleanup and the interpreter's exit take longer than on a real machine."""
    codes = {car.pod: car.stop(grace=STOP_GRACE) for car in cars}
    left = {car.pod: describe(topo.namespace(car.pod)).strip() for car in cars}
    check(
        f"{prefix}/sigterm-leaves-nothing",
        all(code == 0 for code in codes.values()) and not any(left.values()),
        f"exit codes {codes}; left {left}",
    )


def child_spis(car: Sidecar, peer: str) -> tuple[int, int]:
    child = car.installed(peer)[0]
    return int(child["spi_in"], 16), int(child["spi_out"], 16)


def kernel_entries(
    topo: Topology,
    car: Sidecar,
    peer: str,
    *,
    proto: str,
    mode: str,
    encap: bool,
    outer: tuple[str, str] | None = None,
    inner: tuple[str, str] | None = None,
) -> tuple[bool, bool, str]:
    """(states as expected, policies as expected, what the kernel has).

    Expected: exactly one inbound and one outbound state (the snapshot's SPIs) and the
    in/out policy pair between the two pod addresses, all with kipsec's owner mark.
    ``outer`` (local, remote) are the SA endpoints and ``inner`` the protected hosts
    when they are not the pods' IPv4 addresses (IPv6, 4-in-6).
    """
    ns = topo.namespace(car.pod)
    me, other = outer or (topo.address(car.pod), topo.address(peer))
    src_in, dst_in = inner or (me, other)
    spi_in, spi_out = child_spis(car, peer)
    states = xfrm_states(ns)
    got = {(s.src, s.dst, s.spi, s.proto, s.mode) for s in states}
    want = {(other, me, spi_in, proto, mode), (me, other, spi_out, proto, mode)}
    states_ok = (
        len(states) == 2
        and got == want
        and all(s.mark.endswith("/" + OWNER_MARK) for s in states)
        and {s.encap for s in states} == ({"espinudp 4500 4500"} if encap else {None})
    )
    policies = xfrm_policies(ns)
    got_p = {(p.src, p.dst, p.direction, p.tmpl) for p in policies}
    plen = 32 if ":" not in src_in else 128
    want_p = {
        (f"{src_in}/{plen}", f"{dst_in}/{plen}", "out", f"{me} {other} {proto} {mode}"),
        (f"{dst_in}/{plen}", f"{src_in}/{plen}", "in", f"{other} {me} {proto} {mode}"),
    }
    policies_ok = (
        len(policies) == 2
        and got_p == want_p
        and all(p.mark.endswith("/" + OWNER_MARK) for p in policies)
    )
    return states_ok, policies_ok, f"want {want}\n{want_p}\nkernel:\n{describe(ns)}"


def expect_kernel_entries(
    prefix: str,
    topo: Topology,
    car: Sidecar,
    peer: str,
    *,
    proto: str,
    mode: str,
    encap: bool,
    outer: tuple[str, str] | None = None,
    inner: tuple[str, str] | None = None,
) -> None:
    """``<prefix>/ip-xfrm-state`` and ``/ip-xfrm-policy`` (see :func:`kernel_entries`)."""
    states_ok, policies_ok, detail = kernel_entries(
        topo, car, peer, proto=proto, mode=mode, encap=encap, outer=outer, inner=inner
    )
    check(f"{prefix}/ip-xfrm-state", states_ok, detail)
    check(f"{prefix}/ip-xfrm-policy", policies_ok, detail)


def rekey_under_ping(
    prefix: str,
    topo: Topology,
    a: Sidecar,
    rekey: Callable[[], str] | None = None,
    *,
    size: int = 56,
    within: float = 30.0,
) -> None:
    """pa pings pb every 20 ms (``size`` bytes of payload) while ``rekey`` runs (default:
    ``kipsec-sidecar rekey pb --child``; it returns what to show) and until the old inbound
    state is gone, at most ``within`` s: no ping lost, new SPIs, only the new states."""
    before = child_spis(a, "pb")
    target = topo.address("pb")
    # A line per echo: into a file, since a pipe nobody reads would fill and stop ping.
    with tempfile.TemporaryFile() as output:
        pinger = topo.popen(
            "pa",
            ["ping", "-n", "-i", "0.02", "-s", str(size), "-c", "3000", "-W", "2", target],
            stdout=output,
        )
        try:
            time.sleep(1.0)
            shown = rekey() if rekey else a.cli("rekey", "pb", "--child", timeout=60).stdout

            def replaced() -> bool:
                spis = {s.spi for s in xfrm_states(topo.namespace("pa"))}
                return len(spis) == 2 and not spis & set(before)

            wait_until("only the new SAs in the kernel", replaced, within)
            time.sleep(1.0)
        finally:
            pinger.send_signal(signal.SIGINT)  # ping prints its statistics and exits
            pinger.wait(timeout=20)
        output.seek(0)
        summary = output.read().decode().strip()
    sent = re.search(r"(\d+) packets transmitted, (\d+) received", summary)
    transmitted = int(sent.group(1)) if sent else 0
    answered = {int(n) for n in re.findall(r"icmp_seq=(\d+) ", summary)}
    # SIGINT ends ping at once: the echo sent last may still be in flight then, which is
    # not a loss. Any other missing sequence number is.
    lost = sorted(set(range(1, transmitted)) - answered)
    check(
        f"{prefix}/rekey-no-loss",
        transmitted > 50 and not lost,
        f"{shown.strip()} | lost icmp_seq {lost[:20]} | {summary[-300:]}",
    )
    after = child_spis(a, "pb")
    spis = {s.spi for s in xfrm_states(topo.namespace("pa"))}
    check(
        f"{prefix}/rekey-new-states-only",
        not set(before) & set(after) and spis == set(after),
        f"before {before} after {after} kernel {spis}",
    )


def gcm_tunnel_sa(spi: int, key: bytes, src: str, dst: str) -> Any:
    """scapy's ESP SA for an AES-GCM tunnel-mode state (``key``: key and salt, as
    ``ip xfrm state`` prints them) between the outer addresses ``src`` and ``dst``."""
    from scapy.layers.inet import IP
    from scapy.layers.ipsec import ESP, SecurityAssociation

    return SecurityAssociation(  # type: ignore[no-untyped-call]
        ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=key, tunnel_header=IP(src=src, dst=dst)
    )


def decrypt_capture(prefix: str, topo: Topology, a: Sidecar, capture: Capture) -> None:
    """Decrypt pa → pb ESP in UDP from the capture with the key the kernel holds (test
    only: ``ip xfrm state`` prints it); the inner packets carry the ping pattern."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.ipsec import ESP
    from scapy.utils import rdpcap

    me, other = topo.address("pa"), topo.address("pb")
    _, spi_out = child_spis(a, "pb")
    state = next((s for s in xfrm_states(topo.namespace("pa")) if s.spi == spi_out), None)
    if state is None or state.aead_key is None:
        check(
            f"{prefix}/scapy-decrypts-capture",
            False,
            f"no AEAD state {spi_out:#010x}: {describe(topo.namespace('pa'))}",
        )
        return
    sa = gcm_tunnel_sa(spi_out, state.aead_key, me, other)
    found, decrypted = 0, 0
    for frame in rdpcap(str(capture.path)):
        if IP not in frame or UDP not in frame or frame[UDP].dport != 4500:
            continue
        payload = bytes(frame[UDP].payload)
        if len(payload) < 8 or int.from_bytes(payload[:4], "big") != spi_out:
            continue
        found += 1
        outer = IP(src=frame[IP].src, dst=frame[IP].dst, proto=50) / ESP(payload)
        inner = sa.decrypt(IP(bytes(outer)))
        if inner.src == me and inner.dst == other and MARKER[:16] in bytes(inner):
            decrypted += 1
    check(
        f"{prefix}/scapy-decrypts-capture",
        found > 0 and decrypted == found,
        f"{found} ESP-in-UDP packets on SPI {spi_out:#010x}, {decrypted} decrypted "
        "with the pattern inside",
    )


# ------------------------------------------------------------------ scenarios

#: Reconfigurations applied by reload to the running kernel pair: (name, peer options,
#: proto, mode, what the wire shows).
RELOADS = (
    ("esp-transport-raw", {"mode": "transport", "encapsulation": "raw"}, "esp", "transport", "esp"),
)


def kernel_pair(topo: Topology, work: Path, a: Sidecar, b: Sidecar) -> None:
    """ESP tunnel in UDP (pa ``auto``, pb ``kernel``) and a rekey under traffic, then each
    RELOADS configuration in turn (reloads through the control socket, no restart)."""
    prefix = "esp-tunnel-udp"
    a.write([peer_entry(topo, "pb")], datapath="auto")
    b.write([peer_entry(topo, "pa", start="onDemand")], datapath="kernel")
    start(a, b)
    up((a, "pb"), (b, "pa"))
    settled(topo, (a, "pb"), (b, "pa"))
    snap = a.sas()
    check(
        f"{prefix}/auto-chooses-kernel",
        snap["datapath"] == "kernel" and "accepted" in snap["datapath_reason"],
        f"{snap['datapath']}: {snap['datapath_reason']}",
    )
    capture = captured_two_way(prefix, topo, work, "esp-in-udp")
    decrypt_capture(prefix, topo, a, capture)
    expect_kernel_entries(prefix, topo, a, "pb", proto="esp", mode="tunnel", encap=True)
    rekey_under_ping(prefix, topo, a)

    for name, options, proto, mode, kind in RELOADS:
        with checking(name):
            wanted = (proto, mode)

            def reconfigured(child: dict[str, Any], wanted: tuple[str, str] = wanted) -> bool:
                return (child["protocol"], child["mode"]) == wanted

            def kernel_ok(proto: str = proto, mode: str = mode) -> bool:
                entries = kernel_entries(topo, a, "pb", proto=proto, mode=mode, encap=False)
                return entries[0] and entries[1]

            reload_pair(
                name,
                (a, [peer_entry(topo, "pb", **options)], {"datapath": "auto"}),
                (b, [peer_entry(topo, "pa", start="onDemand", **options)], {"datapath": "kernel"}),
                reconfigured,
            )
            wait_until(f"{name}: ip xfrm as expected", kernel_ok, 20)
            captured_two_way(name, topo, work, kind)
            expect_kernel_entries(name, topo, a, "pb", proto=proto, mode=mode, encap=False)


#: (sidecar, its peers, other top-level keys of its document) for :func:`reload_pair`.
Reconfiguration = tuple[Sidecar, list[dict[str, Any]], dict[str, Any]]


def reload_pair(
    name: str,
    initiator: Reconfiguration,
    responder: Reconfiguration,
    check_view: Callable[[dict[str, Any]], bool] | None = None,
    *,
    between: Callable[[], None] | None = None,
) -> None:
    """Move a running pair (pa initiating to pb, pb onDemand) to new documents.

    One side at a time, so neither answers with the old configuration: pa ends its SAs,
    (``between`` changes the topology then), pb reloads, then pa reloads and initiates
    with the new configuration; returns once both have exactly one child (matching
    ``check_view``) and its two kernel states.
    """
    (a, a_peers, a_doc), (b, b_peers, b_doc) = initiator, responder
    a.control("terminate", peer="pb")

    def idle() -> bool:
        return not a.peer("pb")["children"] and not b.peer("pa")["children"]

    wait_until(f"{name}: no child SA left", idle, 30)
    if between is not None:
        between()
    b.write(b_peers, **b_doc)
    b.control("reload")
    a.write(a_peers, **a_doc)
    a.control("reload")
    up((a, "pb"), (b, "pa"), check_view=check_view)
    settled(a.topology, (a, "pb"), (b, "pa"))


_FORGE = r"""
import socket, sys
sys.path[:0] = sys.argv[4].split(":")
from kipsec_sidecar.datapath.kernel import bypass_policies
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
bypass_policies(sock)
sock.sendto(bytes.fromhex(sys.argv[1]), (sys.argv[2], int(sys.argv[3])))
"""


def _counter(topo: Topology, pod: str, path: str, name: str) -> int:
    """A counter of /proc/net/xfrm_stat (``name value`` lines) or /proc/net/snmp (a
    header line and a value line per protocol, ``Proto:Field``) in ``pod``'s namespace."""
    text = topo.run(pod, "cat", path, check=False).stdout
    if ":" in name:
        proto, field = name.split(":")
        rows = [line.split() for line in text.splitlines() if line.startswith(proto + ":")]
        if len(rows) >= 2 and field in rows[0]:
            return int(rows[1][rows[0].index(field)])
        return -1
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return int(parts[1])
    return -1


def narrowed_selectors(topo: Topology, work: Path, a: Sidecar, b: Sidecar) -> None:
    """pa is configured for pb's whole /24, pb for its own address only: pb (responder)
    narrows the child to pb/32, so pa's policies cover more than was negotiated. pa's
    states carry the negotiated selectors: an ESP packet pb's SA carries from another
    address of that /24 — forged here with the SA's key (test only) — is decrypted but
    dropped by pa's kernel (XfrmInStateMismatch), while the same packet from pb's own
    address is delivered (RFC 4301 section 5.2)."""
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.ipsec import ESP

    me, other = topo.address("pa"), topo.address("pb")
    wide = str(ipaddress.ip_network(f"{other}/24", strict=False))
    stranger = str(ipaddress.ip_network(wide)[200])
    reload_pair(
        "narrowed",
        (a, [peer_entry(topo, "pb", trafficSelectors={"local": [me], "remote": [wide]})], {}),
        (b, [peer_entry(topo, "pa", start="onDemand")], {"datapath": "kernel"}),
    )
    ns = topo.namespace("pa")
    spi_in, _ = child_spis(a, "pb")
    state = next((x for x in xfrm_states(ns) if x.spi == spi_in), None)
    policy = [p for p in xfrm_policies(ns) if p.direction == "in"]
    sel = re.search(r"sel src (\S+) dst (\S+)", state.text) if state else None
    check(
        "narrowed/state-carries-negotiated-selectors",
        sel is not None
        and sel.groups() == (f"{other}/32", f"{me}/32")
        and [p.src for p in policy] == [wide],
        describe(ns),
    )
    if state is None or state.aead_key is None:
        check("narrowed/forged-outside-selectors-dropped", False, describe(ns))
        return
    sa = gcm_tunnel_sa(spi_in, state.aead_key, other, me)
    paths = str(Path(__file__).resolve().parents[2] / "sidecar")

    def send(source: str, seq: int) -> None:
        inner = IP(src=source, dst=me) / ICMP(type=8, id=0x4B50, seq=seq & 0xFFFF)
        inner = inner / b"KIPSEC-FORGED"
        esp = sa.encrypt(inner, seq_num=seq)
        outer = IP(src=other, dst=me) / UDP(sport=4500, dport=4500) / bytes(esp[ESP])
        # The import of the kernel datapath takes seconds under the VM's emulation.
        topo.run("pb", sys.executable, "-c", _FORGE, bytes(outer).hex(), me, "0", paths, timeout=60)
        time.sleep(0.5)

    mismatch = _counter(topo, "pa", "/proc/net/xfrm_stat", "XfrmInStateMismatch")
    echos = _counter(topo, "pa", "/proc/net/snmp", "Icmp:InEchos")
    send(other, 1 << 30)  # from inside the negotiated selectors: delivered
    echos_inside = _counter(topo, "pa", "/proc/net/snmp", "Icmp:InEchos")
    send(stranger, (1 << 30) + 1)  # from outside them: dropped after decryption
    after = (
        _counter(topo, "pa", "/proc/net/xfrm_stat", "XfrmInStateMismatch"),
        _counter(topo, "pa", "/proc/net/snmp", "Icmp:InEchos"),
    )
    check(
        "narrowed/forged-outside-selectors-dropped",
        echos_inside == echos + 1 and after == (mismatch + 1, echos_inside),
        f"InEchos {echos} -> {echos_inside} -> {after[1]}; "
        f"XfrmInStateMismatch {mismatch} -> {after[0]}",
    )


def on_demand(topo: Topology, work: Path, a: Sidecar, b: Sidecar) -> None:
    """pa ends its SAs; pb's peer is onDemand, so only traffic brings them back: the
    kernel drops pb's first packets (no SA), multicasts an ACQUIRE, and the daemon
    initiates (the datapath's acquire callback)."""
    a.control("terminate", peer="pb")
    wait_until(
        "no child SA left",
        lambda: not a.peer("pb")["children"] and not b.peer("pa")["children"],
        30,
    )
    problem = ping(topo, "pb", "pa", count=1)
    check(
        "acquire/initiates-on-demand",
        problem is None and "traffic for a peer without SA: initiating" in b.tail(200),
        problem or b.tail(10),
    )
    settled(topo, (a, "pb"), (b, "pa"))


def crash_and_mixed(topo: Topology, work: Path, a: Sidecar, b: Sidecar) -> None:
    """SIGKILL pa (its kernel entries stay), SIGTERM pb (it must leave nothing); restart
    pa on the kernel datapath, which removes the stale entries, and pb on the userspace
    datapath: the two datapaths agree on the wire."""
    old = set(child_spis(a, "pb"))
    a.kill()
    left = {s.spi for s in xfrm_states(topo.namespace("pa"))}
    check("crash/kill-leaves-state", left == old, f"left {left} old {old}")
    stop_clean("kernel-pb", topo, b)
    a.write([peer_entry(topo, "pb")], datapath="kernel")
    b.write([peer_entry(topo, "pa", start="onDemand")], datapath="userspace")
    start(a, b)
    up((a, "pb"), (b, "pa"))
    settled(topo, (a, "pb"))  # pb's SAs live in its process, not in the kernel
    spis = {s.spi for s in xfrm_states(topo.namespace("pa"))}
    check(
        "crash/restart-removes-stale",
        not spis & old and spis == set(child_spis(a, "pb")) and "stale" in a.tail(300),
        f"old {old} now {spis}",
    )
    check(
        "mixed/datapaths",
        a.sas()["datapath"] == "kernel" and b.sas()["datapath"] == "userspace",
        f"{a.sas()['datapath']} / {b.sas()['datapath']}",
    )
    captured_two_way("mixed", topo, work, "esp-in-udp")
    expect_kernel_entries("mixed", topo, a, "pb", proto="esp", mode="tunnel", encap=True)


def fail_closed_exit(topo: Topology, work: Path, a: Sidecar, b: Sidecar) -> None:
    """pa with ``failClosedOnExit`` (what the operator renders for pods): SIGTERM removes
    its states but leaves its policies, so pa's traffic to pb is dropped by pa's kernel
    while the sidecar is down, never sent in clear; the restarted pa takes the policies
    over. A reload without the setting lets the final stop leave nothing."""
    ns = topo.namespace("pa")
    a.write([peer_entry(topo, "pb")], datapath="kernel", failClosedOnExit=True)
    a.control("reload")
    before = sorted((p.src, p.dst, p.direction, p.tmpl) for p in xfrm_policies(ns))
    code = a.stop(grace=STOP_GRACE)
    left = sorted((p.src, p.dst, p.direction, p.tmpl) for p in xfrm_policies(ns))
    states = xfrm_states(ns)
    check(
        "fail-closed/sigterm-keeps-policies-not-keys",
        code == 0 and len(before) == 2 and left == before and not states,
        f"exit {code}; before {before}\n{describe(ns)}",
    )
    capture = Capture(topo, WIRE, WIRE_BRIDGE, work / "fail-closed.pcap", start_timeout=30)
    with capture:
        down = topo.run(
            "pa",
            *("ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-w", "3"),
            *("-p", MARKER[:16].hex(), topo.address("pb")),
            check=False,
            timeout=15,
        )
    summary = capture.summary
    stat = topo.run("pa", "cat", "/proc/net/xfrm_stat", check=False).stdout
    check(
        "fail-closed/nothing-in-clear-while-down",
        down.returncode != 0 and not summary.contains(MARKER[:16]),
        f"ping rc {down.returncode}; {summary.describe()}; {stat}",
    )
    logged = len(a.log.read_bytes())
    a.start()
    up((a, "pb"), (b, "pa"))
    settled(topo, (a, "pb"))
    expect_kernel_entries("fail-closed", topo, a, "pb", proto="esp", mode="tunnel", encap=True)
    two_way("fail-closed", topo)
    since = a.log.read_bytes()[logged:].decode(errors="replace")
    check(
        "fail-closed/restart-takes-over",  # replaced in place: nothing stale to remove
        "sidecar started" in since and "stale" not in since,
        since[-2000:],
    )
    a.write([peer_entry(topo, "pb")], datapath="kernel")
    a.control("reload")


def scenario(topo: Topology, work: Path) -> None:
    a = Sidecar(topo, "pa", work)
    b = Sidecar(topo, "pb", work)
    try:
        for name, step in (
            ("kernel-pair", kernel_pair),
            ("narrowed", narrowed_selectors),
            ("on-demand", on_demand),
            ("crash-and-mixed", crash_and_mixed),
            ("fail-closed", fail_closed_exit),
        ):
            with timed(name):
                step(topo, work, a, b)
    finally:
        stop_clean("kernel-pa", topo, a)
        b.stop()


def warm_up() -> None:
    """Load the modules, make the TUN device node (the userspace datapath needs it; the
    VM's /dev has none), run the crypto self-tests and load nftables once, before
    timing matters."""
    modules = ["esp4", "ah4", "esp6", "ah6", "xfrm_user", "gcm", "seqiv", "echainiv", "tun"]
    subprocess.run(["modprobe", "-a", *modules], check=False, timeout=60)
    if not os.path.exists("/dev/net/tun"):
        os.makedirs("/dev/net", exist_ok=True)
        subprocess.run(["mknod", "/dev/net/tun", "c", "10", "200"], check=False, timeout=10)
    key = "0x" + "11" * 36
    subprocess.run(
        "ip netns add kwarm && ip -n kwarm xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp "
        f"spi 0x100 mode tunnel aead 'rfc4106(gcm(aes))' {key} 128 && "
        "ip -n kwarm xfrm state add src 192.0.2.1 dst 192.0.2.2 proto ah spi 0x101 mode tunnel "
        f"auth-trunc 'hmac(sha256)' 0x{'22' * 32} 128; "
        # The daemons' first nft scripts (Service translation, MSS clamping, the NAT of
        # the lifecycle checks) would otherwise wait for nf_tables and nat to load.
        "printf 'table inet kwarm { chain o { type nat hook output priority -100; }; "
        "chain p { type nat hook postrouting priority 100; masquerade; }; "
        "chain f { type filter hook forward priority 0; ct state established accept; }; }' "
        "| ip netns exec kwarm nft -f -; ip netns del kwarm",
        shell=True,
        check=False,
        timeout=60,
    )


timings: dict[str, float] = {}


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Record the body's duration in :data:`timings` (seconds), whatever it raised."""
    began = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(time.monotonic() - began, 1)


def main() -> None:
    started = time.monotonic()
    sidecars_module.START_TIMEOUT = START_TIMEOUT  # type: ignore[misc]
    warm_up()
    with tempfile.TemporaryDirectory(prefix="kipsec-vm-") as tmp, Topology(prefix="kvmsc") as topo:
        topo.timeout = 30.0
        topo.add_node("a")
        topo.add_node("b")
        topo.add_pod("pa", "a")
        topo.add_pod("pb", "b")
        with checking("scenario"):
            scenario(topo, Path(tmp))
    report(started)


def report(started: float) -> None:
    """Print the script's result (:data:`checks`, :data:`timings`) between the markers."""
    result = {
        "cpus": os.cpu_count(),
        "checks": checks,
        "timings": timings,
        "seconds": time.monotonic() - started,
        "kernel": os.uname().release,
    }
    print(BEGIN)
    print(json.dumps(result))
    print(END, flush=True)


if __name__ == "__main__":
    main()
