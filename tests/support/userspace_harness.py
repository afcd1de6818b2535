"""A stand-in for the daemon that drives one :class:`UserspaceDatapath` inside a pod namespace.

The e2e tests of the userspace datapath need it to run *in* the pod's network namespace
(the TUN device, rules, routes, nft table and sockets are all per namespace) and to be
killable like a real sidecar. So each pod runs this module as a child process::

    ip netns exec <pod> python -m support.userspace_harness '<json spec>'

It owns the marked UDP 4500 socket (the daemon's job), installs manual SAs built with
:class:`IpsecSa` from the spec, and answers one JSON command per stdin line with one
JSON line on stdout: ``stats``, ``set_outbound``, ``clear_outbound``, ``state``, ``install_next``,
``switch_next``, ``remove_old`` (a manual make-before-break rekey), ``worker``
(the outbound worker of a ``"workers": 2`` spec: pid, ready, restarts, failed),
``close`` (then exits). After start it prints ``{"ready": ...}``.

:class:`Harness` is the test side: it starts the child through the topology (so the
topology kills it whatever happens) and sends commands with a bounded wait.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode
from kipsec_sidecar.core.traffic_selectors import TrafficSelector
from kipsec_sidecar.core.udpencap import UdpEncapKind, classify
from kipsec_sidecar.datapath.base import PeerPolicy
from kipsec_sidecar.datapath.mtu import Suite
from kipsec_sidecar.datapath.routing import RoutingIds
from kipsec_sidecar.datapath.sockets import udp_socket
from kipsec_sidecar.datapath.split import SplitDatapath
from kipsec_sidecar.datapath.userspace import UserspaceDatapath, UserspaceOptions

REPO = Path(__file__).resolve().parents[2]
NAT_T_PORT = 4500


def make_sa(spec: dict[str, Any], *, mode: str, protocol: str, udp: bool) -> IpsecSa:
    """An IpsecSa from a JSON-able spec: spi, src, dst, encr_id, encr_key, integ_id, integ_key,
    and optionally the SA's negotiated ``local_ts``/``remote_ts`` (lists of keyword
    arguments of ``TrafficSelector.from_network``)."""
    return IpsecSa(
        spi=spec["spi"],
        src=spec["src"],
        dst=spec["dst"],
        protocol=ProtocolId.AH if protocol == "ah" else ProtocolId.ESP,
        mode=Mode(mode),
        encr_id=EncrId(spec["encr_id"]) if spec.get("encr_id") else None,
        encr_key=bytes.fromhex(spec.get("encr_key", "")),
        integ_id=IntegId(spec["integ_id"]) if spec.get("integ_id") else None,
        integ_key=bytes.fromhex(spec.get("integ_key", "")),
        udp_encap=udp and protocol == "esp",
        local_ts=tuple(TrafficSelector.from_network(**ts) for ts in spec.get("local_ts", ())),
        remote_ts=tuple(TrafficSelector.from_network(**ts) for ts in spec.get("remote_ts", ())),
    )


def esp_tunnel_peer(me: str, peer: str, name: str = "p") -> dict[str, Any]:
    """The ``peer`` entry of a spec: ESP in UDP, tunnel mode, host selectors."""
    return {
        "name": name,
        "remote_addr": peer,
        "local_ts": [f"{me}/32"],
        "remote_ts": [f"{peer}/32"],
        "mode": "tunnel",
        "protocol": "esp",
        "encapsulation": "udp",
    }


def _suite(spec: dict[str, Any]) -> Suite:
    peer = spec["peer"]
    out = spec["out"]
    return Suite(
        ProtocolId.AH if peer["protocol"] == "ah" else ProtocolId.ESP,
        EncrId(out["encr_id"]) if out.get("encr_id") else None,
        IntegId(out["integ_id"]) if out.get("integ_id") else None,
        peer["mode"],
        peer["encapsulation"],
    )


class _Child:
    """The child side: the datapath plus the daemon's 4500 socket and a command loop."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.acquires: list[str] = []
        peer = spec["peer"]
        self.sock = udp_socket(spec["local_addr"], NAT_T_PORT, spec.get("mark", 0x6B70))
        options = UserspaceOptions(
            device=spec.get("device", "kipsec0"),
            ids=RoutingIds(mark=spec.get("mark", 0x6B70)),
            path_mtu=spec.get("path_mtu"),
            suites=(_suite(spec),),
            tso=spec.get("tso", True),
        )
        self.datapath: UserspaceDatapath
        if spec.get("workers", 1) == 2:
            self.datapath = SplitDatapath(
                udp_sender=self._send,
                udp_socket=self.sock,
                on_acquire=self.acquires.append,
                options=options,
            )
        else:
            self.datapath = UserspaceDatapath(
                udp_sender=self._send, on_acquire=self.acquires.append, options=options
            )
        udp = peer["encapsulation"] == "udp"
        kwargs = {"mode": peer["mode"], "protocol": peer["protocol"], "udp": udp}
        self.out_sa = make_sa(spec["out"], **kwargs)
        self.in_sa = make_sa(spec["in"], **kwargs)
        # The SAs of a manual rekey (``install_next``, ``switch_next``, ``remove_old``).
        self.next_out = make_sa(spec["next_out"], **kwargs) if "next_out" in spec else None
        self.next_in = make_sa(spec["next_in"], **kwargs) if "next_in" in spec else None
        self.policy = PeerPolicy(
            peer=peer["name"],
            remote_addr=ipaddress.ip_address(peer["remote_addr"]),
            local_ts=tuple(TrafficSelector.from_network(n) for n in peer["local_ts"]),
            remote_ts=tuple(TrafficSelector.from_network(n) for n in peer["remote_ts"]),
            mode=peer["mode"],
            protocol=ProtocolId.AH if peer["protocol"] == "ah" else ProtocolId.ESP,
            encapsulation=peer["encapsulation"],
        )
        self.done = asyncio.Event()

    def _send(self, data: bytes, address: tuple[str, int]) -> None:
        self.sock.sendto(data, address)

    def _on_udp(self) -> None:
        try:
            for _ in range(64):
                try:
                    data, source = self.sock.recvfrom(65535)
                except BlockingIOError:
                    return
                try:
                    kind = classify(data)
                except Exception:
                    continue
                if kind is UdpEncapKind.ESP:
                    self.datapath.receive_encapsulated(data, source)
        finally:
            self.datapath.flush_received()

    def _reply(self, obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def _on_command(self) -> None:
        line = sys.stdin.readline()
        if not line:
            self.done.set()
            return
        op = json.loads(line)["op"]
        peer = self.policy.peer
        if op == "stats":
            self._reply({"stats": asdict(self.datapath.stats), "acquires": self.acquires})
        elif op == "set_outbound":
            self.datapath.set_outbound(peer, self.out_sa)
            self._reply({"ok": True})
        elif op == "clear_outbound":
            self.datapath.clear_outbound(peer)
            self._reply({"ok": True})
        elif op == "install_next":  # a manual make-before-break rekey, step 1
            assert self.next_in is not None
            self.datapath.install_inbound(peer, self.next_in)
            self._reply({"ok": True})
        elif op == "switch_next":  # step 2: send on the new SA
            assert self.next_out is not None
            self.datapath.set_outbound(peer, self.next_out)
            self._reply({"ok": True})
        elif op == "remove_old":  # step 3: the old inbound SA goes
            self.datapath.remove_inbound(peer, self.in_sa.spi)
            self._reply({"ok": True})
        elif op == "worker":
            split = self.datapath
            assert isinstance(split, SplitDatapath)
            self._reply(
                {
                    "pid": split.worker_pid,
                    "ready": split.worker_ready,
                    "restarts": split.restarts,
                    "failed": split.failed,
                }
            )
        elif op == "close":
            self.done.set()
        else:
            self._reply({"error": f"unknown op {op}"})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await self.datapath.start()
        self.datapath.add_peer(self.policy)
        self.datapath.drop_stale()
        self.datapath.install_inbound(self.policy.peer, self.in_sa)
        if self.spec.get("outbound_at_start", True):
            self.datapath.set_outbound(self.policy.peer, self.out_sa)
        loop.add_reader(self.sock.fileno(), self._on_udp)
        loop.add_reader(sys.stdin.fileno(), self._on_command)
        self._reply({"ready": True, "mtu": self.datapath.mtu, "path_mtu": self.datapath.path_mtu})
        await self.done.wait()
        loop.remove_reader(sys.stdin.fileno())
        loop.remove_reader(self.sock.fileno())
        await self.datapath.close()
        self.sock.close()
        self._reply({"closed": True})


class Harness:
    """The test side of one child: start it in ``pod`` and talk to it, every wait bounded."""

    def __init__(self, topology: Any, pod: str, spec: dict[str, Any], timeout: float = 10.0):
        self.topology = topology
        self.pod = pod
        self.timeout = timeout
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "sidecar"), str(REPO / "tests")])
        self.proc: subprocess.Popen[bytes] = topology.popen(
            pod,
            [sys.executable, "-m", "support.userspace_harness", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._buffer = b""
        self.ready = self._read()
        if "ready" not in self.ready:
            raise RuntimeError(f"harness in {pod} did not start: {self.ready}")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"harness in {self.pod}: no answer; stderr: {self.stderr()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"harness in {self.pod} exited; stderr: {self.stderr()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        result: dict[str, Any] = json.loads(line)
        return result

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(running)"
        return self.proc.stderr.read().decode(errors="replace")[-3000:]

    def request(self, op: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op}).encode() + b"\n")
        self.proc.stdin.flush()
        return self._read()

    def stats(self) -> dict[str, Any]:
        return self.request("stats")

    def close(self) -> dict[str, Any]:
        """Ask the child to close the datapath and exit; wait for it (bounded)."""
        answer = self.request("close")
        self.proc.wait(timeout=self.timeout)
        return answer


if __name__ == "__main__":
    profile = os.environ.get("KIPSEC_HARNESS_PROFILE")  # a path: write cProfile stats there
    if profile:
        import cProfile

        cProfile.run("asyncio.run(_Child(json.loads(sys.argv[1])).run())", profile)
    else:
        asyncio.run(_Child(json.loads(sys.argv[1])).run())
