"""Network-namespace topologies for end-to-end tests: "nodes" on one L2 segment, "pods" behind them.

The shape mirrors a Kubernetes cluster without Kubernetes::

    with Topology() as topo:
        topo.add_node("a")                  # netns on the node segment, 192.0.2.11/24
        topo.add_node("b")                  # 192.0.2.12/24
        topo.add_pod("pa", "a")             # netns behind node a, 10.10.1.2 (node a: 10.10.1.0/24)
        topo.add_pod("pb", "b")             # 10.10.2.2
        topo.run("pa", "ping", "-c", "1", topo.address("pb"))

- The node segment is a Linux bridge ``br0`` inside its own namespace (``wire``); each
  node's ``eth0`` is a veth whose peer is a port of that bridge. Capturing on ``br0`` in
  ``wire`` sees every packet exchanged between nodes: this is "the wire" of the e2e tests.
- A pod's ``eth0`` is a veth to its node with the pod address as a /32; the node owns
  the first address of its pod CIDR (the pods' gateway, and the address a gateway such as
  strongSwan's libipsec uses as the source of the routes it installs) on every pod veth.
- Nodes forward, and (unless ``pod_routes=False``) route every other node's pod CIDR via
  that node's segment address: plain, unencrypted reachability, which an IPsec test
  replaces or overrides.
- Addresses come from documentation (192.0.2.0/24) and private (10.10.0.0/16) ranges
  only, and live inside the namespaces this module creates: no test traffic leaves them.

Namespaces are named ``kipsect-<pid>-<seq>-<name>`` so parallel and aborted runs never
collide, and :func:`sweep_stale` can delete those of runs whose process is gone.
:meth:`Topology.close` (called by the context manager and the pytest fixture) always
kills the processes started in the namespaces and deletes the namespaces, whatever the
test body raised. Every command is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Final

from kipsec_lab.host import wait_for_output as wait_for_output  # re-exported: e2e tests use it

PREFIX: Final = "kipsect"
"""First part of every namespace name this module creates (and the only ones it sweeps)."""

NODE_NETWORK: Final = ipaddress.IPv4Network("192.0.2.0/24")
"""The node segment (TEST-NET-1, RFC 5737)."""

NODE_HOST_OFFSET: Final = 10
"""Node number N (1-based) gets ``NODE_NETWORK[NODE_HOST_OFFSET + N]``."""

POD_SUPERNET: Final = ipaddress.IPv4Network("10.10.0.0/16")
"""Node number N gets the pod CIDR 10.10.N.0/24."""

WIRE: Final = "wire"
"""Logical name of the namespace holding the node segment's bridge."""

WIRE_BRIDGE: Final = "br0"
"""The bridge interface, in namespace :data:`WIRE`, that joins every node."""

LINK: Final = "eth0"
"""Name of the uplink interface in every node and pod namespace."""

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds any single command may take unless the caller says otherwise."""

_SEQUENCE = itertools.count(1)


class CommandFailed(RuntimeError):
    """A command run in a namespace exited non-zero (with ``check=True``) or timed out."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(
            f"{' '.join(self.argv)} {status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )


@dataclass(frozen=True)
class Node:
    """A node namespace on the node segment."""

    name: str
    namespace: str
    index: int
    address: ipaddress.IPv4Address
    """Its address on the node segment (interface :data:`LINK`)."""
    pod_cidr: ipaddress.IPv4Network
    link: str = LINK

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The node's address inside its pod CIDR: its pods' default gateway."""
        return self.pod_cidr.network_address + 1


@dataclass(frozen=True)
class Pod:
    """A pod namespace behind a node."""

    name: str
    namespace: str
    node: str
    address: ipaddress.IPv4Address
    node_link: str
    """The pod veth's name on the node side (in the node namespace)."""
    link: str = LINK


