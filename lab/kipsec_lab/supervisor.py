"""The lab's long-running process: ``python -m kipsec_lab.supervisor --state-dir DIR``.

Started detached by ``kipsec lab up`` (own session, output to ``supervisor.log``, pid in
``supervisor.pid``). It creates the control network namespace and moves itself into it,
so everything it serves and starts lives there and the host's network namespace is left
alone:

* the API server (:class:`~kipsec_lab.apiserver.Emulator` with the kipsec CRDs) on
  ``127.0.0.1:6443`` inside the control namespace (the operator's address for it) and
  on the unix socket ``api.sock`` in the state directory (the CLI's, from the host);
* the real operator, ``kipsec-operator run --standalone``, its HTTPS endpoints on
  ``0.0.0.0:8443`` with a lab-issued certificate: the API server calls its webhook on
  ``127.0.0.1``, pods reach it on the gateway address over the lab bridge. With the
  podman runtime (:mod:`.containers`) it runs from the operator image in the control
  namespace, as the chart's Deployment runs it (:func:`operator_pod`: uid 65532, no
  capabilities, read-only root filesystem, its certificate in a Secret-like volume at
  the chart's path, an in-memory /tmp); else as a host process;
* the kubelet stand-in (:mod:`.kubelet`);
* with ``--prometheus``, Prometheus scraping the operator and the sidecars
  (:mod:`.prometheus`);
* with ``--external-site``, the external site (:mod:`.site`): a strongSwan gateway
  outside the cluster network and a host behind it, started once the operator's CA
  (which the gateway trusts for the pods' certificates) exists.

SIGTERM (``kipsec lab down``) stops the sidecars, the operator, deletes every namespace
and the state it published.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import aiohttp
import kmock
from aiohttp import web

from kipsec_operator.kube import Connection, Kube, object_path

from . import chart, containers, host, prometheus, site
from .admission import WebhookClient
from .apiserver import Emulator
from .containers import Runtime
from .kubelet import Kubelet
from .state import LabState, Paths, PodState
from .status import SidecarView, sidecar_view
from .tls import issue_serving
from .topology import Addresses, Names
from .volumes import DATA_LINK, container_env, write_atomic

log = logging.getLogger("kipsec.lab")

API_PORT = 6443
OPERATOR_PORT = 8443
OPERATOR_NAMESPACE = "kipsec-system"
OPERATOR_SERVICE = f"kipsec-operator.{OPERATOR_NAMESPACE}.svc"
REPORT_INTERVAL = 2.0
"""Seconds between the operator's polls of the sidecars (10 in a cluster): the lab
wants Ready to show soon after the SAs are up."""
OPERATOR_START_TIMEOUT = 60.0
SITE_TRUST_INTERVAL = 1.0
"""Seconds between the site's looks at the operator's CA Secret."""
OPERATOR_STOP_TIMEOUT = 3.0
"""kopf's graceful stop waits for its watch streams; the lab's API server goes away
with it, so there is nothing to finish cleanly after a few seconds."""


OPERATOR_UID = 65532
"""The chart's ``operator.runAsUser`` (and fsGroup): the image's user."""
OPERATOR_TLS_DIR = "/etc/kipsec-operator/tls"
"""Where the chart mounts the operator's serving certificate."""
TUN_DEVICE = "/dev/net/tun"
DEVICE_RESOURCES = {"kipsec.io/tun": TUN_DEVICE}
"""The lab's device plugin: the chart's default ``sidecar.tunResource``."""


