"""Run one container of a lab pod: ``python -m kipsec_lab.podexec SPEC.json``.

Started by the kubelet stand-in as ``ip netns exec <pod netns> unshare --mount
--propagation private python -m kipsec_lab.podexec SPEC``, so it is already in the
pod's network namespace and in a private mount namespace: the mounts below exist only
for this container and vanish with it. It gives the container the paths its spec names
(``/etc/kipsec``, ``/var/run/kipsec/identity``, ...) without touching the host's
filesystem: a fresh tmpfs on ``/run`` and an overlay on ``/etc`` (upper layer in that
tmpfs) make room for the mount points; ``/etc/hosts`` gains the lab's names (the
operator's Service name) and the system CA bundle the lab CA. Then it execs the
container's command with exactly its environment.

The spec (written by :mod:`.kubelet`): ``argv``, ``env``, ``mounts`` (``source``,
``target``, ``readOnly``), ``hosts`` (lines), ``ca`` (PEM path or null).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SCRATCH = Path("/run/.kipsec-lab")
FORBIDDEN_SOURCES = ("/run/", "/var/run/", "/etc/")
"""State-dir locations the fresh /run and the /etc overlay would hide."""


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, timeout=10)  # noqa: S603, S607 - util-linux


def prepare(spec: dict[str, Any]) -> None:
    """Make the container's filesystem view (see the module docstring)."""
    _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run")
    upper, work = SCRATCH / "etc-upper", SCRATCH / "etc-work"
    upper.mkdir(parents=True)
    work.mkdir()
    _mount(
        "-t", "overlay", "overlay", "-o", f"lowerdir=/etc,upperdir={upper},workdir={work}", "/etc"
    )
    hosts = Path("/etc/hosts")
    hosts.write_text(hosts.read_text() + "".join(f"{line}\n" for line in spec.get("hosts") or []))
    if spec.get("ca") and CA_BUNDLE.exists():
        CA_BUNDLE.write_text(CA_BUNDLE.read_text() + Path(spec["ca"]).read_text())
    for mount in sorted(spec.get("mounts") or [], key=lambda m: len(m["target"])):
        source, target = Path(mount["source"]), Path(mount["target"])
        if source == target:
            continue
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        _mount("--bind", str(source), str(target))
        if mount.get("readOnly"):
            _mount("-o", "remount,bind,ro", str(target))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    spec: dict[str, Any] = json.loads(Path(args[0]).read_text())
    prepare(spec)
    os.chdir("/")
    command: list[str] = spec["argv"]
    os.execvpe(command[0], command, spec["env"])  # noqa: S606 - the container's command


if __name__ == "__main__":
    main()
