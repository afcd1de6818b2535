"""How fast ``kipsec-sidecar run`` starts and how much memory it holds idle.

Run (root; one pod in a network namespace, removed afterwards)::

    .venv/bin/python bench/sidecar_startup.py [--runs 5] [--idle 1.0]

Printed, each the median of ``--runs`` (at most 20) with the spread:

- import: the wall time of ``python -c "import M"`` for the bare interpreter, the
  third-party floor (asyncio, cryptography, pydantic, PyYAML: what any sidecar imports),
  the CLI entry point (``kipsec_sidecar.cli``, what ``kipsec-sidecar`` imports before it
  parses its arguments), the daemon (``kipsec_sidecar.daemon``, what ``run`` imports)
  and the daemon with the userspace datapath (all a start imports), with how many
  modules each leaves in ``sys.modules`` and its VmRSS at the end;
- exec to ready: from just before ``exec`` of ``kipsec-sidecar run`` (userspace datapath,
  PSK, the injected sidecar's two listeners) to the first ``/healthz`` answered 200 on
  the probes listener (what the injected startupProbe asks) and to the first ``sas``
  answered on the control socket (what the tests and ``kipsec-sidecar`` wait for), with
  0 and with 100 configured peers;
- memory: ``VmRSS`` (and its anonymous part, ``RssAnon``) from ``/proc/<pid>/status``
  ``--idle`` seconds after ready, with 0 and 100 peers.

Bytecode: the image installs kipsec from a wheel, so its modules start from ``.pyc``
files; a development checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as this machine's
environment sets) compiles every kipsec module from source at each start instead. By
default the benchmark measures like the image: its processes write and read bytecode in
a temporary ``PYTHONPYCACHEPREFIX`` (warmed by one import first); ``--no-bytecode``
measures the compile-at-every-start case.

The peers are ``onDemand`` at fake addresses (10.99.0.0/24) that the pod's namespace
blackholes, so no handshake ever leaves and the figures are the sidecar's own. The
driver that starts the sidecar and polls it runs inside the pod's namespace (stdlib
only, started before the clock starts), so the polling costs no process start. The
load average is printed before and after: on a shared machine the medians move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.netns import Topology, sweep_stale  # noqa: E402
from support.sidecars import SIDECAR, Sidecar, fake_peers  # noqa: E402

FAKE_PEERS = "10.99.0.0/24"
HEALTH_LISTEN = "127.0.0.1:9585"
PROBE_LISTEN = "127.0.0.1:9586"
MAX_RUNS = 20
#: Give up on one start after this many seconds (the run is then reported as failed).
READY_TIMEOUT = 20.0

#: Runs inside the pod: exec the sidecar, poll /healthz on the probes listener and the
#: control socket every 5 ms, wait ``idle`` s, read /proc/<pid>/status, stop it (SIGTERM,
#: SIGKILL after 5 s), print one JSON line.
_DRIVER = r"""
import json, os, signal, socket, subprocess, sys, time
argv, probe, control, idle, timeout, log = json.loads(sys.argv[1])
host, port = probe.rsplit(":", 1)

