"""KernelDatapath with IPv6 outer addresses against a real kernel, inside the test VM.

The session's VM boot (``conftest.py``) runs ``kernel_ipv6_checks.py``: ESP tunnel and
transport mode between IPv6 endpoints and IPv4 traffic in an IPv6 tunnel (4-in-6), with
manual SAs installed through ``KernelDatapath``/``XfrmSocket``; each test here asserts
one of its checks.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.vm import assert_check, assert_no_failures, assert_ran_in_the_vm

pytestmark = pytest.mark.vm

_LINK = ("ping", "wire-is-esp-over-ipv6", "ip-xfrm-state-a", "ip-xfrm-state-b")
_POLICIES = ("ip-xfrm-policy-a", "ip-xfrm-policy-b", "close-leaves-nothing")
CHECKS = (
    "topology/ipv6-reachable",
    *(f"{link}/{name}" for link in ("v6-tunnel", "v6-transport", "4in6") for name in _LINK),
    *(f"{link}/{name}" for link in ("v6-tunnel", "v6-transport", "4in6") for name in _POLICIES),
)


@pytest.mark.parametrize("name", CHECKS)
def test_kernel_ipv6_check(vm_result: dict[str, Any], name: str) -> None:
    assert_check(vm_result, name)


def test_no_unexpected_failures(vm_result: dict[str, Any]) -> None:
    assert_no_failures(vm_result)


def test_ran_on_a_kernel_with_esp(vm_result: dict[str, Any]) -> None:
    assert_ran_in_the_vm(vm_result)
