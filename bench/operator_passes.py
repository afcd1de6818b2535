"""The operator's reconcile passes alone, in-process: no kopf, no API, no emulator.

Run: ``.venv/bin/python bench/operator_passes.py [--size 5000] [--batch 20]``

`operator_scale.py`'s CPU column moves with the load of the machine (a slower emulator
spreads the objects over more passes) and holds kopf's share; this one counts only the
passes, with a fixed number of them. A :class:`Reconciler` with a writer that feeds each
Secret it writes back as the watch would (after the write) takes the mesh of
`operator_scale.py` (N/10 PSK-mesh Tunnels of 10 pods), then its pods `--batch` at a
time, each pod created without and then given its IP, a pass per batch; then one pod's
new IP. Printed: the passes' CPU seconds (``time.process_time``), the Secrets written,
and the CPU of the one-change pass.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from kipsec_operator.reconcile.cluster import K8sObject  # noqa: E402
from kipsec_operator.reconciler import Reconciler  # noqa: E402
from operator_scale import objects  # type: ignore[import-not-found]  # noqa: E402  (this directory)


class Echo:
    """A Writer whose Secret writes come back as watch events, after the write."""

    def __init__(self) -> None:
        self.reconciler: Reconciler | None = None
        self.secrets = 0

    async def apply_secret(
        self,
        manifest: Mapping[str, Any],
        previous: Mapping[str, str] | None,
        digests: Mapping[str, str] | None = None,  # optional: older commits pass none
    ) -> None:
        self.secrets += 1
        assert self.reconciler is not None
        echo = copy.deepcopy(dict(manifest))
        asyncio.get_running_loop().call_soon(self.reconciler.observe, "Secret", "ADDED", echo)

    async def patch_status(self, tunnel: K8sObject, status: Mapping[str, Any]) -> None:
        pass

    async def event(self, obj: K8sObject, type_: str, reason: str, message: str) -> None:
        pass


async def measure(size: int, batch: int) -> dict[str, Any]:
    writer = Echo()
    live = Reconciler(writer, clock=lambda: "2026-12-07T00:00:00Z")
    writer.reconciler = live
    setup, pods = objects(size)
    for obj in setup:
        live.observe(str(obj["kind"]), "ADDED", obj)
    await live.reconcile()
    for i, item in enumerate(pods):
        item["metadata"]["uid"] = f"uid-{i}"
    started = time.process_time()
    passes = 0
    for first in range(0, size, batch):
        for item in pods[first : first + batch]:
            live.observe("Pod", "ADDED", {k: v for k, v in item.items() if k != "status"})
            live.observe("Pod", "MODIFIED", item)
        await live.reconcile()
        passes += 1
    applied = time.process_time() - started
    moved = copy.deepcopy(pods[0])
    moved["status"]["podIP"] = "10.250.250.250"
    moved["status"]["podIPs"] = [{"ip": "10.250.250.250"}]
    live.observe("Pod", "MODIFIED", moved)
    started = time.process_time()
    await live.reconcile()
    return {
        "pods": size,
        "batch": batch,
        "passes": passes,
        "passes_cpu_s": applied,
        "secrets": writer.secrets,
        "change_cpu_ms": 1000 * (time.process_time() - started),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    row = asyncio.run(measure(args.size, args.batch))
    print(" | ".join(f"{c:>13}" for c in row))
    print(" | ".join(f"{v:>13.2f}" if isinstance(v, float) else f"{v:>13}" for v in row.values()))


if __name__ == "__main__":
    main()
