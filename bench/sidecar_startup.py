"""How fast ``kipsec-sidecar run`` starts and how much memory it holds idle.

Run (root; one pod in a network namespace, removed afterwards)::

    .venv/bin/python bench/sidecar_startup.py [--runs 5] [--idle 1.0] [--peers 0,10,100]
        [--datapath userspace|auto] [--variant NAME=VAR=VALUE,...]

Printed, each the median of ``--runs`` (at most 20) with the spread; the runs are
interleaved (round r starts every peer count and variant once before round r+1), so a
change of the machine's load falls on all of them alike:

- import: the wall time of ``python -c "import M"`` for the bare interpreter, the
  third-party floor (asyncio, cryptography's AEAD, EC and X25519 primitives: what any
  sidecar imports) and that floor with pydantic (what the sidecar imported until its
  configuration model moved to its own layer, ``config/fields.py``: for comparison with
  an older tree run as a ``--variant``),
  the CLI entry point (``kipsec_sidecar.cli``, what ``kipsec-sidecar`` imports before it
  parses its arguments), the daemon (``kipsec_sidecar.daemon``, what ``run`` imports)
  and the daemon with the userspace datapath (all a start imports; with ``--datapath
  auto`` also with the capability probe), with how many modules each leaves in
  ``sys.modules`` and its VmRSS at the end;
- exec to ready: from just before ``exec`` of ``kipsec-sidecar run`` (the ``--datapath``
  setting: ``userspace``, the default here, or ``auto``, the configuration's default,
  which first probes the kernel for ESP: on a kernel without it, like this machine's,
  the userspace datapath then runs; PSK, the injected sidecar's two listeners) to the
  first ``/healthz`` answered 200 on the probes listener (what the injected startupProbe
  asks) and to the first ``sas`` answered on the control socket (what the tests and
  ``kipsec-sidecar`` wait for), and the CPU seconds (user + system, from
  ``/proc/<pid>/stat``, with those of the commands it ran, such as ``nft``) the sidecar
  used until it was ready — the figure a loaded machine stretches least —, with each
  ``--peers`` count of configured peers;
- memory: ``VmRSS`` (and its anonymous part, ``RssAnon``) from ``/proc/<pid>/status``
  ``--idle`` seconds after ready, per peer count.

``--variant`` adds starts with environment variables set (``arena2=MALLOC_ARENA_MAX=2``;
several ``VAR=VALUE`` separated by commas), measured in the same rounds as the plain
start (``base``): how an environment setting of the image moves start and memory.

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
from support.variants import parse_variants  # noqa: E402

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
argv, env, probe, control, idle, timeout, log = json.loads(sys.argv[1])
TICK = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime, stime, and those of the children it waited for (its nft runs)
    return sum(int(f) for f in fields[11:15]) / TICK
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
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **env}
    )
    ready = answered = cpu_ready = None
    snapshot = None
    while (ready is None or answered is None) and time.monotonic() - start < timeout:
        if proc.poll() is not None:
            break
        if ready is None and healthz():
            ready = time.monotonic() - start
            try:
                cpu_ready = cpu(proc.pid)
            except OSError:
                cpu_ready = None
        if answered is None:
            snapshot = sas()
            if snapshot is not None:
                answered = time.monotonic() - start
        time.sleep(0.005)
    result = {"ready": ready, "control": answered, "cpu": cpu_ready, "exit": proc.poll()}
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
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


#: The cryptography a PSK sidecar loads (cryptography.x509 only with certificates).
_CRYPTO = (
    "cryptography.hazmat.primitives.ciphers.aead, cryptography.hazmat.primitives.asymmetric.ec,"
    " cryptography.hazmat.primitives.asymmetric.x25519"
)
#: (label, modules) of the import rows: the bare interpreter, the third-party floor every
#: sidecar pays (its event loop and crypto; PyYAML loads only for a document that is not
#: plain JSON) and that floor with pydantic (what older sidecars validated with), the CLI entry
#: point, the daemon, and the daemon with the userspace datapath (everything a start
#: imports).
IMPORTS = (
    ("(interpreter)", ""),
    ("floor: asyncio + crypto", f"asyncio, {_CRYPTO}"),
    ("floor + pydantic (no model)", f"asyncio, {_CRYPTO}, pydantic, pydantic.main"),
    ("kipsec_sidecar.cli", "kipsec_sidecar.cli"),
    ("kipsec_sidecar.daemon", "kipsec_sidecar.daemon"),
    ("daemon + userspace datapath", "kipsec_sidecar.daemon, kipsec_sidecar.datapath.userspace"),
)
#: With ``--datapath auto``: what such a start imports on a kernel without ESP (the probe
#: runs, then the userspace datapath).
PROBE_IMPORTS = (
    (
        "daemon + probe + userspace",
        "kipsec_sidecar.daemon, kipsec_sidecar.datapath.probe, kipsec_sidecar.datapath.userspace",
    ),
)


def import_times(
    runs: int, rows: tuple[tuple[str, str], ...] = IMPORTS
) -> dict[str, tuple[list[float], int, float]]:
    """Wall seconds of ``python -c "import M"`` per run (rounds interleaved across the
    rows), the modules it loaded and its VmRSS (MiB) at the end."""
    results: dict[str, tuple[list[float], int, float]] = {label: ([], 0, 0.0) for label, _ in rows}
    python = str(REPO / ".venv" / "bin" / "python")
    for _ in range(runs):
        for label, modules in rows:
            code = (
                f"import sys{', ' + modules if modules else ''}\n"
                "rss = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')]\n"
                "print(len(sys.modules), int(rss[0]) / 1024)"
            )
            start = time.monotonic()
            out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
            elapsed = time.monotonic() - start
            if out.returncode != 0:
                raise RuntimeError(f"python -c {code!r}: {out.stderr}")
            words = out.stdout.split()
            times = results[label][0]
            times.append(elapsed)
            results[label] = (times, int(words[0]), float(words[1]))
    return results


def prepare(
    topo: Topology, workdir: Path, count: int, datapath: str, name: str = "peers"
) -> Sidecar:
    """The work directory and document of a sidecar with ``count`` onDemand peers in pm."""
    sidecar = Sidecar(topo, "pm", workdir / f"{name}{count}")
    sidecar.workdir.mkdir()
    sidecar.write(
        fake_peers(count),
        datapath=datapath,
        metrics={"enabled": True},
        logging={"level": "warning"},
    )
    return sidecar


def start(
    topo: Topology, sidecar: Sidecar, count: int, idle: float, env: dict[str, str]
) -> dict[str, Any]:
    """One start of ``sidecar`` (with ``env`` added to its environment), measured."""
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
    spec = json.dumps(
        [argv, env, PROBE_LISTEN, sidecar.socket, idle, READY_TIMEOUT, str(sidecar.log)]
    )
    out = topo.python("pm", _DRIVER, spec, timeout=READY_TIMEOUT + idle + 15)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if result.get("peers") not in (None, count):
        raise AssertionError(f"the sidecar lists {result['peers']} peers, not {count}")
    if result["ready"] is None:
        print(f"  a start with {count} peers failed:\n{sidecar.tail(10)}", file=sys.stderr)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help=f"runs per figure (1-{MAX_RUNS})")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds after ready before RSS")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="compile kipsec's sources at every start (PYTHONDONTWRITEBYTECODE=1)",
    )
    parser.add_argument(
        "--peers", default="0,10,100", help="configured peer counts, comma-separated (0-254)"
    )
    parser.add_argument(
        "--datapath",
        choices=("userspace", "auto"),
        default="userspace",
        help="the sidecars' datapath setting (auto: probe the kernel first)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=VAR=VALUE[,VAR=VALUE]",
        help="also start with these environment variables (repeatable)",
    )
    args = parser.parse_args()
    runs = max(1, min(args.runs, MAX_RUNS))
    counts = [max(0, min(int(c), 254)) for c in args.peers.split(",")]
    variants: dict[str, dict[str, str]] = {"base": {}, **parse_variants(args.variant)}
    idle = max(0.0, min(args.idle, 10.0))
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    print(f"load average before: {loadavg()}  ({os.cpu_count()} CPUs, {runs} runs each)")
    with tempfile.TemporaryDirectory(prefix="kipsec-startup-") as tmp:
        bytecode(not args.no_bytecode, Path(tmp))
        return measure(Path(tmp), runs, idle, counts, variants, args.datapath)


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


def measure(
    tmp: Path,
    runs: int,
    idle: float,
    counts: list[int],
    variants: dict[str, dict[str, str]],
    datapath: str,
) -> int:
    """Print the import rows, then ``runs`` interleaved rounds of starts: every peer
    count with every variant once per round."""
    imports = import_times(runs, IMPORTS + (PROBE_IMPORTS if datapath == "auto" else ()))
    sweep_stale()
    measured: dict[tuple[int, str], list[dict[str, Any]]] = {
        (count, name): [] for count in counts for name in variants
    }
    with Topology() as topo:
        topo.add_node("a")
        topo.add_pod("pm", "a")
        topo.ip("pm", f"route add blackhole {FAKE_PEERS}")
        sidecars = {count: prepare(topo, tmp, count, datapath) for count in counts}
        # Unmeasured: the first start also fills the bytecode cache (modules a start loads
        # beyond the imports above) and the page cache.
        warm = prepare(topo, tmp, 1, datapath, name="warm-up")
        for env in variants.values():
            start(topo, warm, 1, 0.0, env)
        for _ in range(runs):
            for count in counts:
                for name, env in variants.items():
                    measured[count, name].append(start(topo, sidecars[count], count, idle, env))
    print(f"load average after:  {loadavg()}")

    print("\nimport, wall seconds of `python -c 'import M'` (median (min-max)), modules, VmRSS")
    for label, (times, modules, rss) in imports.items():
        print(f"  {label:32} {median(times):28} {modules:5d} modules {rss:6.1f} MiB")
    print(
        f"\nkipsec-sidecar run (datapath: {datapath}), exec to ready and CPU to ready, seconds;"
        " memory idle, MiB"
    )
    print(
        f"  {'variant':8} {'peers':>5}  {'/healthz 200':22} {'control answers':22} "
        f"{'CPU to ready':22} {'VmRSS':22} RssAnon"
    )
    for (count, name), results in measured.items():

        def column(key: str, results: list[dict[str, Any]] = results) -> list[float]:
            return [r[key] for r in results if r.get(key) is not None]

        failed = sum(1 for r in results if r["ready"] is None)
        print(
            f"  {name:8} {count:5d}  {median(column('ready')):22} {median(column('control')):22} "
            f"{median(column('cpu')):22} {median(column('VmRSS')):22} "
            f"{median(column('RssAnon'))}" + (f"  ({failed} failed)" if failed else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
