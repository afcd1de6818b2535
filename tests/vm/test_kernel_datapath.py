"""KernelDatapath, the daemon's kernel datapath, against a real kernel inside a VM.

One VM boot runs ``kernel_datapath_checks.py``: two node namespaces with a pod behind
each, one datapath per node (tunnel mode, gateway), manual SAs. Each test asserts one
of its checks: fail closed with an ACQUIRE before any SA, traffic once SAs are set,
``ip xfrm`` shows exactly the datapath's states and policies, a make-before-break rekey
under a 20 pps ping loses nothing, counters survive the rekey, a restart removes a
crashed run's leftovers, ``close`` leaves nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.vm import assert_check, assert_no_failures, assert_ran_in_the_vm

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
    "restart/keeps-stale-policies-until-taken-over",
    "restart/removes-stale",
    "close/leaves-nothing",
)


@pytest.mark.parametrize("name", CHECKS)
def test_kernel_datapath_check(vm_result: dict[str, Any], name: str) -> None:
    assert_check(vm_result, name)


def test_no_unexpected_failures(vm_result: dict[str, Any]) -> None:
    assert_no_failures(vm_result)


def test_ran_on_a_kernel_with_esp(vm_result: dict[str, Any]) -> None:
    assert_ran_in_the_vm(vm_result)
