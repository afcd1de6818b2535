"""The kernel XFRM datapath against a real kernel with ESP and AH, inside a VM.

One VM boot (about 20 s, software emulation) runs ``kernel_xfrm_checks.py`` there; each
test below asserts one of its checks. In two node namespaces (pods behind them for
tunnel mode) kipsec's ``XfrmSocket`` installs states and policies built from the cores'
``IpsecSa`` and the daemon's ``PeerPolicy``; pings cross; the wire capture holds only
ESP, ESP-in-UDP or AH; ``ip xfrm`` lists exactly the expected entries; the SA counters
count the packets; ACQUIRE and soft/hard EXPIRE arrive; cleanup removes everything.

``KIPSEC_SAVE_XFRM_FIXTURES=1`` also writes the kernel replies the VM recorded to
``tests/unit/data/xfrm/`` (the codec unit tests decode them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from support.vm import assert_check, assert_no_failures, assert_ran_in_the_vm

pytestmark = pytest.mark.vm

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "unit" / "data" / "xfrm"

SCENARIOS = (
    "esp-tunnel-gcm",
    "esp-transport-chacha",
    "esp-tunnel-cbc",
    "esp-tunnel-gcm-udp",
    "esp-transport-gcm-esn",
    "ah-tunnel",
    "ah-transport",
)
SCENARIO_CHECKS = (
    "ping",
    "wire",
    "stats",
    "ip-xfrm-state-a",
    "ip-xfrm-state-b",
    "ip-xfrm-policy-a",
    "ip-xfrm-policy-b",
    "flush-a",
    "flush-b",
)
OTHER_CHECKS = (
    "probe/kernel",
    "probe/left-nothing",
    "acquire/received",
    "acquire/fail-closed",
    "expire/soft-then-hard",
    "allocspi/range-and-update",
    "dump/decoded",
    "dump/flushed",
    "error/ext-ack",
)
ALL_CHECKS = tuple(f"{s}/{c}" for s in SCENARIOS for c in SCENARIO_CHECKS) + OTHER_CHECKS


@pytest.fixture(scope="module")
def vm_result(vm_checks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if "kernel_xfrm" not in vm_checks:
        pytest.fail(f"the VM run has no result for kernel_xfrm: {sorted(vm_checks)}")
    result = vm_checks["kernel_xfrm"]
    if os.environ.get("KIPSEC_SAVE_XFRM_FIXTURES") == "1":
        FIXTURES.mkdir(parents=True, exist_ok=True)
        for name, datagrams in result["fixtures"].items():
            (FIXTURES / f"{name}.hex").write_text("\n".join(datagrams) + "\n")
    return result


@pytest.mark.parametrize("name", ALL_CHECKS)
def test_kernel_check(vm_result: dict[str, Any], name: str) -> None:
    assert_check(vm_result, name)


def test_no_unexpected_failures(vm_result: dict[str, Any]) -> None:
    """Checks the list above does not name (a crashed step's ``…/ran``) fail here."""
    assert_no_failures(vm_result)


def test_ran_on_a_kernel_with_esp(vm_result: dict[str, Any]) -> None:
    assert_ran_in_the_vm(vm_result)
