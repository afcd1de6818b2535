"""Two sidecars on the kernel datapath through an SA's life, inside the test VM.

The session's VM boot (``conftest.py``) runs ``kernel_lifecycle_checks.py`` (see its
docstring): IPv6 peers (ESP tunnel in UDP, transport raw, 4-in-6), both sides reloading
a changed peer at once, the kernel's soft and hard byte/packet EXPIREs, a NAT between
the sidecars (the mapped port in the kernel's encapsulation) and the kernel's hard time
limit as a safety net for a crashed sidecar. Each test here asserts one of its checks.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.vm import assert_check, assert_no_failures, assert_ran_in_the_vm

pytestmark = pytest.mark.vm

_PAIR = ("traffic-both-ways", "ip-xfrm-state", "ip-xfrm-policy")
CHECKS = (
    *(f"ipv6-esp-tunnel-udp/{name}" for name in (*_PAIR, "wire-is-esp-in-udp")),
    *(f"ipv6-esp-transport-raw/{name}" for name in (*_PAIR, "wire-is-esp")),
    *(f"4in6/{name}" for name in (*_PAIR, "wire-is-esp-in-udp")),
    "reload-both/one-child-pair",
    *(f"reload-both/{name}" for name in _PAIR),
    "expire-soft/rekey-no-loss",
    "expire-soft/rekey-new-states-only",
    "expire-soft/rekeyed-by-kernel-expire",
    "expire-hard/child-deleted-on-kernel-expire",
    "expire-hard/re-established",
    "expire-hard/traffic-flows",
    *(f"nat/{name}" for name in (*_PAIR, "wire-is-esp-in-udp")),
    "nat/encap-has-mapped-port",
    "safety-net/kernel-hard-time",
    "safety-net/crashed-states-expire",
    "safety-net/policies-stay-fail-closed",
    "lifecycle-pb/sigterm-leaves-nothing",
)


@pytest.mark.parametrize("name", CHECKS)
def test_kernel_lifecycle_check(vm_result: dict[str, Any], name: str) -> None:
    assert_check(vm_result, name)


def test_no_unexpected_failures(vm_result: dict[str, Any]) -> None:
    assert_no_failures(vm_result)


def test_ran_on_a_kernel_with_esp(vm_result: dict[str, Any]) -> None:
    assert_ran_in_the_vm(vm_result)