def operator_pod(image: str, sidecar_image: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operator's pod and container as the chart's Deployment declares them (security
    contexts, volumes, the environment that configures injection), with the lab's
    arguments: its API server, standalone, the lab's report interval."""
    container: dict[str, Any] = {
        "name": "operator",
        "image": image,
        "args": [
            *("run", "--standalone", "--server", f"http://127.0.0.1:{API_PORT}"),
            *("--operator-namespace", OPERATOR_NAMESPACE),
            f"--listen=0.0.0.0:{OPERATOR_PORT}",
            f"--tls-cert={OPERATOR_TLS_DIR}/tls.crt",
            f"--tls-key={OPERATOR_TLS_DIR}/tls.key",
            f"--report-interval={REPORT_INTERVAL}",
        ],
        "env": [
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "KIPSEC_SIDECAR_IMAGE", "value": sidecar_image},
            {"name": "KIPSEC_SIDECAR_IMAGE_PULL_POLICY", "value": "Never"},
            {"name": "KIPSEC_TUN_DEVICE", "value": "devicePlugin"},
            {"name": "KIPSEC_TUN_RESOURCE", "value": next(iter(DEVICE_RESOURCES))},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tls", "mountPath": OPERATOR_TLS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the chart's emptyDir
        ],
    }
    pod: dict[str, Any] = {
        "metadata": {"name": "kipsec-operator", "namespace": OPERATOR_NAMESPACE},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": OPERATOR_UID,
                "runAsGroup": OPERATOR_UID,
                "fsGroup": OPERATOR_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [
                {
                    "name": "tls",
                    "secret": {"secretName": "kipsec-webhook-tls", "defaultMode": 0o440},
                },
                {"name": "tmp", "emptyDir": {"medium": "Memory"}},
            ],
        },
    }
    return pod, container