def healthz():
    try:
        with socket.create_connection((host, int(port)), timeout=0.5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False

def sas():
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(0.5)
            s.connect(control)
            s.sendall(json.dumps({"command": "sas"}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
            answer = json.loads(data)
            return answer.get("result") if answer.get("ok") else None
    except (OSError, ValueError):
        return None

with open(log, "ab") as err:
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    ready = answered = None
    snapshot = None
    while (ready is None or answered is None) and time.monotonic() - start < timeout:
        if proc.poll() is not None:
            break
        if ready is None and healthz():
            ready = time.monotonic() - start
        if answered is None:
            snapshot = sas()
            if snapshot is not None:
                answered = time.monotonic() - start
        time.sleep(0.005)
    result = {"ready": ready, "control": answered, "exit": proc.poll()}
    if snapshot is not None:
        result["peers"] = len(snapshot.get("peers", []))
    if proc.poll() is None:
        time.sleep(idle)
        with open(f"/proc/{proc.pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    result[key] = int(value.split()[0]) / 1024
        proc.send_signal(signal.SIGTERM)
        try:
            result["exit"] = proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            result["exit"] = proc.wait()
print(json.dumps(result), flush=True)
"""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median(values: list[float]) -> str:
    """``median (min-max)``, or n/a."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


#: (label, modules) of the import rows: the bare interpreter, the third-party floor every
#: sidecar pays (its event loop, crypto, config validation and YAML), the CLI entry point,
#: the daemon, and the daemon with the userspace datapath (everything a start imports).
IMPORTS = (
    ("(interpreter)", ""),
    ("floor: asyncio+crypto+pydantic", "asyncio, cryptography.x509, pydantic, yaml"),
    ("kipsec_sidecar.cli", "kipsec_sidecar.cli"),
    ("kipsec_sidecar.daemon", "kipsec_sidecar.daemon"),
    ("daemon + userspace datapath", "kipsec_sidecar.daemon, kipsec_sidecar.datapath.userspace"),
)


def import_times(runs: int) -> dict[str, tuple[list[float], int, float]]:
    """Wall seconds of ``python -c "import M"`` per run, the modules it loaded and its
    VmRSS (MiB) at the end."""
    results: dict[str, tuple[list[float], int, float]] = {}
    python = str(REPO / ".venv" / "bin" / "python")
    for label, modules in IMPORTS:
        code = (
            f"import sys{', ' + modules if modules else ''}\n"
            "rss = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')]\n"
            "print(len(sys.modules), int(rss[0]) / 1024)"
        )
        times: list[float] = []
        count, rss = 0, 0.0
        for _ in range(runs):
            start = time.monotonic()
            out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
            times.append(time.monotonic() - start)
            if out.returncode != 0:
                raise RuntimeError(f"python -c {code!r}: {out.stderr}")
            words = out.stdout.split()
            count, rss = int(words[0]), float(words[1])
        results[label] = (times, count, rss)
    return results


def starts(
    topo: Topology, workdir: Path, count: int, runs: int, idle: float, name: str = "peers"
) -> list[dict[str, Any]]:
    """``runs`` starts of a sidecar with ``count`` onDemand peers in pod pm."""
    sidecar = Sidecar(topo, "pm", workdir / f"{name}{count}")
    sidecar.workdir.mkdir()
    sidecar.write(
        fake_peers(count),
        datapath="userspace",
        metrics={"enabled": True},
        logging={"level": "warning"},
    )
    argv = [
        SIDECAR,
        "run",
        "--config",
        str(sidecar.config),
        "--health-listen",
        HEALTH_LISTEN,
        "--probe-listen",
        PROBE_LISTEN,
    ]
    spec = json.dumps([argv, PROBE_LISTEN, sidecar.socket, idle, READY_TIMEOUT, str(sidecar.log)])
    results = []
    for _ in range(runs):
        out = topo.python("pm", _DRIVER, spec, timeout=READY_TIMEOUT + idle + 15)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if result.get("peers") not in (None, count):
            raise AssertionError(f"the sidecar lists {result['peers']} peers, not {count}")
        if result["ready"] is None:
            print(f"  a start with {count} peers failed:\n{sidecar.tail(10)}", file=sys.stderr)
        results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help=f"runs per figure (1-{MAX_RUNS})")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds after ready before RSS")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="compile kipsec's sources at every start (PYTHONDONTWRITEBYTECODE=1)",
    )
    args = parser.parse_args()
    runs = max(1, min(args.runs, MAX_RUNS))
    idle = max(0.0, min(args.idle, 10.0))
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    print(f"load average before: {loadavg()}  ({os.cpu_count()} CPUs, {runs} runs each)")
    with tempfile.TemporaryDirectory(prefix="kipsec-startup-") as tmp:
        bytecode(not args.no_bytecode, Path(tmp))
        return measure(Path(tmp), runs, idle)


def bytecode(enabled: bool, tmp: Path) -> None:
    """Set the environment every measured process inherits: with ``enabled``, bytecode
    in a fresh cache under ``tmp``, written by one warm-up import of all a start loads."""
    if not enabled:
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        os.environ.pop("PYTHONPYCACHEPREFIX", None)
        print("bytecode: none (kipsec compiled from source at every start)")
        return
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    modules = IMPORTS[-1][1]
    python = str(REPO / ".venv" / "bin" / "python")
    subprocess.run([python, "-c", f"import {modules}"], check=True, timeout=120)
    print("bytecode: cached (like the image's installed wheel)")


def measure(tmp: Path, runs: int, idle: float) -> int:
    """Print the import rows, then start the sidecar ``runs`` times with 0 and 100 peers."""
    imports = import_times(runs)
    sweep_stale()
    with Topology() as topo:
        topo.add_node("a")
        topo.add_pod("pm", "a")
        topo.ip("pm", f"route add blackhole {FAKE_PEERS}")
        # Unmeasured: the first start also fills the bytecode cache (modules a start loads
        # beyond the imports above) and the page cache.
        starts(topo, tmp, 1, 1, 0.0, name="warm-up")
        measured = {count: starts(topo, tmp, count, runs, idle) for count in (0, 100)}
    print(f"load average after:  {loadavg()}")

    print("\nimport, wall seconds of `python -c 'import M'` (median (min-max)), modules, VmRSS")
    for label, (times, modules, rss) in imports.items():
        print(f"  {label:32} {median(times):28} {modules:5d} modules {rss:6.1f} MiB")
    print("\nkipsec-sidecar run (userspace datapath), exec to ready, seconds; memory idle, MiB")
    print(f"  {'peers':>5}  {'/healthz 200':28} {'control answers':28} {'VmRSS':24} RssAnon")
    for count, results in measured.items():

        def column(key: str, results: list[dict[str, Any]] = results) -> list[float]:
            return [r[key] for r in results if r.get(key) is not None]

        failed = sum(1 for r in results if r["ready"] is None)
        print(
            f"  {count:5d}  {median(column('ready')):28} {median(column('control')):28} "
            f"{median(column('VmRSS')):24} {median(column('RssAnon'))}"
            + (f"  ({failed} failed)" if failed else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
