"""Service ClusterIP translation on the kernel datapath, inside the test VM.

The session's VM boot (``conftest.py``) runs ``kernel_services_checks.py``: two sidecars
on ``datapath: kernel``, a TCP connection to a ClusterIP that exists nowhere, translated
in the client pod to the peer and carried by the kernel's ESP; each test here asserts
one of its checks.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.vm

CHECKS = (
    "kernel/datapath-is-kernel",
    "kernel/cluster-ip-roundtrip",
    "kernel/wire-is-esp-in-udp",
)


@pytest.mark.parametrize("name", CHECKS)
def test_kernel_services_check(vm_result: dict[str, Any], name: str) -> None:
    checks = vm_result["checks"]
    assert name in checks, f"check {name} did not run; failures: " + "; ".join(
        f"{k}: {v['detail'][-800:]}" for k, v in checks.items() if not v["ok"]
    )
    assert checks[name]["ok"], checks[name]["detail"]
