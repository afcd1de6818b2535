"""The scheduler and kubelet stand-in: pods get a node, a network namespace, an
address, their volumes, and their native sidecar runs for real.

Level-triggered, like the kubelet's sync loop: every :attr:`Kubelet.period` seconds it
compares the pods and Secrets stored in the API server with what runs and converges
(a Secret change reaches the pod's volume within a period, through the atomic-writer
swap of :mod:`.volumes`). A container starts once every Secret it mounts exists, as
with the kubelet; the operator writes an empty bootstrap Secret before the pod has an
address, and the sidecar waits for its ``config.yaml`` to appear. Reads come straight
from the in-process emulator; writes (``spec.nodeName``, pod status) go through the HTTP
API so that every watcher — the operator — sees them as in a cluster.

Containers: only native sidecars (init containers with ``restartPolicy: Always``) are
run, restarted with a capped back-off when they exit. With the podman runtime each runs
from its image in the pod's netns, under exactly its spec (:func:`.containers.podman_run`);
in the host-process fallback, as a process of this machine's installation in the pod's
netns and a private mount namespace (:mod:`.podexec`). Application containers are not
run: the lab has no application images.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kipsec_operator.kube import ApiError, Kube, object_path

from . import containers, host
from .apiserver import Emulator
from .containers import HOST_PROCESS, Runtime
from .state import PodState
from .topology import Addresses, Names, node_names
from .volumes import DATA_LINK, container_env, secret_files, write_atomic

log = logging.getLogger("kipsec.lab.kubelet")

SIDECAR_COMMAND = str(Path(sys.executable).parent / "kipsec-sidecar")
"""The container image's entry point, installed beside this interpreter."""
MAX_BACKOFF = 10.0
PodKey = tuple[str, str, str]
"""(namespace, name, uid)."""


