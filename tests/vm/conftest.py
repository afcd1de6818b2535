"""The VM test group (DESIGN.md tier 3): select with ``-m vm``, leave out with ``-m "not vm"``.

Every module of this group asserts the checks of one script run inside the VM
(``<name>_checks.py``). A boot costs half a minute under software emulation, so the
session boots **once** and runs the scripts of every collected module in it
(``run_checks.py``); each module's ``vm_result`` fixture picks its part.
``KIPSEC_VM_RESULT=FILE`` also writes the whole result there as JSON (every check's
detail, each script's ``timings`` and ``script_seconds``).
"""

from __future__ import annotations

import compileall
import json
import os
from pathlib import Path
from typing import Any

import pytest

from support.requirements import unavailable
from support.vm import missing_requirements, run_python_in_vm

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
#: Test module → the checks script it asserts (``<value>_checks.py``).
SCRIPTS = {
    "test_kernel_xfrm.py": "kernel_xfrm",
    "test_kernel_datapath.py": "kernel_datapath",
    "test_kernel_sidecars.py": "kernel_sidecar",
    "test_kernel_ipv6.py": "kernel_ipv6",
    "test_kernel_lifecycle.py": "kernel_lifecycle",
    "test_kernel_services.py": "kernel_services",
    "test_kernel_interop.py": "kernel_interop",
}
#: Seconds each script may take inside the VM (software emulation, a loaded host).
SCRIPT_TIMEOUT = {
    "kernel_xfrm": 200.0,
    "kernel_datapath": 150.0,
    "kernel_sidecar": 420.0,
    "kernel_ipv6": 150.0,
    "kernel_lifecycle": 600.0,
    "kernel_services": 400.0,
    "kernel_interop": 1200.0,
}
BOOT_TIMEOUT = 60.0


def pytest_configure(config: pytest.Config) -> None:
    # Until pyproject.toml registers it (the suite runs with --strict-markers).
    config.addinivalue_line("markers", "vm: kernel tests inside a virtme-ng VM (root, ~15 min)")


@pytest.fixture(scope="session")
def vm_checks(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    """{script name: its result} for the scripts of the collected modules, one boot."""
    missing = missing_requirements()
    if missing:
        unavailable("test VM unavailable: missing " + ", ".join(missing))
    wanted = sorted(
        {SCRIPTS[item.path.name] for item in request.session.items if item.path.name in SCRIPTS}
    )
    # The VM sees this tree read-only: compile it here, or every import inside the VM
    # (slow under emulation) compiles again.
    for tree in ("sidecar", "lab", "tests/support", "tests/vm"):
        compileall.compile_dir(REPO / tree, quiet=1)
    timeout = BOOT_TIMEOUT + sum(SCRIPT_TIMEOUT[name] for name in wanted)
    args = [f"{name}:{SCRIPT_TIMEOUT[name]:g}" for name in wanted]
    result, _run = run_python_in_vm(HERE / "run_checks.py", *args, timeout=timeout)
    saved = os.environ.get("KIPSEC_VM_RESULT")
    if saved:  # every check's detail and each script's timings, for a human to read
        Path(saved).write_text(json.dumps(result, indent=1))
    return result


@pytest.fixture(scope="module")
def vm_result(
    request: pytest.FixtureRequest, vm_checks: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The result of the checks script of the requesting module (see :data:`SCRIPTS`)."""
    name = SCRIPTS[Path(str(request.module.__file__)).name]
    if name not in vm_checks:
        pytest.fail(f"the VM run has no result for {name}: {sorted(vm_checks)}")
    return vm_checks[name]
