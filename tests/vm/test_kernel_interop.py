"""kipsec's kernel datapath against other IPsec implementations, inside the test VM.

The session's VM boot (``conftest.py``) runs ``kernel_interop_checks.py`` (see its
docstring): a kernel-datapath sidecar against a userspace-datapath one (AH tunnel over
IPv4, transport over IPv6) and against strongSwan's charon with ``kernel-netlink`` (ESP
tunnel in UDP, raw ESP transport, AH over IPv4 and IPv6, tunnel and transport; and an
IKEv1 link: main mode and quick mode with PSK, raw ESP tunnel, a charon-initiated
phase-2 rekey under traffic). Each test here asserts one of its checks. The AH ones
failed before kipsec's IPv4 AH states carried ``XFRM_STATE_ALIGN4`` (issue 12).
"""

from __future__ import annotations

from typing import Any

import pytest

from support.vm import assert_check, assert_no_failures, assert_ran_in_the_vm

pytestmark = pytest.mark.vm

#: What every link is checked for (``kernel_interop_checks.check_link``).
_LINK = ("traffic-both-ways", "ip-xfrm-state", "ip-xfrm-policy")
_AH = (*_LINK, "wire-is-ah", "ah-length")
_AH_LINKS = ("ipv4-tunnel-raw", "ipv4-transport-raw", "ipv6-tunnel-raw", "ipv6-transport-raw")
_USERSPACE_LINKS = ("ipv4-tunnel-raw", "ipv6-transport-raw")
CHECKS = (
    "userspace/datapaths",
    *(f"userspace/ah-{link}/{name}" for link in _USERSPACE_LINKS for name in _AH),
    "userspace-pb/sigterm-leaves-nothing",
    *(
        f"charon/esp-ipv4-tunnel-udp/{name}"
        for name in (*_LINK, "wire-is-esp-in-udp", "charon-has-the-child")
    ),
    *(
        f"charon/esp-ipv4-transport-raw/{name}"
        for name in (*_LINK, "wire-is-esp", "charon-has-the-child")
    ),
    *(
        f"charon/ah-{link}/{name}"
        for link in _AH_LINKS
        for name in (*_AH, "charon-has-the-child", "align4-as-charon")
    ),
    *(
        f"charon/esp-ipv4-tunnel-raw-ikev1/{name}"
        for name in (
            *_LINK,
            "wire-is-esp",
            "charon-has-the-child",
            "ike-version-1",
            "rekey-no-loss",
            "rekey-new-states-only",
        )
    ),
    "interop-pa/sigterm-leaves-nothing",
)


@pytest.mark.parametrize("name", CHECKS)
def test_kernel_interop_check(vm_result: dict[str, Any], name: str) -> None:
    assert_check(vm_result, name)


def test_no_unexpected_failures(vm_result: dict[str, Any]) -> None:
    assert_no_failures(vm_result)


def test_ran_on_a_kernel_with_esp(vm_result: dict[str, Any]) -> None:
    assert_ran_in_the_vm(vm_result)
