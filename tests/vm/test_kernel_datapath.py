"""KernelDatapath, the daemon's kernel datapath, against a real kernel inside a VM.

One VM boot runs ``kernel_datapath_checks.py``: two node namespaces with a pod behind
each, one datapath per node (tunnel mode, gateway), manual SAs. Each test asserts one
of its checks: fail closed with an ACQUIRE before any SA, traffic once SAs are set,
``ip xfrm`` shows exactly the datapath's states and policies, a make-before-break rekey
under a 20 pps ping loses nothing, counters survive the rekey, a restart removes a
crashed run's leftovers, ``close`` leaves nothing.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

pytestmark = pytest.mark.vm

CHECKS = (
    "no-sa/fail-closed",
    "no-sa/acquire-callback-once",
    "sa/traffic-flows",
    "sa/ip-xfrm-state",
    "sa/ip-xfrm-policy",
    "rekey/no-loss",
    "rekey/only-new-states",
    "stats/count-across-rekey",
    "stats/views",
    "restart/removes-stale",
    "close/leaves-nothing",
)


@pytest.mark.parametrize("name", CHECKS)
def test_kernel_datapath_check(vm_result: dict[str, Any], name: str) -> None:
    checks = vm_result["checks"]
    assert name in checks, f"check {name} did not run; failures: " + "; ".join(
        f"{k}: {v['detail'][-800:]}" for k, v in checks.items() if not v["ok"]
    )
    assert checks[name]["ok"], checks[name]["detail"]


def test_no_unexpected_failures(vm_result: dict[str, Any]) -> None:
    failed = {k: v["detail"][-1500:] for k, v in vm_result["checks"].items() if not v["ok"]}
    assert not failed, failed


def test_ran_on_a_kernel_with_esp(vm_result: dict[str, Any]) -> None:
    assert vm_result["kernel"] != os.uname().release, "the checks ran on the host kernel"