def host_command(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the test process's own namespace, bounded by ``timeout`` seconds.

    Raises :class:`CommandFailed` on timeout always, and on a non-zero exit if ``check``.
    """
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(argv, None, _text(exc.stdout), _text(exc.stderr)) from None
    if check and result.returncode != 0:
        raise CommandFailed(argv, result.returncode, result.stdout, result.stderr)
    return result


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def list_namespaces() -> list[str]:
    """Names of every network namespace in ``ip netns list``."""
    out = host_command(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(namespace: str) -> list[int]:
    """PIDs of the processes running in ``namespace`` (empty if it is already gone)."""
    out = host_command(["ip", "netns", "pids", namespace], check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def delete_namespace(namespace: str) -> None:
    """SIGKILL every process inside ``namespace``, then delete it. Missing is not an error."""
    for pid in namespace_pids(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    host_command(["ip", "netns", "delete", namespace], check=False)


@contextlib.contextmanager
def scratch_namespace(name: str) -> Iterator[str]:
    """One empty namespace (only ``lo``, down) for a test that asks the kernel something
    in a namespace of its own; deleted afterwards, and named so that :func:`sweep_stale`
    removes it if the run dies first."""
    namespace = f"{PREFIX}-{os.getpid()}-{next(_SEQUENCE)}-{name}"
    host_command(["ip", "netns", "add", namespace])
    try:
        yield namespace
    finally:
        delete_namespace(namespace)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(prefix: str = PREFIX) -> list[str]:
    """Delete the namespaces left by earlier runs whose process has exited.

    Only names of the form ``<prefix>-<pid>-...`` are considered, and only when ``pid``
    is no longer alive, so a concurrent run's namespaces are never touched. Returns the
    names deleted.
    """
    swept = []
    for namespace in list_namespaces():
        parts = namespace.split("-")
        if len(parts) < 3 or parts[0] != prefix or not parts[1].isdigit():
            continue
        if _pid_alive(int(parts[1])):
            continue
        delete_namespace(namespace)
        swept.append(namespace)
    return swept


def stop_process(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace: float = 3.0
) -> None:
    """Send ``sig`` to ``proc``'s process group, then SIGKILL it after ``grace`` seconds.

    Processes started by :meth:`Topology.popen` lead their own session, so the group
    holds everything they forked. Safe to call on an exited process.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


class Topology:
    """Nodes and pods as network namespaces; see the module docstring for the layout.

    Use it as a context manager (or through the ``topology`` pytest fixture): on exit it
    stops every process started with :meth:`popen`, kills whatever else still runs in its
    namespaces, and deletes them, even when the body raised.

    ``pod_routes=False`` leaves out the plain routes between nodes' pod CIDRs, so pod
    traffic between nodes flows only where a test (an IPsec gateway, a sidecar) routes it.
    ``ipv6=False`` (the default) disables IPv6 in every namespace, which keeps router
    solicitations and MLD reports off the captures.
    """

    def __init__(
        self,
        *,
        prefix: str = PREFIX,
        pod_routes: bool = True,
        ipv6: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.prefix = f"{prefix}-{os.getpid()}-{next(_SEQUENCE)}"
        self.pod_routes = pod_routes
        self.ipv6 = ipv6
        self.timeout = timeout
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, Pod] = {}
        self._namespaces: dict[str, str] = {}
        self._processes: list[subprocess.Popen[bytes]] = []
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop processes, then delete every namespace. Idempotent; never raises.

        A namespace that cannot be deleted is reported with a warning (the sweeper
        removes it on a later run).
        """
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self._processes):
            with contextlib.suppress(Exception):
                stop_process(proc)
        for namespace in reversed(list(self._namespaces.values())):
            try:
                delete_namespace(namespace)
            except Exception as exc:
                warnings.warn(f"could not delete namespace {namespace}: {exc}", stacklevel=2)
        leftover = set(self._namespaces.values()) & set(list_namespaces())
        if leftover:
            warnings.warn(f"namespaces left behind: {sorted(leftover)}", stacklevel=2)

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this topology created, in creation order."""
        return list(self._namespaces.values())

    # -- building ----------------------------------------------------------------------

    def _create_namespace(self, name: str) -> str:
        if self._closed:
            raise RuntimeError("topology is closed")
        if name in self._namespaces:
            raise ValueError(f"name {name!r} already used in this topology")
        if not name or "/" in name or " " in name:
            raise ValueError(f"bad namespace name {name!r}")
        namespace = f"{self.prefix}-{name}"
        host_command(["ip", "netns", "add", namespace], timeout=self.timeout)
        self._namespaces[name] = namespace
        sysctls = {"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0"}
        if not self.ipv6:
            sysctls["net.ipv6.conf.all.disable_ipv6"] = "1"
            sysctls["net.ipv6.conf.default.disable_ipv6"] = "1"
        self.sysctl(name, sysctls)
        self.ip(name, "link set lo up")
        return namespace

    def _ensure_wire(self) -> str:
        if WIRE not in self._namespaces:
            self._create_namespace(WIRE)
            self.ip(
                WIRE,
                f"link add {WIRE_BRIDGE} type bridge mcast_snooping 0",
                f"link set {WIRE_BRIDGE} up",
            )
        return self._namespaces[WIRE]

    def add_node(self, name: str) -> Node:
        """Create node ``name``: a namespace on the node segment, forwarding, with a pod CIDR.

        Node number N (in creation order, from 1) gets 192.0.2.(10+N)/24 on ``eth0`` and
        the pod CIDR 10.10.N.0/24; routes between pod CIDRs are added for every pair of
        nodes unless ``pod_routes=False``.
        """
        wire = self._ensure_wire()
        index = len(self.nodes) + 1
        if index + NODE_HOST_OFFSET >= NODE_NETWORK.num_addresses - 1:
            raise ValueError("too many nodes")
        namespace = self._create_namespace(name)
        address = NODE_NETWORK[NODE_HOST_OFFSET + index]
        pod_cidr = list(POD_SUPERNET.subnets(new_prefix=24))[index]
        port = f"n{index}"
        self.ip(name, f"link add {LINK} type veth peer name {port} netns {wire}")
        self.ip(WIRE, f"link set {port} master {WIRE_BRIDGE}", f"link set {port} up")
        self.ip(
            name, f"addr add {address}/{NODE_NETWORK.prefixlen} dev {LINK}", f"link set {LINK} up"
        )
        self.sysctl(name, {"net.ipv4.ip_forward": "1"})
        node = Node(name, namespace, index, address, pod_cidr)
        if self.pod_routes:
            for other in self.nodes.values():
                self.ip(name, f"route add {other.pod_cidr} via {other.address}")
                self.ip(other.name, f"route add {node.pod_cidr} via {node.address}")
        self.nodes[name] = node
        return node

    def add_pod(self, name: str, node: str, address: str | None = None) -> Pod:
        """Create pod ``name`` behind ``node`` with ``address`` (default: next free in its CIDR).

        The address must lie in the node's pod CIDR and not be its gateway (.1).
        """
        host = self.node(node)
        if address is None:
            used = {pod.address for pod in self.pods.values() if pod.node == node}
            free = (a for a in host.pod_cidr.hosts() if a != host.gateway and a not in used)
            pod_address = next(free)
        else:
            pod_address = ipaddress.IPv4Address(address)
        if pod_address not in host.pod_cidr or pod_address == host.gateway:
            raise ValueError(f"pod address {pod_address} not usable in {host.pod_cidr}")
        namespace = self._create_namespace(name)
        node_link = f"p{len(self.pods) + 1}"
        self.ip(name, f"link add {LINK} type veth peer name {node_link} netns {host.namespace}")
        self.ip(
            name,
            f"addr add {pod_address}/32 dev {LINK}",
            f"link set {LINK} up",
            f"route add {host.gateway} dev {LINK} scope link",
            f"route add default via {host.gateway} dev {LINK}",
        )
        self.ip(
            node,
            f"addr add {host.gateway}/32 dev {node_link}",
            f"link set {node_link} up",
            f"route add {pod_address}/32 dev {node_link} src {host.gateway}",
        )
        pod = Pod(name, namespace, node, pod_address, node_link)
        self.pods[name] = pod
        return pod

    def masquerade(self, node: str, *, ports: str | None = None) -> None:
        """Make ``node`` a NAT for its pods: SNAT traffic from its pod CIDR leaving on
        :data:`LINK` to the node's segment address (nftables ``masquerade``).

        Peers then see the node's address, not the pod's. ``ports`` (``"40000-40100"``)
        forces the source ports into that range, so a NAT-T peer also sees translated
        ports (port 4500 becomes some port in the range). The rules live in table
        ``ip kipsect_nat`` of the node namespace and go away with it.
        """
        host = self.node(node)
        match = f'ip saddr {host.pod_cidr} oifname "{LINK}"'
        rules = [f"{match} masquerade"]
        if ports is not None:  # port mappings need a transport protocol match
            rules.insert(0, f"{match} meta l4proto {{ tcp, udp }} masquerade to :{ports}")
        script = (
            "table ip kipsect_nat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            + "".join(f"    {rule}\n" for rule in rules)
            + "  }\n"
            "}\n"
        )
        self.run(node, "nft", "-f", "-", input=script)

    # -- look-ups ----------------------------------------------------------------------

    def namespace(self, name: str) -> str:
        """The real namespace name of node, pod or :data:`WIRE` ``name``."""
        try:
            return self._namespaces[name]
        except KeyError:
            raise KeyError(f"no namespace {name!r} in this topology") from None

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r} in this topology") from None

    def pod(self, name: str) -> Pod:
        try:
            return self.pods[name]
        except KeyError:
            raise KeyError(f"no pod {name!r} in this topology") from None

    def address(self, name: str) -> str:
        """The address of node or pod ``name`` (a node's segment address), as text."""
        if name in self.pods:
            return str(self.pods[name].address)
        return str(self.node(name).address)

    # -- running -----------------------------------------------------------------------

    def _exec_argv(self, name: str, argv: Sequence[str]) -> list[str]:
        if not argv:
            raise ValueError("empty command")
        return ["ip", "netns", "exec", self.namespace(name), *argv]

    def run(
        self,
        name: str,
        *argv: str,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside namespace ``name`` and wait for it (at most ``timeout`` s).

        Raises :class:`CommandFailed` on timeout, and on a non-zero exit if ``check``.
        """
        return host_command(
            self._exec_argv(name, argv),
            check=check,
            timeout=self.timeout if timeout is None else timeout,
            input=input,
            env=env,
        )

    def popen(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
        stderr: int | IO[bytes] | None = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running ``argv`` inside namespace ``name`` (through ``ip netns exec``).

        ``ip netns exec`` execs the command, so the returned PID is the command's own.
        It leads a new session; :meth:`close` stops it (SIGTERM, then SIGKILL) if the
        caller has not. The caller owns the pipes it asked for.
        """
        proc = subprocess.Popen(
            self._exec_argv(name, argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
        self._processes.append(proc)
        return proc

    def ip(self, name: str, *commands: str) -> None:
        """Run ``ip`` sub-commands (``"link set lo up"``, ...) in namespace ``name``, batched."""
        batch = "".join(f"{command}\n" for command in commands)
        host_command(
            ["ip", "-n", self.namespace(name), "-batch", "-"], input=batch, timeout=self.timeout
        )

    def sysctl(self, name: str, settings: Mapping[str, str]) -> None:
        """Set sysctls inside namespace ``name`` (``{"net.ipv4.ip_forward": "1"}``)."""
        self.run(name, "sysctl", "-q", "-w", *(f"{key}={value}" for key, value in settings.items()))

    def python(
        self, name: str, code: str, *args: str, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet (this interpreter) inside namespace ``name``."""
        return self.run(name, sys.executable, "-c", code, *args, timeout=timeout)

    def ping(self, src: str, dst: str, *, count: int = 1, timeout: float = 5.0) -> None:
        """Ping ``dst`` (a node/pod name or an address) from ``src``; raise if no reply.

        Packets are sent 0.2 s apart and the command ends at the first reply after
        ``count`` have been answered, so a first packet lost to ARP or SA set-up is not fatal.
        """
        target = self.address(dst) if dst in self.pods or dst in self.nodes else dst
        deadline = max(1, int(timeout))
        self.run(
            src,
            *("ping", "-n", "-q", "-i", "0.2", "-c", str(count), "-w", str(deadline), target),
            timeout=timeout + 5,
        )


_UDP_ECHO_SERVER = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.settimeout(float(sys.argv[3]))
print("ready", flush=True)
try:
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)
except TimeoutError:
    pass
"""

_UDP_CLIENT = r"""
import socket, sys, time
payload = bytes.fromhex(sys.argv[3])
deadline = time.monotonic() + float(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while time.monotonic() < deadline:
    sock.sendto(payload, (sys.argv[1], int(sys.argv[2])))
    sock.settimeout(min(0.5, max(0.01, deadline - time.monotonic())))
    try:
        data, _ = sock.recvfrom(65535)
    except TimeoutError:
        continue
    print(data.hex())
    sys.exit(0)
sys.exit("no reply")
"""


def udp_roundtrip(
    topology: Topology,
    src: str,
    dst: str,
    payload: bytes,
    *,
    port: int = 7777,
    timeout: float = 5.0,
) -> bytes:
    """Send ``payload`` over UDP from ``src`` to an echo server in ``dst``; return the echo.

    The client resends every 0.5 s until a reply arrives (the first datagram may be
    lost to ARP or SA set-up). Raises :class:`CommandFailed` if no reply within
    ``timeout`` seconds. ``dst`` is a pod or node name; the server binds its address.
    """
    address = topology.address(dst)
    server = topology.popen(
        dst,
        [sys.executable, "-c", _UDP_ECHO_SERVER, address, str(port), str(timeout + 2)],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        wait_for_output(server.stdout, b"ready", timeout)
        result = topology.python(
            src, _UDP_CLIENT, address, str(port), payload.hex(), str(timeout), timeout=timeout + 5
        )
        return bytes.fromhex(result.stdout.strip())
    finally:
        stop_process(server)


def tcp_throughput(
    topology: Topology,
    src: str,
    dst: str,
    seconds: float,
    *,
    server_address: str | None = None,
    client_address: str | None = None,
    port: int = 5201,
    ready_timeout: float = 30.0,
) -> float:
    """TCP Mbit/s from ``src`` to ``dst`` over ``seconds``, as ``dst``'s iperf3 received it.

    One iperf3 server (``-1``: it exits after the test) bound to ``server_address``
    (default: ``dst``'s address), the client bound to ``client_address`` if given (an
    inner address the tunnel carries); ``ready_timeout`` bounds its start (slow under a VM's
    emulation), the client gets ``seconds`` + 30 s. Raises :class:`CommandFailed` when
    the client fails.
    """
    address = server_address or topology.address(dst)
    server = topology.popen(
        dst,
        ["iperf3", "-s", "-1", "--forceflush", "-B", address, "-p", str(port)],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        wait_for_output(server.stdout, b"listening", ready_timeout)
        result = topology.run(
            src,
            *("iperf3", "-c", address, "-p", str(port), "-t", f"{seconds:g}", "-J"),
            *(("-B", client_address) if client_address else ()),
            timeout=seconds + 30,
        )
    finally:
        stop_process(server)
    report = json.loads(result.stdout)
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e6
