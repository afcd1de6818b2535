"""Real ``kipsec-sidecar run`` processes in test namespaces, driven through the control socket.

The e2e tests of the daemon, the matrix, the chaos tests, the strongSwan interop tests and
the benchmark all do the same things: write one configuration document per namespace (a
dict, written as JSON, which is valid YAML), start the daemon there, wait — bounded — until
its peers have SAs, look at ``sas`` (the same JSON ``kipsec-sidecar sas --json`` prints),
and stop it with SIGTERM or SIGKILL::

    a = Sidecar(topo, "pa", tmp_path)
    a.write([peer_entry(topo, "pb")])
    a.start()
    wait_until("pa-pb up", established(a, "pb"))
    a.control("rekey", peer="pb", kind="child")
    a.stop()

A :class:`Sidecar` runs in any namespace of the topology (a pod, or a node acting as a
gateway); its work files (``<name>.yaml``, ``<name>.log``, ``<name>.sock``, certificates)
live in the test's ``tmp_path``. Every process is also registered with the topology, so it
is stopped even when a test fails before calling :meth:`Sidecar.stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from kipsec_sidecar.control import ControlClient
from kipsec_sidecar.state import ControlError
from support.netns import Topology, stop_process, wait_for_output
from support.pki import CertificateAuthority, Issued

REPO: Final = Path(__file__).resolve().parents[2]
SIDECAR: Final = str(REPO / ".venv" / "bin" / "kipsec-sidecar")
"""The console script under test (the same one a user runs)."""
PSK: Final = "kipsec e2e pre-shared key 0123456789"
MARKER: Final = b"KIPSEC-PLAINTEXT-MARKER-7f3a"
"""Bytes the tests send in every payload and look for on the wire (they must never be seen
there in clear when the traffic is encrypted)."""
START_TIMEOUT: Final = 10.0
"""Seconds a sidecar may take from exec to answering on its control socket."""
DOMAIN: Final = "e2e.kipsec.test"


def fqdn(name: str) -> str:
    """The FQDN identity the helpers give namespace ``name`` (and its certificate's SAN)."""
    return f"{name}.{DOMAIN}"


class Sidecar:
    """One ``kipsec-sidecar run`` in namespace ``name``, with its config, log and control socket."""

    def __init__(self, topology: Topology, name: str, workdir: Path) -> None:
        self.topology = topology
        self.pod = name
        self.workdir = workdir
        self.config = workdir / f"{name}.yaml"
        self.log = workdir / f"{name}.log"
        self.socket = str(workdir / f"{name}.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        """Variables added to the process's environment (``KIPSEC_OPERATOR_URL`` …)."""

    def document(
        self, peers: list[dict[str, Any]], *, local: Mapping[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """The configuration document :meth:`write` writes.

        Defaults: FQDN identity ``<name>.e2e.kipsec.test``, the namespace's address, the
        test PSK, this sidecar's control socket, metrics off, log level info. ``local``
        replaces keys of the ``local`` section (``auth``, ``identity``, ``addresses``; a
        key given as None is left out, e.g. ``auth`` for manually keyed sidecars);
        ``extra`` sets top-level keys (``proposals``, ``encapsulation``, ``metrics``...).
        """
        local_section: dict[str, Any] = {
            "identity": {"fqdn": fqdn(self.pod)},
            "addresses": [self.topology.address(self.pod)],
            "auth": {"psk": {"value": PSK}},
            **(local or {}),
        }
        document: dict[str, Any] = {
            "apiVersion": "kipsec.io/v1alpha1",
            "kind": "SidecarConfig",
            "local": {key: value for key, value in local_section.items() if value is not None},
            "peers": peers,
            "control": {"socket": self.socket},
            "metrics": {"enabled": False},
            "logging": {"level": "info"},
        }
        document.update(extra)
        return document

    def write(
        self, peers: list[dict[str, Any]], *, local: Mapping[str, Any] | None = None, **extra: Any
    ) -> None:
        """Write the configuration document (see :meth:`document`) atomically."""
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.document(peers, local=local, **extra), indent=1))
        os.replace(tmp, self.config)

    def certificate_auth(self, identity: Issued, ca: CertificateAuthority) -> dict[str, Any]:
        """Write ``identity`` (certificate and key) and ``ca``'s certificate (the only trust
        anchor) as PEM files in the work directory; return the ``auth`` section naming them.
        """
        cert = self.workdir / f"{self.pod}.crt"
        key = self.workdir / f"{self.pod}.key"
        ca_file = self.workdir / f"{self.pod}-ca.crt"
        cert.write_bytes(identity.cert.public_bytes(Encoding.PEM))
        key.write_bytes(
            identity.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        )
        key.chmod(0o600)
        ca_file.write_bytes(ca.cert.public_bytes(Encoding.PEM))
        return {
            "certificate": {"certFile": str(cert), "keyFile": str(key), "caFiles": [str(ca_file)]}
        }

    def start(self, **options: float) -> Sidecar:
        """Start ``kipsec-sidecar run``, or with ``options`` the daemon's ``run(**options)``.

        Returns once the control socket answers; raises AssertionError (with the log's
        tail) if the process exits or does not answer within :data:`START_TIMEOUT`.
        """
        argv = [SIDECAR, "run", "--config", str(self.config)]
        if options:
            code = (
                "import sys; from kipsec_sidecar.daemon import run; "
                f"sys.exit(run(sys.argv[1], **{options!r}))"
            )
            argv = [sys.executable, "-c", code, str(self.config)]
        with self.log.open("ab") as log:
            env = {**os.environ, **self.env} if self.env else None
            self.proc = self.topology.popen(
                self.pod, argv, stdout=subprocess.DEVNULL, stderr=log, env=env
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.pod} exited {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError, ValueError, ControlError):
                if os.path.exists(self.socket) and self.sas() is not None:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"{self.pod} did not start in {START_TIMEOUT}s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, *, grace: float = 5.0) -> int | None:
        """Send ``sig`` (SIGKILL after ``grace`` s); return the exit code, None if never
        started."""
        if self.proc is None:
            return None
        stop_process(self.proc, sig=sig, grace=grace)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL at once: no DELETE, no cleanup — a crashed sidecar."""
        self.stop(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` of the sidecar's log (its stderr)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def control(self, command: str, **fields: Any) -> Any:
        """One control request (``sas``, ``initiate``, ``rekey``, ``terminate``, ``reload``);
        raises ControlError with the sidecar's message when it refuses."""
        return ControlClient(self.socket, timeout=10).request(command, **fields)

    def cli(
        self, *args: str, timeout: float = 15.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the ``kipsec-sidecar`` CLI against this sidecar's control socket (from the
        test's namespace: a Unix socket needs none); with ``check``, raises
        CalledProcessError on a non-zero exit, with the CLI's stderr."""
        return subprocess.run(
            [SIDECAR, "--socket", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def sas(self) -> dict[str, Any]:
        """The snapshot, as ``kipsec-sidecar sas --json`` prints it."""
        result: dict[str, Any] = self.control("sas")
        return result

    def peer(self, name: str) -> dict[str, Any]:
        """The snapshot's entry for peer ``name``; AssertionError if it has none."""
        for peer in self.sas()["peers"]:
            if peer["name"] == name:
                return dict(peer)
        raise AssertionError(f"{self.pod} has no peer {name!r}")

    def spis(self, name: str) -> set[tuple[str, str]]:
        """(spi_in, spi_out) of every child SA the sidecar holds for peer ``name``."""
        return {(c["spi_in"], c["spi_out"]) for c in self.peer(name)["children"]}

    def installed(self, name: str) -> list[dict[str, Any]]:
        """The peer's child SAs in state ``installed``."""
        return [c for c in self.peer(name)["children"] if c["state"] == "installed"]


def peer_entry(topology: Topology, name: str, **options: Any) -> dict[str, Any]:
    """A peer section for namespace ``name``: its address, its FQDN identity, onStart.

    ``options`` add or replace keys (``mode``, ``protocol``, ``trafficSelectors``...).
    """
    entry: dict[str, Any] = {
        "name": name,
        "address": topology.address(name),
        "identity": {"fqdn": fqdn(name)},
        "start": "onStart",
    }
    entry.update(options)
    return entry


def fake_peers(count: int, network: str = "10.99.0") -> list[dict[str, Any]]:
    """``count`` (at most 254) onDemand peers ``fake-N`` at ``network.N``, for measuring a
    sidecar with many configured peers: blackhole ``network.0/24`` in its namespace and no
    handshake ever leaves."""
    return [
        {
            "name": f"fake-{n}",
            "address": f"{network}.{n}",
            "identity": {"fqdn": f"fake-{n}.bench"},
            "start": "onDemand",
        }
        for n in range(1, count + 1)
    ]


def manual_entry(
    topology: Topology,
    name: str,
    spi_in: int,
    spi_out: int,
    key_in: str,
    key_out: str,
    **options: Any,
) -> dict[str, Any]:
    """A manually keyed ESP peer (AES-GCM-256: 36-byte keys as hex)."""
    entry: dict[str, Any] = {
        "name": name,
        "address": topology.address(name),
        "keying": "manual",
        "manual": {
            "spiIn": spi_in,
            "spiOut": spi_out,
            "encryption": "aes256gcm16",
            "keys": {"encryptionIn": key_in, "encryptionOut": key_out},
        },
    }
    entry.update(options)
    return entry


def wait_until(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``check`` every 0.1 s (exceptions count as "not yet"); AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def established(sidecar: Sidecar, peer: str) -> Callable[[], bool]:
    """A check: the peer is ``established`` and has an installed child SA."""

    def check() -> bool:
        view = sidecar.peer(peer)
        return view["state"] == "established" and any(
            c["state"] == "installed" for c in view["children"]
        )

    return check


def wait_mesh(sidecars: Mapping[str, Sidecar], timeout: float = 10.0) -> None:
    """Wait until every sidecar has an installed child SA with every peer it lists."""

    def check() -> bool:
        for sidecar in sidecars.values():
            for view in sidecar.sas()["peers"]:
                if not any(c["state"] == "installed" for c in view["children"]):
                    return False
        return True

    try:
        wait_until("every peer of every sidecar to have an installed child SA", check, timeout)
    except AssertionError as exc:
        tails = "\n".join(f"--- {s.pod} ---\n{s.tail(15)}" for s in sidecars.values())
        raise AssertionError(f"{exc}\n{tails}") from None


# --- traffic -------------------------------------------------------------------------------

_TCP_ECHO = r"""
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(float(sys.argv[4]))
print("ready", flush=True)
conn, _ = srv.accept()
conn.settimeout(float(sys.argv[4]))
data = b""
while len(data) < int(sys.argv[3]):
    chunk = conn.recv(65536)
    if not chunk:
        break
    data += chunk
conn.sendall(data)
conn.close()
"""

_TCP_CLIENT = r"""
import socket, sys
payload = bytes.fromhex(sys.argv[3]) * 2000
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
sock.sendall(payload)
back = b""
while len(back) < len(payload):
    chunk = sock.recv(65536)
    if not chunk:
        break
    back += chunk
sys.exit(0 if back == payload else "echo differs")
"""


def tcp_roundtrip(
    topology: Topology,
    src: str,
    dst: str,
    port: int = 7070,
    marker: bytes = MARKER,
    *,
    connect_to: tuple[str, int] | None = None,
    timeout: float = 15.0,
) -> None:
    """A TCP connection from ``src`` to ``dst`` carrying ``marker`` × 2000 (~56 kB) each way,
    so segments are full-sized; raises CommandFailed if the echo differs or times out.

    ``dst`` serves on its address and ``port``; the client connects there, or to
    ``connect_to`` (address, port), e.g. a Service's ClusterIP translated to ``dst``.
    ``timeout`` bounds the client, and a third of it the server's start (a VM under
    software emulation needs far more than the default)."""
    size = len(marker) * 2000
    wait = str(timeout * 2 / 3)  # the server's accept and each socket operation
    server = topology.popen(
        dst,
        [sys.executable, "-c", _TCP_ECHO, topology.address(dst), str(port), str(size), wait],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        wait_for_output(server.stdout, b"ready", timeout / 3)
        host, target = connect_to or (topology.address(dst), port)
        topology.python(src, _TCP_CLIENT, host, str(target), marker.hex(), wait, timeout=timeout)
    finally:
        stop_process(server)


def ping_marked(topology: Topology, src: str, dst: str, *, count: int = 2) -> None:
    """Ping ``dst`` from ``src`` with the ICMP payload filled with :data:`MARKER`'s first
    16 bytes (``ping -p``), so a capture can tell whether the ICMP left in clear."""
    topology.run(
        src,
        *("ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-w", "5"),
        *("-p", MARKER[:16].hex(), topology.address(dst)),
        timeout=10,
    )
