"""Containers from the images, as a kubelet runs them: a pod spec's container → podman.

:func:`podman_run` is the one translation of a Kubernetes container (and its pod) into
``podman run`` flags: the image's entry point or the container's ``command``, its
``args``, its environment (fieldRefs resolved from the pod), its volume mounts (the
kubelet's host directories of each volume, bind-mounted; a CharDevice hostPath, or an
extended resource a device plugin would satisfy, becomes ``--device``), and its
securityContext merged over the pod's: user and group, ``fsGroup``, capabilities
(``--cap-drop=all --cap-add=...``), read-only root filesystem (without the tmpfs podman
would add on /tmp and /run, which a Kubernetes container does not get), no privilege
escalation, seccomp. It joins the pod's network namespace (``--network ns:...``), as
the containers of a pod share the sandbox's. The lab runs the operator and every
injected sidecar through it; ``tests/unit/test_lab_podman_flags.py`` checks it against
the webhook's real output.

What this machine needs of podman (docs/lab.md): the ``runc`` runtime (``crun`` refuses
its hybrid cgroup layout) and explicit ulimits (podman's defaults exceed what it may
set). :func:`choose_runtime` decides between containers and the host-process fallback
(:mod:`.podexec`) and says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

from .volumes import container_env

PODMAN = ("podman", "--runtime", "runc")
"""podman with the runtime this machine needs (``crun`` fails on hybrid cgroups)."""
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000")
"""Limits at or below what this machine permits (podman's defaults are above)."""
LABEL = "io.kipsec.lab"
"""Label carrying the lab's name on each of its containers (for the sweep)."""
HOST_PROCESS = "host process"
"""What ``kipsec lab status`` shows for a sidecar run without an image."""
RUNTIME_MODES = ("auto", "podman", "host")


class ContainerSpecError(ValueError):
    """A container spec the lab cannot run faithfully; names the field."""


def image_names(tag: str | None = None) -> dict[str, str]:
    """The images ``./dev images`` builds: target → reference."""
    version = tag or metadata.version("kipsec")
    return {target: f"localhost/kipsec-{target}:{version}" for target in ("operator", "sidecar")}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    """Flags of the securityContext (the container's over the pod's, as the kubelet)."""
    pod_context = _mapping(_mapping(pod.get("spec")).get("securityContext"))
    context = {**pod_context, **_mapping(container.get("securityContext"))}
    flags: list[str] = []
    user = context.get("runAsUser")
    if context.get("runAsNonRoot") is True and user in (None, 0):
        where = "securityContext.runAsUser"
        raise ContainerSpecError(f"{where}: runAsNonRoot needs a non-zero runAsUser")
    if user is not None:
        group = context.get("runAsGroup")
        flags.append(f"--user={user}" if group is None else f"--user={user}:{group}")
    for group in [pod_context.get("fsGroup"), *(pod_context.get("supplementalGroups") or [])]:
        if group is not None:
            flags.append(f"--group-add={group}")
    if context.get("privileged") is True:
        flags.append("--privileged")
    capabilities = _mapping(context.get("capabilities"))
    for cap in capabilities.get("drop") or []:
        flags.append(f"--cap-drop={str(cap).lower()}")
    for cap in capabilities.get("add") or []:
        flags.append(f"--cap-add={str(cap).upper()}")
    if context.get("readOnlyRootFilesystem") is True:
        flags += ["--read-only", "--read-only-tmpfs=false"]
    if context.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    seccomp = _mapping(context.get("seccompProfile")).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        flags.append("--security-opt=seccomp=unconfined")
    elif seccomp != "RuntimeDefault":
        raise ContainerSpecError(f"securityContext.seccompProfile.type: {seccomp} is not supported")
    return flags


def _mounts(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    volume_dirs: Mapping[str, str],
    device_resources: Mapping[str, str],
) -> list[str]:
    volumes = {v.get("name"): v for v in _mapping(pod.get("spec")).get("volumes") or []}
    flags: list[str] = []
    for index, mount in enumerate(container.get("volumeMounts") or []):
        name, target = mount.get("name"), str(mount.get("mountPath"))
        volume = _mapping(volumes.get(name))
        host_path = _mapping(volume.get("hostPath"))
        if host_path.get("type") == "CharDevice":
            flags.append(f"--device={host_path['path']}:{target}")
            continue
        source = host_path.get("path") or volume_dirs.get(str(name))
        if source is None:
            raise ContainerSpecError(f"volumeMounts[{index}]: no volume {name!r} to mount")
        options = ",ro=true" if mount.get("readOnly") else ""
        flags.append(f"--mount=type=bind,source={source},destination={target}{options}")
    limits = _mapping(_mapping(container.get("resources")).get("limits"))
    for resource, device in sorted(device_resources.items()):
        if resource in limits:
            flags.append(f"--device={device}")
    return flags


def podman_run(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    name: str,
    netns: str,
    volume_dirs: Mapping[str, str],
    device_resources: Mapping[str, str] | None = None,
    hosts: Sequence[tuple[str, str]] = (),
    labels: Mapping[str, str] | None = None,
    pidfile: str | None = None,
) -> list[str]:
    """The ``podman`` argv that runs ``container`` of ``pod`` in the network namespace
    ``netns`` (a name under /run/netns or a path). ``volume_dirs``: the host directory
    the kubelet made for each volume by name (hostPath volumes need none);
    ``device_resources``: extended resource → device node, the lab's device plugin;
    ``hosts``: (name, address) pairs for /etc/hosts, the lab's cluster DNS. Pure: raises
    :class:`ContainerSpecError` for what it cannot translate."""
    image = container.get("image")
    if not image:
        raise ContainerSpecError(f"containers[{container.get('name')}].image: missing")
    meta = _mapping(pod.get("metadata"))
    path = netns if netns.startswith("/") else f"/run/netns/{netns}"
    argv = [*PODMAN, "run", "--rm", "--replace", f"--name={name}", "--pull=never"]
    argv += [f"--network=ns:{path}", f"--hostname={meta.get('name') or name}", *ULIMITS]
    argv += [f"--label={key}={value}" for key, value in sorted((labels or {}).items())]
    if pidfile is not None:
        argv.append(f"--pidfile={pidfile}")
    argv += [f"--add-host={host}:{address}" for host, address in hosts]
    argv += _security(pod, container)
    argv += _mounts(pod, container, volume_dirs, device_resources or {})
    argv += [f"--env={key}={value}" for key, value in container_env(pod, container).items()]
    if container.get("workingDir"):
        argv.append(f"--workdir={container['workingDir']}")
    command = container.get("command")
    if command:
        argv.append(f"--entrypoint={json.dumps(list(command))}")
    argv.append(str(image))
    argv += [str(arg) for arg in container.get("args") or []]
    return argv


@dataclass(frozen=True)
class Runtime:
    """How the lab runs containers: ``podman`` (from the images) or ``host`` processes,
    and why host when containers were possible to ask for."""

    mode: Literal["podman", "host"]
    reason: str
    images: Mapping[str, str]

    def describe(self) -> str:
        if self.mode == "podman":
            return f"containers (podman): {', '.join(self.images.values())}"
        return f"host processes ({self.reason})"


def missing_images(images: Mapping[str, str]) -> list[str]:
    """The images podman does not hold."""
    return [
        image
        for image in images.values()
        if subprocess.run(  # noqa: S603 - fixed argv
            [*PODMAN, "image", "exists", image], capture_output=True, timeout=30, check=False
        ).returncode
        != 0
    ]


def choose_runtime(requested: str, images: Mapping[str, str]) -> Runtime:
    """``host`` when asked; else podman when it is installed and holds both images;
    ``auto`` falls back to host processes (the reason says why), ``podman`` raises."""
    if requested not in RUNTIME_MODES:
        raise ContainerSpecError(f"--runtime {requested}: one of {', '.join(RUNTIME_MODES)}")
    if requested == "host":
        return Runtime("host", "asked for with --runtime host", images)
    if shutil.which("podman") is None or shutil.which("runc") is None:
        reason = "podman or runc is not installed (apt-get install podman runc)"
    else:
        missing = missing_images(images)
        reason = f"no image {', '.join(missing)} (build them: ./dev images)" if missing else ""
    if not reason:
        return Runtime("podman", "", images)
    if requested == "podman":
        raise ContainerSpecError(f"--runtime podman: {reason}")
    return Runtime("host", reason, images)


def remove(name: str) -> None:
    """Remove container ``name`` if it is left (its podman process was killed)."""
    subprocess.run(  # noqa: S603 - fixed argv
        [*PODMAN, "rm", "--force", "--ignore", "--time=2", name],
        capture_output=True,
        timeout=60,
        check=False,
    )


def sweep(lab: str) -> None:
    """Remove every container labelled as lab ``lab``'s."""
    subprocess.run(  # noqa: S603 - fixed argv
        [*PODMAN, "rm", "--force", "--time=2", "--filter", f"label={LABEL}={lab}"],
        capture_output=True,
        timeout=120,
        check=False,
    )


__all__ = [
    "HOST_PROCESS",
    "LABEL",
    "PODMAN",
    "RUNTIME_MODES",
    "ULIMITS",
    "ContainerSpecError",
    "Runtime",
    "choose_runtime",
    "image_names",
    "missing_images",
    "podman_run",
    "remove",
    "sweep",
]