class Supervisor:
    """One lab's parts and the state it publishes to ``state.json`` for the CLI."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.config = paths.read_config()
        self.names = Names(self.config.name)
        self.addresses = Addresses.parse(self.config.cidr, self.config.nodes)
        self.state = LabState()
        self.runtime = Runtime("host", "not chosen yet", containers.image_names())
        self.host_netns = "/proc/1/ns/net"
        """The network namespace ``kipsec lab up`` ran in (the supervisor left it)."""

    def publish(self, **changes: object) -> None:
        for key, value in changes.items():
            setattr(self.state, key, value)
        self.paths.write_state(self.state)

    def _pods_changed(self, pods: list[PodState]) -> None:
        self.publish(pods=pods)
        if self.config.prometheus:
            prometheus.write_targets(self.paths.prometheus / "sidecars.json", pods)

    async def run(self, stop: asyncio.Event) -> None:
        gateway = str(self.addresses.gateway)
        self.publish(step="issuing the operator's serving certificate")
        ca, cert, key = issue_serving(
            self.paths.tls, [OPERATOR_SERVICE, "localhost"], ["127.0.0.1", gateway]
        )
        self.runtime = await asyncio.to_thread(
            containers.choose_runtime, self.config.runtime, containers.image_names()
        )
        self.publish(runtime=self.runtime.describe())
        log.info("runtime: %s", self.runtime.describe())
        self.publish(step="starting the API server")
        async with Emulator() as emulator, kmock.Server(emulator, host="127.0.0.1", port=API_PORT):
            runner = web.ServerRunner(web.Server(emulator))
            await runner.setup()
            self.paths.api_socket.unlink(missing_ok=True)
            await web.UnixSite(runner, str(self.paths.api_socket)).start()
            self.paths.api_socket.chmod(0o600)
            emulator.admission = WebhookClient(
                f"https://127.0.0.1:{OPERATOR_PORT}/mutate-pods", str(ca)
            )
            async with Kube(Connection(f"http://127.0.0.1:{API_PORT}")) as kube:
                for namespace in ("default", OPERATOR_NAMESPACE):
                    await kube.create(
                        object_path("v1", "namespaces", None),
                        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                    )
                self.publish(step="starting the operator")
                operator = await self.start_operator(cert, key, ca)
                try:
                    await self.wait_operator(str(ca), operator)
                    if self.config.external_site:
                        await self.start_site()
                    kubelet = Kubelet(
                        emulator,
                        kube,
                        self.names,
                        self.addresses,
                        self.paths.pods,
                        hosts=[(OPERATOR_SERVICE, gateway), ("kipsec-operator", gateway)],
                        ca_file=str(ca),
                        on_change=self._pods_changed,
                        runtime=self.runtime,
                        lab=self.config.name,
                        device_resources=DEVICE_RESOURCES,
                    )
                    scraper = self.start_prometheus(ca) if self.config.prometheus else None
                    background: list[asyncio.Task[None]] = []
                    task = asyncio.create_task(kubelet.run(), name="kubelet")
                    sampler = asyncio.create_task(self.sample(), name="sampler")
                    if self.config.external_site:
                        background.append(asyncio.create_task(self.site_trust(kube)))
                    self.publish(phase="ready", step="ready")
                    waiter = asyncio.create_task(stop.wait())
                    operator_exit = asyncio.create_task(operator.wait())
                    await asyncio.wait(
                        [waiter, operator_exit, task], return_when=asyncio.FIRST_COMPLETED
                    )
                    if operator_exit.done():
                        self.publish(phase="failed", error="the operator exited; see operator.log")
                    self.publish(phase="stopping", step="stopping the pods")
                    if operator.returncode is None:
                        operator.terminate()  # its stop (kopf's) overlaps the pods'.
                    for pending in (task, waiter, sampler, *background):
                        pending.cancel()
                    await asyncio.gather(task, waiter, sampler, *background, return_exceptions=True)
                    await asyncio.to_thread(kubelet.stop_all)
                    if scraper is not None:
                        await asyncio.to_thread(host.stop_process, scraper)
                finally:
                    if operator.returncode is None:
                        operator.terminate()
                        try:
                            await asyncio.wait_for(operator.wait(), OPERATOR_STOP_TIMEOUT)
                        except TimeoutError:
                            operator.kill()
                            await operator.wait()
                    if self.runtime.mode == "podman":
                        await asyncio.to_thread(containers.remove, self.operator_container)
            await runner.cleanup()

    async def sample(self) -> None:
        """Every few seconds, each running sidecar's SA counts into ``samples.jsonl``
        (the last :data:`~.chart.MAX_SAMPLES` lines), for ``status --png``."""
        lines: deque[str] = deque(maxlen=chart.MAX_SAMPLES)
        while True:
            await asyncio.sleep(chart.SAMPLE_INTERVAL)
            pods = [pod for pod in self.state.pods if pod.sidecar == "running"]
            views = await asyncio.to_thread(self._views, pods)
            now = time.time()
            for pod, view in zip(pods, views, strict=True):
                if not view.error:
                    name = f"{pod.namespace}/{pod.name}"
                    lines.append(
                        chart.sample_line(now, name, view.ike_established, view.child_installed)
                    )
            temporary = self.paths.samples.with_suffix(".tmp")
            temporary.write_text("".join(f"{line}\n" for line in lines))
            temporary.replace(self.paths.samples)

    def _views(self, pods: list[PodState]) -> list[SidecarView]:
        return [sidecar_view(self.paths, pod) for pod in pods]

    def start_prometheus(self, ca: Path) -> subprocess.Popen[bytes]:
        self.publish(step="starting Prometheus")
        config_file, _ = prometheus.write_config(
            self.paths.prometheus, f"127.0.0.1:{OPERATOR_PORT}", ca
        )
        with (self.paths.prometheus / "prometheus.log").open("ab") as log_file:
            return subprocess.Popen(  # noqa: S603 - fixed argv
                prometheus.argv(config_file, self.paths.prometheus / "data"),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    async def start_site(self) -> None:
        """The external site: namespaces and links, charon configured and started."""
        self.publish(step="starting the external site")
        await asyncio.to_thread(site.create, self.names)
        await asyncio.to_thread(site.configure, self.paths.site, self.config.cidr)
        await asyncio.to_thread(site.start, self.names, self.paths.site)
        log.info("external site up: gateway %s, host %s", site.PSK_GATEWAY, site.HOST)

    async def site_trust(self, kube: Kube) -> None:
        """Keep the gateway trusting the operator's CA bundle: the operator creates its
        CA with the first TunnelCertificate and may rotate it."""
        path = object_path("v1", "secrets", OPERATOR_NAMESPACE, "kipsec-ca")
        while True:
            found = await kube.get(path)
            bundle = ((found or {}).get("data") or {}).get("ca.crt")
            if bundle:
                try:
                    if await asyncio.to_thread(
                        site.trust_kipsec_ca, self.paths.site, base64.b64decode(bundle)
                    ):
                        log.info("the external site trusts the operator's CA")
                except site.SiteError as exc:
                    log.warning("the external site's trust: %s", exc)
            await asyncio.sleep(SITE_TRUST_INTERVAL)

    def operator_volumes(self, cert: Path, key: Path, ca: Path) -> dict[str, str]:
        """The operator's volumes as the kubelet would make them for the chart's pod: the
        TLS Secret (mode 0440, group = fsGroup) and the /tmp emptyDir (mode 0777)."""
        base = self.paths.root / "operator"
        tls, tmp = base / "tls", base / "tmp"
        files = {
            "tls.crt": cert.read_bytes(),
            "tls.key": key.read_bytes(),
            "ca.crt": ca.read_bytes(),
        }
        write_atomic(tls, files, 0o440)
        for path in [tls, *tls.iterdir(), *(tls / DATA_LINK).resolve().iterdir()]:
            os.chown(path, -1, OPERATOR_UID, follow_symlinks=False)
        tmp.mkdir(parents=True, exist_ok=True)
        tmp.chmod(0o777)
        return {"tls": str(tls), "tmp": str(tmp)}

    async def start_operator(self, cert: Path, key: Path, ca: Path) -> asyncio.subprocess.Process:
        """The operator: from its image (podman runtime) or as a host process."""
        pod, container = operator_pod(
            self.runtime.images["operator"], self.runtime.images["sidecar"]
        )
        if self.runtime.mode == "podman":
            argv = containers.podman_run(
                pod,
                container,
                name=self.operator_container,
                netns=self.names.control,
                volume_dirs=self.operator_volumes(cert, key, ca),
                labels={containers.LABEL: self.config.name},
            )
            # runc refuses podman's default net.* sysctls for a container in runc's own
            # network namespace, as for host networking: podman runs from the host's.
            argv = host.in_netns(self.host_netns, argv)
            env = None
        else:
            argv = [str(Path(sys.executable).parent / "kipsec-operator"), *container["args"]]
            argv = [arg.replace(OPERATOR_TLS_DIR, str(cert.parent)) for arg in argv]
            env = {**os.environ, **container_env(pod, container)}
        log_file = self.paths.operator_log.open("ab")
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        finally:
            log_file.close()

    @property
    def operator_container(self) -> str:
        return f"{self.config.name}-operator"

    async def wait_operator(self, ca: str, operator: asyncio.subprocess.Process) -> None:
        """Until the operator's /healthz answers (its webhook is then served)."""
        context = ssl.create_default_context(cafile=ca)
        url = f"https://127.0.0.1:{OPERATOR_PORT}/healthz"
        deadline = asyncio.get_running_loop().time() + OPERATOR_START_TIMEOUT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if operator.returncode is not None:
                    raise RuntimeError("the operator exited at start; see operator.log")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(url, ssl=context) as answer:
                        if answer.status == 200:
                            return
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"the operator did not answer {url} in time")
                await asyncio.sleep(0.3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kipsec-lab-supervisor")
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    paths = Paths(args.state_dir)
    paths.pidfile.write_text(f"{os.getpid()}\n")
    supervisor = Supervisor(paths)
    try:
        supervisor.publish(step="creating the control network namespace")
        host.sweep(supervisor.names)
        containers.sweep(supervisor.config.name)
        host.create_control(
            supervisor.names,
            str(supervisor.addresses.gateway),
            supervisor.addresses.cidr.prefixlen,
        )
        supervisor.host_netns = host.enter_netns(supervisor.names.control)
        asyncio.run(_serve(supervisor))
    except Exception as exc:
        log.exception("lab failed")
        supervisor.publish(phase="failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        host.sweep(supervisor.names)
        containers.sweep(supervisor.config.name)
        paths.api_socket.unlink(missing_ok=True)
        if supervisor.state.phase != "failed":
            supervisor.publish(phase="stopped", step="", pods=[])
        paths.pidfile.unlink(missing_ok=True)


async def _serve(supervisor: Supervisor) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await supervisor.run(stop)


if __name__ == "__main__":
    main()
