"""The few host operations the lab performs: network namespaces, veths, processes.

Everything is created with ``ip -n <netns>`` so it never depends on which namespace the
caller is in, and named by :class:`~kipsec_lab.topology.Names`, so :func:`sweep` finds
what a crashed lab left behind. The host's own network namespace is never changed: the
bridge and the gateway address live in the lab's control namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from .topology import BRIDGE, Names

CLONE_NEWNET = 0x40000000
TIMEOUT = 15.0


class HostError(RuntimeError):
    """A host command failed; the message holds the command and its stderr."""


def run(argv: Sequence[str], *, check: bool = True, timeout: float = TIMEOUT) -> str:
    """Run ``argv`` (bounded by ``timeout``); its stdout."""
    try:
        done = subprocess.run(  # noqa: S603 - the lab's own fixed commands
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise HostError(f"{' '.join(argv)}: timed out after {timeout}s") from None
    if check and done.returncode != 0:
        raise HostError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def netns_list() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line.strip()]


def netns_pids(netns: str) -> list[int]:
    return [int(pid) for pid in run(["ip", "netns", "pids", netns], check=False).split()]


def create_control(names: Names, gateway: str, prefixlen: int) -> None:
    """The control namespace with the lab bridge holding the gateway address."""
    ns = names.control
    run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "-n", ns, "addr", "add", f"{gateway}/{prefixlen}", "dev", BRIDGE])
    run(["ip", "-n", ns, "link", "set", BRIDGE, "up"])


def create_pod_netns(
    names: Names, namespace: str, name: str, address: str, prefixlen: int, gateway: str
) -> str:
    """A pod's network namespace: ``eth0`` (a veth port of the lab bridge) with
    ``address``, default route via ``gateway``. Returns the netns name."""
    netns = names.pod_netns(namespace, name)
    veth = names.veth(namespace, name)
    run(["ip", "netns", "add", netns])
    try:
        run(["ip", "-n", names.control, "link", "add", veth, "type", "veth",
             "peer", "name", "eth0", "netns", netns])  # fmt: skip
        run(["ip", "-n", names.control, "link", "set", veth, "master", BRIDGE, "up"])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        run(["ip", "-n", netns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0"])
        run(["ip", "-n", netns, "link", "set", "eth0", "up"])
        run(["ip", "-n", netns, "route", "add", "default", "via", gateway])
    except HostError:
        delete_netns(netns)
        raise
    return netns


def delete_netns(netns: str) -> None:
    """Kill what runs in ``netns`` and delete it (its veth goes with it). Idempotent."""
    if netns not in netns_list():
        return
    for pid in netns_pids(netns):
        if pid != os.getpid():  # the supervisor itself lives in the control namespace
            kill(pid, signal.SIGKILL)
    run(["ip", "netns", "del", netns], check=False)


def sweep(names: Names) -> list[str]:
    """Delete every namespace of lab ``names`` (pods first); the ones deleted."""
    owned = [ns for ns in netns_list() if names.owns(ns)]
    owned.sort(key=lambda ns: ns == names.control)
    for netns in owned:
        delete_netns(netns)
    return owned


def kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie — exited, not yet reaped by its parent — does not:
    the supervisor's parent is whichever process ran ``kipsec lab up``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def stop_process(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 5.0
) -> None:
    """Send ``sig`` to ``process`` (SIGINT makes tcpdump flush its file), SIGKILL it
    after ``timeout`` seconds; reaped either way."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_group(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL what is left after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid if not alive(pid) else 0
            if done:
                return
            time.sleep(0.05)


def wait_for_output(stream: IO[bytes], needle: bytes, timeout: float) -> bytes:
    """Read ``stream`` (a pipe) until ``needle`` appears; return what was read.

    Raises :class:`TimeoutError` (with the output so far) after ``timeout`` seconds or
    when the stream ends first. Reads with ``os.read`` on the raw descriptor, so it never
    blocks past the deadline.
    """
    deadline = time.monotonic() + timeout
    seen = b""
    fd = stream.fileno()
    while needle not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {needle!r} within {timeout}s; output so far: {seen!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            raise TimeoutError(f"stream closed before {needle!r}; output: {seen!r}")
        seen += chunk
    return seen


def enter_netns(netns: str) -> str:
    """Move the calling process (its network namespace) into ``netns``; children
    started afterwards inherit it. Returns a path to the namespace it left (a descriptor
    kept open for the process's lifetime), for :func:`in_netns`."""
    left = os.open("/proc/self/ns/net", os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(Path("/run/netns") / netns, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise HostError(f"setns({netns}): {os.strerror(errno)}")
    finally:
        os.close(fd)
    return f"/proc/{os.getpid()}/fd/{left}"


def in_netns(path: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run in the network namespace at ``path`` (``nsenter``)."""
    return ["nsenter", f"--net={path}", "--", *argv]


__all__ = [
    "HostError",
    "alive",
    "create_control",
    "create_pod_netns",
    "delete_netns",
    "enter_netns",
    "in_netns",
    "kill",
    "netns_list",
    "netns_pids",
    "run",
    "stop_group",
    "stop_process",
    "sweep",
    "wait_for_output",
]
