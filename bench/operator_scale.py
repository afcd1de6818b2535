"""The operator at scale against kmock's Kubernetes emulator.

Run: ``.venv/bin/python bench/operator_scale.py [--sizes 100,1000,5000] [--timeout 240]
[--shape mesh|external]`` (``--profile DIR`` runs the operator under cProfile and writes
``DIR/operator-<N>.prof`` per size; read it with ``python -m pstats``.)

For each size N: N pods on 50 emulated nodes, and with ``--shape mesh`` (the default)
N/10 PSK-mesh Tunnels of 10 pods each; with ``--shape external`` one ExternalPeer (a
gateway with a subnet behind it, PSK) and one Tunnel selecting every pod towards it.
The emulator runs in this process; the operator runs as a subprocess
(``python -m kipsec_operator.main run --standalone --server URL``), so its RSS is its
own. Measured:

* apply → every per-pod Secret holds a document (objects created 32 at a time; checked
  every 50 ms, every 250 ms above 1,000 pods);
* one change, made once the pass that configured everything has ended (every Tunnel's
  status counts its pods): mesh, a pod's new IP → every peer's document carries it;
  external, a subnet added to the ExternalPeer → every pod's document carries it;
* how many pods were configured when the size finished or timed out;
* the operator's CPU seconds (user + system) from start to that point: its own cost,
  which a loaded machine does not inflate as it does wall times;
* the operator's RSS afterwards (VmRSS, and VmHWM: the peak);
* the pure ``plan()`` over the same objects (no API, no emulator), to tell the
  operator's own rendering cost from the emulator's.

A size that does not finish within ``--timeout`` seconds is reported as such.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "lab"))  # until the editable install lists the lab package

from kipsec_lab.apiserver import Emulator, serve  # noqa: E402
from kipsec_operator.handlers import RESOURCES  # noqa: E402
from kipsec_operator.kube import Connection, Kube, object_path  # noqa: E402
from kipsec_operator.reconcile.cluster import Cluster  # noqa: E402
from kipsec_operator.reconcile.render import plan  # noqa: E402
from support.operator_objects import (  # noqa: E402
    PSK,
    b64,
    external_peer,
    external_spec,
    namespace,
    pod,
    psk_mesh_spec,
    tunnel,
)
from support.procstat import cpu_seconds  # noqa: E402

NODES = 50
PODS_PER_TUNNEL = 10
CONCURRENCY = 32


ADDED_SUBNET = "172.21.0.0/24"
"""The subnet the external shape's change adds to the ExternalPeer."""


def objects(size: int, shape: str = "mesh") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(namespace, Secrets, ExternalPeer and Tunnels; pods) of one size."""
    setup: list[dict[str, Any]] = [namespace("default")]
    setup.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mesh-psk", "namespace": "default"},
            "data": {"psk": b64(PSK)},
        }
    )
    if shape == "external":
        setup.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "site-psk", "namespace": "default"},
                "data": {"psk": b64(PSK)},
            }
        )
        setup += [external_peer(), tunnel("to-site", external_spec("all"))]
    else:
        setup += [
            tunnel(f"t{t}", psk_mesh_spec(app=f"a{t}")) for t in range(size // PODS_PER_TUNNEL)
        ]
    pods = []
    for i in range(size):
        item = pod(f"p{i}", f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}")
        app = "all" if shape == "external" else f"a{i // PODS_PER_TUNNEL}"
        item["metadata"]["labels"] = {"app": app}
        item["spec"]["nodeName"] = f"node-{i % NODES}"
        # As the webhook leaves them: a pod without the sidecar costs a Warning Event each.
        item["spec"]["initContainers"] = [{"name": "kipsec", "image": "kipsec-sidecar"}]
        del item["metadata"]["uid"]
        pods.append(item)
    return setup, pods


PLURALS = {
    "Namespace": "namespaces",
    "Secret": "secrets",
    "Tunnel": "tunnels",
    "ExternalPeer": "externalpeers",
    "Pod": "pods",
}


async def create(kube: Kube, obj: dict[str, Any]) -> None:
    kind = obj["kind"]
    api_version = "kipsec.io/v1alpha1" if kind in ("Tunnel", "ExternalPeer") else "v1"
    ns = None if kind == "Namespace" else obj["metadata"]["namespace"]
    body = {k: v for k, v in obj.items() if k != "status"}
    await kube.create(object_path(api_version, PLURALS[kind], ns), body)
    if kind == "Pod":
        path = object_path("v1", "pods", ns, obj["metadata"]["name"]) + "/status"
        await kube.merge_patch(path, {"status": obj["status"]})


async def create_all(kube: Kube, items: list[dict[str, Any]]) -> None:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(obj: dict[str, Any]) -> None:
        async with limit:
            await create(kube, obj)

    await asyncio.gather(*(one(obj) for obj in items))


def configured(emulator: Emulator) -> dict[str, dict[str, Any]]:
    found = {}
    for secret in emulator.listing("v1/secrets", "default"):
        if (secret.get("data") or {}).get("config.yaml"):
            found[secret["metadata"]["annotations"]["kipsec.io/pod"]] = secret
    return found


def settled(emulator: Emulator, size: int, shape: str) -> bool:
    """Every Tunnel's status counts its pods: the pass that configured them has ended."""
    tunnels = emulator.listing("kipsec.io/v1alpha1/tunnels", "default")
    wanted = size if shape == "external" else PODS_PER_TUNNEL
    return all((t.get("status") or {}).get("pods") == wanted for t in tunnels)


