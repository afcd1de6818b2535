"""Two ``kipsec-sidecar run`` daemons on the kernel datapath, inside the test VM.

The session's VM boot (``conftest.py``) runs ``kernel_sidecar_checks.py`` (see its
docstring: ESP tunnel with UDP encapsulation, a capture decrypted by scapy and a rekey
under traffic; ESP transport raw by reload; crash recovery;
kernel against userspace; fail closed across a SIGTERM restart); each test here asserts
one of its checks. Against strongSwan: ``test_kernel_interop.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.vm import assert_check, assert_no_failures, assert_ran_in_the_vm

pytestmark = pytest.mark.vm

_PAIR = ("traffic-both-ways", "ip-xfrm-state", "ip-xfrm-policy")
CHECKS = (
    "esp-tunnel-udp/auto-chooses-kernel",
    "esp-tunnel-udp/wire-is-esp-in-udp",
    "esp-tunnel-udp/scapy-decrypts-capture",
    "esp-tunnel-udp/rekey-no-loss",
    "esp-tunnel-udp/rekey-new-states-only",
    *(f"esp-tunnel-udp/{name}" for name in _PAIR),
    "esp-transport-raw/wire-is-esp",
    *(f"esp-transport-raw/{name}" for name in _PAIR),
    "narrowed/state-carries-negotiated-selectors",
    "narrowed/forged-outside-selectors-dropped",
    "acquire/initiates-on-demand",
    "crash/kill-leaves-state",
    "crash/restart-removes-stale",
    "kernel-pb/sigterm-leaves-nothing",
    "mixed/datapaths",
    "mixed/wire-is-esp-in-udp",
    *(f"mixed/{name}" for name in _PAIR),
    "fail-closed/sigterm-keeps-policies-not-keys",
    "fail-closed/nothing-in-clear-while-down",
    *(f"fail-closed/{name}" for name in _PAIR),
    "fail-closed/restart-takes-over",
    "kernel-pa/sigterm-leaves-nothing",
)


@pytest.mark.parametrize("name", CHECKS)
def test_kernel_sidecar_check(vm_result: dict[str, Any], name: str) -> None:
    assert_check(vm_result, name)


def test_no_unexpected_failures(vm_result: dict[str, Any]) -> None:
    assert_no_failures(vm_result)


def test_ran_on_a_kernel_with_esp(vm_result: dict[str, Any]) -> None:
    assert_ran_in_the_vm(vm_result)