def native_sidecars(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The pod's init containers with ``restartPolicy: Always``."""
    init = (pod.get("spec") or {}).get("initContainers") or []
    return [c for c in init if c.get("restartPolicy") == "Always"]


def host_path(mounts: list[dict[str, Any]], path: str) -> Path | None:
    """Where the container path ``path`` is on the host, given its bind ``mounts``."""
    for mount in sorted(mounts, key=lambda m: -len(m["target"])):
        target = mount["target"].rstrip("/")
        if path == target or path.startswith(target + "/"):
            return Path(mount["source"]) / path[len(target) :].lstrip("/")
    return None


def probe_url(container: Mapping[str, Any], ip: str) -> str | None:
    """The URL of the container's startupProbe (``httpGet``; a named port is looked up
    in its ports), or None when it has none."""
    get = (container.get("startupProbe") or {}).get("httpGet")
    if not isinstance(get, Mapping):
        return None
    port = get.get("port")
    if isinstance(port, str):
        named = [p for p in container.get("ports") or [] if p.get("name") == port]
        port = named[0].get("containerPort") if named else None
    scheme = str(get.get("scheme", "HTTP")).lower()
    return f"{scheme}://{get.get('host') or ip}:{port}{get.get('path', '/')}"


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200-399 within a second (no proxy, as a kubelet's probe)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1.0) as answer:
            return 200 <= int(answer.status) < 400
    except (OSError, ValueError):
        return False


@dataclass
class Sandbox:
    """What the kubelet keeps for one pod."""

    key: PodKey
    state: PodState
    directory: Path
    token: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    """The container's process: podman's in the podman runtime, else the program's."""
    started: set[str] = field(default_factory=set)
    """Containers whose startupProbe has succeeded since they (re)started."""
    next_start: dict[str, float] = field(default_factory=dict)
    backoff: dict[str, float] = field(default_factory=dict)
    status_written: str = ""


class Kubelet:
    """Schedules, sandboxes and runs the lab's pods (see the module docstring)."""

    def __init__(
        self,
        emulator: Emulator,
        kube: Kube,
        names: Names,
        addresses: Addresses,
        pods_dir: Path,
        *,
        hosts: list[tuple[str, str]],
        ca_file: str | None,
        on_change: Callable[[list[PodState]], None],
        runtime: Runtime,
        lab: str = "",
        device_resources: Mapping[str, str] | None = None,
        period: float = 0.5,
    ) -> None:
        self.emulator = emulator
        self.kube = kube
        self.names = names
        self.addresses = addresses
        self.nodes = node_names(addresses.nodes)
        self.pods_dir = pods_dir
        self.hosts = hosts
        self.ca_file = ca_file
        self.on_change = on_change
        self.runtime = runtime
        self.lab = lab
        self.device_resources = dict(device_resources or {})
        """Extended resource → device node: the lab's device plugin (``kipsec.io/tun``)."""
        self.period = period
        self.sandboxes: dict[PodKey, Sandbox] = {}
        self._scheduled = 0

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kubelet sync failed; retrying")
            await asyncio.sleep(self.period)

    async def sync(self) -> None:
        live: dict[PodKey, dict[str, Any]] = {}
        for pod in self.emulator.listing("v1/pods"):
            meta = pod.get("metadata") or {}
            live[(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""))] = pod
        changed = False
        for key in [k for k in self.sandboxes if k not in live]:
            await asyncio.to_thread(self.teardown, self.sandboxes.pop(key))
            changed = True
        for key, pod in live.items():
            changed |= await self.sync_pod(key, pod)
        if changed:
            self.on_change([s.state for s in self.sandboxes.values()])

    async def sync_pod(self, key: PodKey, pod: dict[str, Any]) -> bool:
        namespace, name, _ = key
        path = object_path("v1", "pods", namespace, name)
        spec = pod.get("spec") or {}
        if not spec.get("nodeName"):
            node = self.nodes[self._scheduled % len(self.nodes)]
            self._scheduled += 1
            await self.kube.merge_patch(path, {"spec": {"nodeName": node}})
            return False
        sandbox = self.sandboxes.get(key)
        changed = False
        if sandbox is None:
            sandbox = await asyncio.to_thread(self.create_sandbox, key, spec["nodeName"])
            self.sandboxes[key] = sandbox
            changed = True
        pod = {**pod, "status": {**(pod.get("status") or {}), **self._network_status(sandbox)}}
        self.sync_volumes(sandbox, pod)
        changed |= self.sync_containers(sandbox, pod)
        changed |= await self.probe_startup(sandbox, pod)
        await self.write_status(sandbox, pod, path)
        return changed

    # --- sandbox -------------------------------------------------------------------------
    def create_sandbox(self, key: PodKey, node: str) -> Sandbox:
        namespace, name, uid = key
        index = self.nodes.index(node) if node in self.nodes else 0
        address = self.addresses.allocate(index)
        try:
            netns = host.create_pod_netns(
                self.names, namespace, name, str(address),
                self.addresses.cidr.prefixlen, str(self.addresses.gateway),
            )  # fmt: skip
        except host.HostError:
            self.addresses.release(str(address))
            raise
        directory = self.pods_dir / f"{namespace}_{name}_{uid[:8]}"
        directory.mkdir(parents=True, exist_ok=True)
        token = f"kipsec-lab.{uuid.uuid4().hex}"
        state = PodState(namespace, name, node, str(address), netns)
        log.info("sandbox created: pod %s/%s, %s, netns %s", namespace, name, address, netns)
        return Sandbox(key, state, directory, token)

    def teardown(self, sandbox: Sandbox) -> None:
        """Stop the pod's containers, delete its netns, free its address and files."""
        for cname, process in sandbox.processes.items():
            host.stop_group(process.pid)
            process.wait(timeout=5)
            if self.runtime.mode == "podman":
                containers.remove(self.container_name(sandbox, cname))
        host.delete_netns(sandbox.state.netns)
        self.addresses.release(sandbox.state.ip)
        self.emulator.token_reviews.pop(sandbox.token, None)
        shutil.rmtree(sandbox.directory, ignore_errors=True)
        log.info("sandbox removed: pod %s/%s", *sandbox.key[:2])

    def _network_status(self, sandbox: Sandbox) -> dict[str, Any]:
        return {
            "podIP": sandbox.state.ip,
            "podIPs": [{"ip": sandbox.state.ip}],
            "hostIP": str(self.addresses.gateway),
        }

    # --- volumes -------------------------------------------------------------------------
    def volume_dir(self, sandbox: Sandbox, volume: str) -> Path:
        return sandbox.directory / "volumes" / volume

    def sync_volumes(self, sandbox: Sandbox, pod: Mapping[str, Any]) -> None:
        """Secret, projected-token and emptyDir volumes, in the kubelet's layout."""
        namespace = sandbox.key[0]
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            directory = self.volume_dir(sandbox, str(volume.get("name")))
            if "secret" in volume:
                source = volume["secret"]
                secret = self.emulator.stored("v1/secrets", namespace, source.get("secretName"))
                if secret is not None:
                    mode = int(source.get("defaultMode") or 0o644)
                    write_atomic(directory, secret_files(secret), mode)
            elif "projected" in volume:
                files = {}
                for item in volume["projected"].get("sources") or []:
                    token = item.get("serviceAccountToken")
                    if token is not None:
                        files[str(token.get("path", "token"))] = sandbox.token.encode()
                        self._register_token(sandbox, pod, token)
                write_atomic(directory, files, 0o600)
            elif "emptyDir" in volume:
                directory.mkdir(parents=True, exist_ok=True)
                directory.chmod(0o777)  # as the kubelet makes it: any container user writes

    def _register_token(
        self, sandbox: Sandbox, pod: Mapping[str, Any], projection: Mapping[str, Any]
    ) -> None:
        """Make the emulator's TokenReview answer for this pod's token, as a cluster's
        API server does for a projected token: the ServiceAccount, pod name and uid."""
        namespace, name, uid = sandbox.key
        account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        self.emulator.token_reviews[sandbox.token] = {
            "authenticated": True,
            "audiences": [projection.get("audience") or "https://kubernetes.default.svc"],
            "user": {
                "username": f"system:serviceaccount:{namespace}:{account}",
                "extra": {
                    "authentication.kubernetes.io/pod-name": [name],
                    "authentication.kubernetes.io/pod-uid": [uid],
                },
            },
        }

    def mounts_of(
        self, sandbox: Sandbox, pod: Mapping[str, Any], container: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
        mounts = []
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount.get("name")) or {}
            if "hostPath" in volume:
                source = Path(volume["hostPath"]["path"])
            else:
                source = self.volume_dir(sandbox, str(mount.get("name")))
            mounts.append(
                {
                    "source": str(source),
                    "target": str(mount["mountPath"]),
                    "readOnly": bool(mount.get("readOnly")),
                }
            )
        return mounts

    # --- containers ----------------------------------------------------------------------
    def sync_containers(self, sandbox: Sandbox, pod: Mapping[str, Any]) -> bool:
        """Start or restart the native sidecars; returns whether the pod's state changed."""
        before = (sandbox.state.sidecar, sandbox.state.pid, sandbox.state.restarts)
        for container in native_sidecars(pod):
            cname = str(container.get("name"))
            process = sandbox.processes.get(cname)
            if process is not None and process.poll() is None:
                self._container_pid(sandbox, cname)
                continue
            if process is not None:
                log.warning(
                    "sidecar of pod %s/%s exited with %s; restarting after a back-off",
                    *sandbox.key[:2],
                    process.returncode,
                )
                del sandbox.processes[cname]
                delay = min(MAX_BACKOFF, sandbox.backoff.get(cname, 0.5) * 2)
                sandbox.backoff[cname] = delay
                sandbox.next_start[cname] = time.monotonic() + delay
                sandbox.state.restarts += 1
                sandbox.state.sidecar = "restarting"
            if time.monotonic() < sandbox.next_start.get(cname, 0.0):
                continue
            mounts = self.mounts_of(sandbox, pod, container)
            if not self.volumes_ready(sandbox, pod, container):
                sandbox.state.sidecar = "waiting"
                continue
            process = self.start(sandbox, pod, container, mounts)
            sandbox.processes[cname] = process
            sandbox.started.discard(cname)
            sandbox.state.sidecar = "starting"
            sandbox.state.pid = process.pid
        return before != (sandbox.state.sidecar, sandbox.state.pid, sandbox.state.restarts)

    def volumes_ready(
        self, sandbox: Sandbox, pod: Mapping[str, Any], container: Mapping[str, Any]
    ) -> bool:
        """Whether every Secret the container mounts exists (unless ``optional``), as the
        kubelet requires before it starts a container. What is in the Secret is the
        program's business: the sidecar waits for its ``config.yaml`` itself."""
        volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            source = (volumes.get(mount.get("name")) or {}).get("secret")
            if source is None or source.get("optional"):
                continue
            if not (self.volume_dir(sandbox, str(mount.get("name"))) / DATA_LINK).is_symlink():
                return False
        return True

    def container_name(self, sandbox: Sandbox, cname: str) -> str:
        """The podman container's name: the lab's, the pod's and the container's."""
        namespace, name, uid = sandbox.key
        return f"{self.lab}-{namespace}-{name}-{uid[:8]}-{cname}"

    def _container_pid(self, sandbox: Sandbox, cname: str) -> None:
        """The container's main process (from podman's pidfile) as the pod's sidecar pid:
        the process a signal must reach, not podman's."""
        if self.runtime.mode != "podman":
            return
        try:
            pid = int((sandbox.directory / f"{cname}.pid").read_text().strip())
        except (OSError, ValueError):
            return
        sandbox.state.pid = pid

    def start(
        self,
        sandbox: Sandbox,
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        mounts: list[dict[str, Any]],
    ) -> subprocess.Popen[bytes]:
        cname = str(container.get("name"))
        spec_file = sandbox.directory / f"{cname}.json"
        if self.runtime.mode == "podman":
            pidfile = sandbox.directory / f"{cname}.pid"
            pidfile.unlink(missing_ok=True)
            volumes = (pod.get("spec") or {}).get("volumes") or []
            argv = containers.podman_run(
                pod,
                container,
                name=self.container_name(sandbox, cname),
                netns=sandbox.state.netns,
                volume_dirs={
                    str(v.get("name")): str(self.volume_dir(sandbox, str(v.get("name"))))
                    for v in volumes
                },
                device_resources=self.device_resources,
                hosts=self.hosts,
                labels={containers.LABEL: self.lab},
                pidfile=str(pidfile),
            )
            spec_file.write_text(json.dumps({"argv": argv, "mounts": mounts}, indent=2))
            sandbox.state.image = str(container.get("image", ""))
        else:
            command = list(container.get("command") or [SIDECAR_COMMAND])
            env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
            env.update(container_env(pod, container))
            spec = {
                "argv": [*command, *(container.get("args") or [])],
                "env": env,
                "mounts": mounts,
                "hosts": [f"{address} {name}" for name, address in self.hosts],
                "ca": self.ca_file,
            }
            spec_file.write_text(json.dumps(spec, indent=2))
            argv = [
                *("ip", "netns", "exec", sandbox.state.netns),
                *("unshare", "--mount", "--propagation", "private"),
                *(sys.executable, "-m", "kipsec_lab.podexec", str(spec_file)),
            ]
            sandbox.state.image = HOST_PROCESS
        log_file = (sandbox.directory / f"{cname}.log").open("ab")
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        log.info(
            "sidecar started: pod %s/%s, pid %d, %s",
            *sandbox.key[:2],
            process.pid,
            sandbox.state.image,
        )
        return process

    async def probe_startup(self, sandbox: Sandbox, pod: Mapping[str, Any]) -> bool:
        """Run each running sidecar's startupProbe (``httpGet`` on the pod's address, from
        the node, as the kubelet does) until it succeeds once: a sidecar counts as
        started (``running``), and the pod as Ready, only then. Whether that changed."""
        changed = False
        for container in native_sidecars(pod):
            cname = str(container.get("name"))
            process = sandbox.processes.get(cname)
            if cname in sandbox.started or process is None or process.poll() is not None:
                continue
            url = probe_url(container, sandbox.state.ip)
            if url is None or await asyncio.to_thread(http_ok, url):
                sandbox.started.add(cname)
                sandbox.state.sidecar = "running"
                changed = True
                log.info("sidecar started (startup probe): pod %s/%s", *sandbox.key[:2])
        return changed

    async def write_status(self, sandbox: Sandbox, pod: Mapping[str, Any], path: str) -> None:
        """Pod status as a kubelet reports it (written only when it changes)."""
        sidecars = native_sidecars(pod)
        running = all(
            name in sandbox.processes and name in sandbox.started
            for name in (c.get("name") for c in sidecars)
        )
        phase = "Running" if running else "Pending"
        summary = f"{phase}:{sandbox.state.ip}:{sandbox.state.restarts}"
        if summary == sandbox.status_written:
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ready = str(running)
        status = {
            **self._network_status(sandbox),
            "phase": phase,
            "startTime": (pod.get("status") or {}).get("startTime") or now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": ready, "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
            ],
            "initContainerStatuses": [
                {
                    "name": c.get("name"),
                    "started": c.get("name") in sandbox.started,
                    "ready": c.get("name") in sandbox.started,
                    "restartCount": sandbox.state.restarts,
                    "image": c.get("image", ""),
                }
                for c in sidecars
            ],
        }
        try:
            await self.kube.merge_patch(path + "/status", {"status": status})
        except ApiError as exc:
            if exc.status != 404:
                raise
        sandbox.status_written = summary

    def stop_all(self) -> None:
        """Tear every pod down; the sidecars are all signalled first, so their graceful
        stops (IKE DELETEs) overlap instead of adding up."""
        for sandbox in self.sandboxes.values():
            for process in sandbox.processes.values():
                host.kill(-process.pid, signal.SIGTERM)
        for sandbox in list(self.sandboxes.values()):
            self.teardown(sandbox)
        self.sandboxes.clear()


__all__ = ["Kubelet", "host_path", "native_sidecars"]