def peers_of(secret: dict[str, Any]) -> list[str]:
    document = json.loads(base64.b64decode(secret["data"]["config.yaml"]))
    return [peer["address"] for peer in document["peers"]]


def remote_selectors(secret: dict[str, Any]) -> list[str]:
    document = json.loads(base64.b64decode(secret["data"]["config.yaml"]))
    return [cidr for peer in document["peers"] for cidr in peer["trafficSelectors"]["remote"]]


async def change(kube: Kube, emulator: Emulator, size: int, shape: str) -> Any:
    """Make the shape's one change; return the check that it reached every document."""
    if shape == "external":
        path = object_path("kipsec.io/v1alpha1", "externalpeers", "default", "site")
        await kube.merge_patch(path, {"spec": {"subnets": ["172.20.0.0/24", ADDED_SUBNET]}})
        return lambda: (
            all(
                ADDED_SUBNET in remote_selectors(secret) for secret in configured(emulator).values()
            )
            and len(configured(emulator)) == size
        )
    new_ip = "10.250.250.250"
    await kube.merge_patch(
        object_path("v1", "pods", "default", "p0") + "/status",
        {"status": {"podIP": new_ip, "podIPs": [{"ip": new_ip}]}},
    )

    def propagated() -> bool:
        secrets = configured(emulator)
        peers = [f"p{i}" for i in range(1, PODS_PER_TUNNEL)]
        return all(new_ip in peers_of(secrets[name]) for name in peers)

    return propagated


async def wait(check: Any, deadline: float, interval: float = 0.05) -> bool:
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(interval)
    return False


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid` in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


async def one_size(
    size: int, timeout: float, profile: Path | None = None, shape: str = "mesh"
) -> dict[str, Any]:
    setup, pods = objects(size, shape)
    # Checking scans every stored Secret in this process, which also serves the operator:
    # above 1,000 pods poll less often so the check does not slow what it measures.
    interval = 0.05 if size <= 1000 else 0.25
    tunnels = 1 if shape == "external" else size // PODS_PER_TUNNEL
    row: dict[str, Any] = {"shape": shape, "pods": size, "tunnels": tunnels}
    started = time.perf_counter()
    plan(
        Cluster.of(
            [
                *setup,
                *(dict(p, metadata={**p["metadata"], "uid": p["metadata"]["name"]}) for p in pods),
            ]
        )
    )
    row["plan_s"] = time.perf_counter() - started
    if profile:
        profile.mkdir(parents=True, exist_ok=True)
    async with serve() as (emulator, url):
        env = dict(os.environ, PYTHONPATH=f"{ROOT / 'operator'}:{ROOT / 'sidecar'}")
        profiler = (
            ["-m", "cProfile", "-o", str(profile / f"operator-{size}.prof")] if profile else []
        )
        process = subprocess.Popen(
            [
                sys.executable,
                *profiler,
                "-m",
                "kipsec_operator.main",
                "run",
                "--standalone",
                "--server",
                url,
                "--listen",
                "127.0.0.1:0",
                "--report-interval",
                "3600",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout
            await wait(lambda: len(emulator.watched) >= len(RESOURCES), deadline)
            async with Kube(Connection(url)) as kube:
                started = time.perf_counter()
                await create_all(kube, setup)
                await create_all(kube, pods)
                row["apply_s"] = time.perf_counter() - started
                done = await wait(lambda: len(configured(emulator)) == size, deadline, interval)
                row["configured_s"] = time.perf_counter() - started if done else None
                row["configured"] = len(configured(emulator))
                row["cpu_s"] = cpu_seconds(process.pid)
                if done and await wait(lambda: settled(emulator, size, shape), deadline, interval):
                    started = time.perf_counter()
                    propagated = await change(kube, emulator, size, shape)
                    moved = await wait(propagated, time.monotonic() + min(timeout, 120), interval)
                    row["change_s"] = time.perf_counter() - started if moved else None
            row["rss_mib"], row["peak_mib"] = memory(process.pid)
        finally:
            process.terminate()
            try:
                process.wait(30 if profile else 10)  # cProfile writes its file on the way out
            except subprocess.TimeoutExpired:  # busy in a long pass: SIGTERM waits for it
                process.kill()
                process.wait(10)
    return row


def fmt(value: Any) -> str:
    if value is None:
        return "timeout"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per size")
    parser.add_argument("--profile", type=Path, help="write the operator's cProfile here")
    parser.add_argument(
        "--shape",
        choices=("mesh", "external"),
        default="mesh",
        help="10-pod PSK meshes, or every pod towards one ExternalPeer",
    )
    args = parser.parse_args()
    columns = [
        "shape",
        "pods",
        "tunnels",
        "plan_s",
        "apply_s",
        "configured_s",
        "configured",
        "cpu_s",
        "change_s",
        "rss_mib",
        "peak_mib",
    ]
    print(" | ".join(f"{c:>12}" for c in columns))
    for size in (int(s) for s in args.sizes.split(",")):
        row = asyncio.run(one_size(size, args.timeout, args.profile, args.shape))
        print(" | ".join(f"{fmt(row.get(c)):>12}" for c in columns), flush=True)
        if row.get("configured_s") is None:
            print(f"size {size} did not finish within {args.timeout:.0f} s; larger sizes skipped")
            break


if __name__ == "__main__":
    main()
