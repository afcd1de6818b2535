"""Run a command inside a throwaway VM with a real distribution kernel (DESIGN.md tier 3).

This machine's kernel has XFRM netlink but no ESP/AH state types, so kernel-datapath
tests boot Debian's ``linux-image-amd64`` under QEMU with virtme-ng: the VM sees the
host's filesystem (read-only root with writable overlays), so it runs this repository
and its ``.venv`` directly. Software emulation only (``--disable-kvm``: KVM hangs on
this machine); a boot costs about 20 s, so a test module boots once and runs a whole
script of checks inside (see ``tests/vm/kernel_xfrm_checks.py``).

Needs: ``vng`` (PyPI ``virtme-ng``, in the venv), ``qemu-system-x86_64`` (Debian
``qemu-system-x86``), ``busybox`` static (Debian ``busybox-static``: virtme-ng's init
needs it) and a ``/boot/vmlinuz-*`` with its modules in ``/lib/modules``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOOT = Path("/boot")
DEFAULT_TIMEOUT = 240.0  # seconds for a whole boot + script + shutdown
RESULT_BEGIN = "=====KIPSEC-VM-RESULT-BEGIN====="
RESULT_END = "=====KIPSEC-VM-RESULT-END====="


class VmError(RuntimeError):
    """The VM could not run the command, or it printed no result; carries the output."""


@dataclass(frozen=True)
class VmRun:
    """What came back from one boot: exit status, combined console output, duration."""

    returncode: int
    output: str
    seconds: float


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def find_kernel() -> Path | None:
    """The newest ``/boot/vmlinuz-*`` whose modules are installed, or None."""
    candidates = []
    for image in BOOT.glob("vmlinuz-*"):
        release = image.name.removeprefix("vmlinuz-")
        if Path("/lib/modules", release).is_dir():
            candidates.append(image)
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def missing_requirements() -> list[str]:
    """What this machine lacks to boot the test VM (empty when it can)."""
    missing = []
    if not (_venv_bin() / "vng").exists() and shutil.which("vng") is None:
        missing.append("vng (pip install virtme-ng)")
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86_64 (apt install qemu-system-x86)")
    if shutil.which("busybox") is None:
        missing.append("busybox (apt install busybox-static)")
    if find_kernel() is None:
        missing.append("a /boot/vmlinuz-* with /lib/modules (apt install linux-image-amd64)")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def run_in_vm(command: str, *, timeout: float = DEFAULT_TIMEOUT, memory: str = "1G") -> VmRun:
    """Boot the VM, run ``command`` (a shell command line) as root inside, return its output.

    The boot is bounded by ``timeout`` seconds: past it, QEMU is killed and
    :class:`VmError` raised with whatever output there was.
    """
    missing = missing_requirements()
    if missing:
        raise VmError("cannot boot the test VM: missing " + ", ".join(missing))
    kernel = find_kernel()
    assert kernel is not None
    vng = _venv_bin() / "vng"
    env = dict(os.environ)
    env["PATH"] = f"{_venv_bin()}:{env.get('PATH', '/usr/bin:/bin')}"  # vng calls virtme-run
    argv = [
        str(vng if vng.exists() else "vng"),
        "--disable-kvm",
        "--memory",
        memory,
        "--run",
        str(kernel),
        "--user",
        "root",
        "--exec",
        command,
    ]
    started = time.monotonic()
    # QEMU runs in its own session so that a timeout kills the whole process group
    # (vng, virtme-run and QEMU), not just the vng front end.
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd="/",
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            log.seek(0)
            raise VmError(
                f"VM did not finish within {timeout}s; output:\n{log.read()[-6000:]}"
            ) from None
        finally:
            if proc.returncode is None:
                _kill_group(proc)
        log.seek(0)
        output = log.read()
    return VmRun(returncode, output, time.monotonic() - started)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the VM's process group (only the one this module started) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def run_python_in_vm(
    script: Path, *args: str, timeout: float = DEFAULT_TIMEOUT
) -> tuple[dict[str, Any], VmRun]:
    """Run a Python script with this interpreter inside the VM; parse its JSON result.

    The script prints one JSON document between :data:`RESULT_BEGIN` and
    :data:`RESULT_END` lines (console noise around it is ignored).
    """
    command = " ".join(shlex.quote(a) for a in (sys.executable, str(script), *args))
    run = run_in_vm(command, timeout=timeout)
    out = run.output
    begin, end = out.rfind(RESULT_BEGIN), out.rfind(RESULT_END)
    if begin < 0 or end < begin:
        raise VmError(f"no result from {script.name} (exit {run.returncode}):\n{out[-4000:]}")
    return json.loads(out[begin + len(RESULT_BEGIN) : end]), run


# --- assertions of the tests/vm modules over one script's result ---------------------------


def assert_check(result: dict[str, Any], name: str) -> None:
    """Check ``name`` of a checks script's result ran and passed (else: its detail, or
    every failure when it never ran — a crashed step records only ``<step>/ran``)."""
    checks = result["checks"]
    assert name in checks, f"check {name} did not run; failures: " + "; ".join(
        f"{k}: {v['detail'][-800:]}" for k, v in checks.items() if not v["ok"]
    )
    assert checks[name]["ok"], checks[name]["detail"]


def assert_no_failures(result: dict[str, Any]) -> None:
    """No check failed, including those no test names (a crashed step's ``…/ran``)."""
    failed = {k: v["detail"][-1500:] for k, v in result["checks"].items() if not v["ok"]}
    assert not failed, failed


def assert_ran_in_the_vm(result: dict[str, Any]) -> None:
    """The script ran on the VM's kernel, not on this host's (which lacks ESP)."""
    assert result["kernel"] != os.uname().release, "the checks ran on the host kernel"
