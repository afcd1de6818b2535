"""``kipsec lab up|apply|delete|status|traffic|site|down``: the local lab's command line.

Every command needs root (network namespaces, mounts). ``up`` starts the detached
supervisor (:mod:`.supervisor`) and returns once the lab is ready; the others talk to
its API server over the unix socket in the state directory, read its ``state.json``,
or run commands in its namespaces. docs/lab.md is the user's guide.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from kipsec_operator.kube import ApiError

from . import chart, containers, host, prometheus, site
from .client import LabClient
from .manifests import ManifestError, load, ordered
from .state import DEFAULT_DIR, LabConfig, Paths, PodState
from .status import (
    certificate_table,
    external_peer_table,
    pod_table,
    site_table,
    tunnel_table,
    tunnels_ready,
)
from .topology import DEFAULT_CIDR, Addresses, Names
from .traffic import ECHO_PORT, TrafficReport, exchange
from .traffic import TIMEOUT as TRAFFIC_TIMEOUT

UP_TIMEOUT = 90.0
SITE_TARGET = "site"
"""``kipsec lab traffic --to site``: the host behind the external site's gateway."""
DOWN_TIMEOUT = 30.0
#: Wide enough for the tables when the output is a file or a pipe (rich assumes 80).
console = Console(width=None if sys.stdout.isatty() else 140)


class LabError(Exception):
    """A command cannot do what was asked; the message says why and what to do."""


def _paths(args: argparse.Namespace) -> Paths:
    return Paths(Path(args.state_dir).resolve())


def running(paths: Paths) -> bool:
    pid = paths.supervisor_pid()
    return pid is not None and host.alive(pid)


def _require_up(paths: Paths) -> None:
    if not running(paths):
        raise LabError(f"no lab is running with state directory {paths.root}: run `kipsec lab up`")


# --- up / down -------------------------------------------------------------------------------
def up(paths: Paths, config: LabConfig, timeout: float = UP_TIMEOUT) -> None:
    """Start the supervisor and wait until the lab is ready (or say why it is not)."""
    if str(paths.root).startswith(("/run/", "/var/run/", "/etc/")):
        raise LabError(
            f"--state-dir {paths.root}: must not be under /run or /etc (pods overlay them)"
        )
    try:
        Addresses.parse(config.cidr, config.nodes)
    except ValueError as exc:
        raise LabError(f"--{exc}") from None
    if config.prometheus and shutil.which("prometheus") is None:
        raise LabError("--prometheus: the `prometheus` binary is not installed (Debian package)")
    if config.external_site:
        problem = site.unavailable() or site.overlap(config.cidr)
        if problem is not None:
            raise LabError(f"--external-site: {problem}")
    if running(paths):
        console.print(f"the lab is already up (state directory {paths.root})")
        return
    down(paths, quiet=True)  # what a crashed lab may have left
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.root.chmod(0o700)
    paths.write_config(config)
    with paths.log.open("ab") as log:
        subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "kipsec_lab.supervisor", "--state-dir", str(paths.root)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
        )
    deadline = time.monotonic() + timeout
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("starting the supervisor")
        while True:
            state = paths.read_state()
            if state.step:
                progress.update(task, description=state.step)
            if state.phase == "ready":
                break
            if state.phase in ("failed", "stopped") or (
                time.monotonic() > 2 and state.phase == "absent" and not _starting(paths)
            ):
                raise LabError(f"the lab did not start: {state.error}\n{_tail(paths.log)}")
            if time.monotonic() > deadline:
                down(paths, quiet=True)
                raise LabError(f"the lab was not ready within {timeout:.0f}s\n{_tail(paths.log)}")
            time.sleep(0.2)
    console.print(
        f"lab [bold]{config.name}[/] is up: {config.nodes} nodes, pods in {config.cidr}; "
        f"state in {paths.root}"
    )
    console.print(f"operator and sidecars run as {paths.read_state().runtime}")
    if config.external_site:
        console.print(
            f"external site: strongSwan gateway {site.PSK_GATEWAY} (PSK) and {site.CERT_GATEWAY} "
            f"(certificates) protecting {site.SUBNET}, host {site.HOST}; the site CA's "
            f"ConfigMap for the certificate example: {paths.site / 'ca-configmap.yaml'}"
        )


def _starting(paths: Paths) -> bool:
    return paths.supervisor_pid() is None or running(paths)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def down(paths: Paths, *, quiet: bool = False) -> None:
    """Stop the supervisor (it removes what it made), then sweep whatever a crash left:
    processes and namespaces of this lab, and the state directory. Idempotent."""
    pid = paths.supervisor_pid()
    if pid is not None and host.alive(pid):
        host.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_TIMEOUT
        while host.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if host.alive(pid):
            host.kill(pid, signal.SIGKILL)
    name = None
    with contextlib.suppress(OSError, ValueError):
        name = paths.read_config().name
    swept = host.sweep(Names(name)) if name else []
    if name and shutil.which("podman") is not None:
        containers.sweep(name)
    if paths.root.exists() and paths.config.exists():
        shutil.rmtree(paths.root, ignore_errors=True)
    if not quiet:
        extra = f" (swept {len(swept)} leftover namespaces)" if swept else ""
        console.print(f"the lab is down{extra}")


# --- apply / delete ----------------------------------------------------------------------------
def apply(paths: Paths, files: Sequence[Path], *, delete: bool = False) -> list[str]:
    _require_up(paths)
    client = LabClient(paths.api_socket)
    manifests = load(files)
    lines = []
    # In file order, like `kubectl apply -f`: the webhook reads Tunnels from the API
    # server for every pod, so a pod right after its Tunnel gets its sidecar.
    for manifest in ordered(manifests, reverse=True) if delete else manifests:
        try:
            outcome = client.delete(manifest) if delete else client.apply(manifest)
        except ApiError as exc:
            raise LabError(f"{manifest.describe()} ({manifest.source}): {exc}") from None
        lines.append(f"{manifest.describe()} {outcome}")
        console.print(lines[-1])
    return lines


# --- status ----------------------------------------------------------------------------------
def status_view(paths: Paths) -> tuple[Group, bool]:
    client = LabClient(paths.api_socket)
    found = client.list("Tunnel")
    certificates = client.list("TunnelCertificate")
    pods = paths.read_state().pods
    tables = [tunnel_table(found)]
    if certificates:
        tables.append(certificate_table(certificates))
    external_peers = client.list("ExternalPeer")
    if external_peers:
        tables.append(external_peer_table(external_peers))
    tables.append(pod_table(paths, pods))
    if paths.read_config().external_site:
        tables.append(site_table(paths.site, pods))
    return Group(*tables), tunnels_ready(found)


def status(paths: Paths, *, watch: bool, wait: float | None) -> bool:
    _require_up(paths)
    if not watch and wait is None:
        view, ready = status_view(paths)
        console.print(view)
        return ready
    deadline = time.monotonic() + (wait or float("inf"))
    with Live(console=console, refresh_per_second=2) as live:
        while True:
            view, ready = status_view(paths)
            spinner = Progress(SpinnerColumn(), TextColumn("{task.description}"))
            spinner.add_task("waiting for every Tunnel to be Ready" if not ready else "all Ready")
            live.update(Group(view, spinner) if not ready else view)
            if (wait is not None and ready) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    if not console.is_terminal:
        console.line()  # Live leaves its last frame without a newline outside a terminal
    return ready


def draw_png(paths: Paths, target: Path) -> None:
    """SA counts over time: from the lab's Prometheus when it runs one, else from the
    supervisor's samples."""
    config = paths.read_config()
    if config.prometheus:
        series = chart.from_prometheus(query_prometheus(paths, config))
        source = "Prometheus"
    else:
        series = chart.from_samples(paths.samples.read_text().splitlines())
        source = "the lab's samples"
    try:
        chart.draw(series, target)
    except ValueError as exc:
        raise LabError(f"--png: {exc}") from None
    console.print(f"wrote {target} (from {source})")


def query_prometheus(
    paths: Paths, config: LabConfig, query: str = chart.CHILD_SAS_QUERY, *, instant: bool = False
) -> dict[str, Any]:
    """A ``query_range`` of ``query`` since the lab started (or, ``instant``, its value
    now), asked from inside the control namespace (where Prometheus listens)."""
    if instant:
        url = f"http://{prometheus.LISTEN}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    else:
        start = paths.config.stat().st_mtime
        window = {"query": query, "start": start, "end": time.time(), "step": "5s"}
        url = f"http://{prometheus.LISTEN}/api/v1/query_range?{urllib.parse.urlencode(window)}"
    fetch = (
        "import sys, urllib.request;"
        "sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())"
    )
    output = host.run(
        ["ip", "netns", "exec", Names(config.name).control, sys.executable, "-c", fetch, url]
    )
    answer: dict[str, Any] = json.loads(output)
    return answer


# --- traffic ---------------------------------------------------------------------------------
def pod_by_name(pods: list[PodState], ref: str) -> PodState:
    namespace, _, name = ref.rpartition("/")
    found = [p for p in pods if p.name == name and (not namespace or p.namespace == namespace)]
    if len(found) != 1:
        raise LabError(f"--from/--to {ref!r}: {len(found)} pods match (use namespace/name)")
    return found[0]


def protected_tcp_port(tunnel: dict[str, Any]) -> int | None:
    """None when the Tunnel protects all traffic, else the TCP port to exercise (a
    Tunnel limited to some ports: pings would rightly travel in clear)."""
    rules = (tunnel.get("spec") or {}).get("traffic") or []
    if not rules:
        return None
    for rule in rules:
        if str(rule.get("protocol", "")).upper() == "TCP" and rule.get("port"):
            return int(rule["port"])
    raise LabError("the Tunnel protects no TCP port: kipsec lab traffic sends TCP")


def peers_of(paths: Paths, pod: PodState) -> list[dict[str, Any]]:
    """The peers of the pod's current sidecar document (empty without one)."""
    found = list(paths.pods.glob(f"{pod.namespace}_{pod.name}_*/volumes/kipsec-config/config.yaml"))
    if not found:
        return []
    text = found[0].read_text()
    peers: list[dict[str, Any]] = json.loads(text).get("peers") or [] if text else []
    return peers


def covers(selectors: list[Any], port: int | None) -> bool:
    """Whether traffic to TCP ``port`` (None: any traffic) is within the selectors."""
    for selector in selectors:
        if not isinstance(selector, dict):
            return True  # a bare CIDR: every protocol and port
        ports = selector.get("ports")
        if ports is None:
            return True
        if port is None:
            continue
        low, _, high = str(ports).partition("-")
        if int(low) <= port <= int(high or low):
            return True
    return False


def pick_pair(
    client: LabClient, paths: Paths, pods: list[PodState]
) -> tuple[PodState, PodState, int | None]:
    """The first running pod (by namespace/name) with a peer to which it sends protected
    traffic: (source, target, the TCP port to use or None for any)."""
    by_ip = {p.ip: p for p in pods}
    for pod in sorted(pods, key=lambda p: (p.namespace, p.name)):
        if pod.sidecar != "running":
            continue
        for peer in peers_of(paths, pod):
            target = by_ip.get(str(peer.get("address")))
            if target is None:
                continue
            port = protected_tcp_port(tunnel_between(client, pod, target))
            selectors = peer.get("trafficSelectors") or {}
            # A client's source port is ephemeral: the local side must allow any port.
            if covers(selectors.get("remote") or [{}], port) and covers(
                selectors.get("local") or [{}], None
            ):
                return pod, target, port
    raise LabError("no Tunnel connects two running pods yet: apply one, see `kipsec lab status`")


def tunnel_between(client: LabClient, src: PodState, dst: PodState) -> dict[str, Any]:
    """A Tunnel in either pod's namespace (for the ports it protects); {} when none."""
    for tunnel in client.list("Tunnel"):
        if tunnel["metadata"]["namespace"] in (src.namespace, dst.namespace):
            return tunnel
    return {}


def site_source(paths: Paths, pods: list[PodState], source: str | None) -> PodState:
    """The pod to send from to the site's host: ``source``, else the first running pod
    whose configuration has a peer at one of the site's gateway addresses."""
    if source:
        return pod_by_name(pods, source)
    gateways = {site.PSK_GATEWAY, site.CERT_GATEWAY}
    for pod in sorted(pods, key=lambda p: (p.namespace, p.name)):
        if pod.sidecar == "running" and any(
            str(peer.get("address")) in gateways for peer in peers_of(paths, pod)
        ):
            return pod
    raise LabError(
        "no running pod has an ExternalPeer at the site: apply "
        "examples/operator/external-peer-psk.yaml, see `kipsec lab status`"
    )


def traffic_to_site(
    paths: Paths, source: str | None, pings: int = 20, wait: float = TRAFFIC_TIMEOUT
) -> TrafficReport:
    """From a pod to the host behind the site's gateway, captured on the WAN link
    between the cluster and the site (every packet of the pod's address there); ``wait``
    bounds the TCP exchange."""
    _require_up(paths)
    config = paths.read_config()
    if not config.external_site:
        raise LabError("--to site: this lab has no external site (kipsec lab up --external-site)")
    src = site_source(paths, paths.read_state().pods, source)
    if src.sidecar not in ("none", "running"):
        raise LabError(f"{src.namespace}/{src.name}: its sidecar is {src.sidecar}")
    names = Names(config.name)
    pcap = paths.root / "traffic.pcap"
    report = exchange(
        names.control,
        (src.netns, src.ip),
        (site.host_netns(names), site.HOST),
        pcap,
        pings=pings,
        interface=site.LINK,
        capture=["host", src.ip],
        wait=wait,
    )
    pcap.unlink(missing_ok=True)
    return report


def traffic(paths: Paths, source: str | None, target: str | None, pings: int = 20) -> TrafficReport:
    _require_up(paths)
    if target == SITE_TARGET:
        return traffic_to_site(paths, source, pings)
    client = LabClient(paths.api_socket)
    pods = paths.read_state().pods
    if source and target:
        src, dst = pod_by_name(pods, source), pod_by_name(pods, target)
        port = protected_tcp_port(tunnel_between(client, src, dst))
    else:
        src, dst, port = pick_pair(client, paths, pods)
    for pod in (src, dst):
        if pod.sidecar not in ("none", "running"):
            raise LabError(
                f"{pod.namespace}/{pod.name}: its sidecar is {pod.sidecar}; a pod's application "
                "containers start only after its sidecar's startupProbe answers"
            )
    names = Names(paths.read_config().name)
    report = exchange(
        names.control,
        (src.netns, src.ip),
        (dst.netns, dst.ip),
        paths.root / "traffic.pcap",
        pings=pings if port is None else 0,
        tcp_port=port or ECHO_PORT,
    )
    (paths.root / "traffic.pcap").unlink(missing_ok=True)
    return report


def print_report(report: TrafficReport, source: str, target: str) -> None:
    where = "the link to the external site" if target == site.HOST else "the lab bridge"
    table = Table(title=f"On {where} between {source} and {target}")
    table.add_column("protocol")
    table.add_column("packets", justify="right")
    for label, count in sorted(report.by_protocol.items()):
        style = "red" if label.startswith("plaintext") else "green"
        table.add_row(f"[{style}]{label}[/]", str(count))
    console.print(table)
    if report.pings_sent:
        console.print(f"ping: {report.pings_received}/{report.pings_sent} replies")
    console.print(
        f"TCP :{report.tcp_port}: payload {'echoed back' if report.tcp_echoed else 'NOT received'}"
    )
    style = {"encrypted": "green", "authenticated": "yellow"}.get(report.verdict, "red")
    console.print(f"[bold {style}]verdict: {report.verdict}[/] ({report.explanation})")


# --- site ------------------------------------------------------------------------------------
def site_command(paths: Paths, action: str, pod: str | None = None) -> None:
    """``kipsec lab site ACTION``: show the gateway's SAs, stop or start its charon, cut
    or mend the link to it, or let it initiate to a pod."""
    _require_up(paths)
    config = paths.read_config()
    if not config.external_site:
        raise LabError("this lab has no external site (kipsec lab up --external-site)")
    names = Names(config.name)
    if action == "stop":
        site.stop(paths.site)
    elif action == "start":
        site.start(names, paths.site)
    elif action in ("cut", "mend"):
        site.set_link(names, up=action == "mend")
    elif action == "initiate":
        if not pod:
            raise LabError("site initiate: name the pod (namespace/name)")
        target = pod_by_name(paths.read_state().pods, pod)
        site.initiate(paths.site, config.cidr, target.name, target.ip)
    console.print(site_table(paths.site, paths.read_state().pods))


# --- argument parsing ------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kipsec", description="kipsec tools")
    groups = top.add_subparsers(dest="group", required=True)
    lab = groups.add_parser("lab", help="the local lab: a cluster stand-in on this machine")
    lab.add_argument(
        "--state-dir",
        default=str(DEFAULT_DIR),
        help=f"the lab's files (default $KIPSEC_LAB_DIR or {DEFAULT_DIR})",
    )
    commands = lab.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the lab and wait until it is ready")
    start.add_argument("--nodes", type=int, default=2, help="lab nodes (default 2)")
    start.add_argument(
        "--cidr", default=DEFAULT_CIDR, help=f"pod addresses (default {DEFAULT_CIDR})"
    )
    start.add_argument("--name", default="kipsec-lab", help="prefix of the lab's namespaces")
    start.add_argument("--timeout", type=float, default=UP_TIMEOUT, help="seconds")
    start.add_argument(
        "--prometheus", action="store_true", help="also run Prometheus scraping the lab"
    )
    start.add_argument(
        "--external-site",
        action="store_true",
        help="also a strongSwan VPN gateway outside the cluster and a host behind it",
    )
    start.add_argument(
        "--runtime",
        choices=containers.RUNTIME_MODES,
        default="auto",
        help="podman: the operator and sidecars from the images (./dev images); host: as "
        "processes of this installation; auto (default): podman when it holds the images",
    )
    commands.add_parser("down", help="stop the lab and remove everything it created")
    for verb in ("apply", "delete"):
        sub = commands.add_parser(verb, help=f"{verb} the objects of manifest files")
        sub.add_argument("-f", "--filename", action="append", required=True, type=Path)
    show = commands.add_parser("status", help="Tunnels, pods and their SAs")
    show.add_argument("--watch", action="store_true", help="refresh until interrupted")
    show.add_argument(
        "--wait", type=float, metavar="SECONDS", help="refresh until every Tunnel is Ready"
    )
    show.add_argument(
        "--png", type=Path, metavar="FILE", help="also draw installed child SAs over time"
    )
    send = commands.add_parser("traffic", help="prove encryption: traffic + capture summary")
    send.add_argument("--from", dest="source", help="namespace/pod (default: a Tunnel's pods)")
    send.add_argument(
        "--to", dest="target", help="namespace/pod, or `site`: the host behind the external site"
    )
    send.add_argument("--pings", type=int, default=20)
    gateway = commands.add_parser("site", help="the external site's gateway (--external-site)")
    gateway.add_argument(
        "action",
        nargs="?",
        default="status",
        choices=("status", "stop", "start", "cut", "mend", "initiate"),
        help="status (default): its IKE SAs; stop/start its charon; cut/mend the link to "
        "it; initiate: an SA from the gateway to --pod",
    )
    gateway.add_argument("--pod", help="namespace/pod (initiate)")
    return top


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if os.geteuid() != 0:
        console.print("kipsec lab needs root: it creates network namespaces and mounts")
        raise SystemExit(1)
    paths = _paths(args)
    try:
        if args.command == "up":
            config = LabConfig(
                args.name, args.cidr, args.nodes, args.prometheus, args.runtime, args.external_site
            )
            up(paths, config, args.timeout)
        elif args.command == "down":
            down(paths)
        elif args.command in ("apply", "delete"):
            apply(paths, args.filename, delete=args.command == "delete")
        elif args.command == "status":
            ready = status(paths, watch=args.watch, wait=args.wait)
            if args.png is not None:
                draw_png(paths, args.png)
            if not ready and args.wait is not None:
                raise SystemExit(1)
        elif args.command == "site":
            site_command(paths, args.action, args.pod)
        elif args.command == "traffic":
            if bool(args.source) != bool(args.target) and args.target != SITE_TARGET:
                raise LabError("--from and --to go together")
            report = traffic(paths, args.source, args.target, args.pings)
            print_report(report, report.source, report.target)
            if report.verdict == "not protected":
                raise SystemExit(1)
    except (
        LabError,
        ManifestError,
        host.HostError,
        containers.ContainerSpecError,
        site.SiteError,
    ) as exc:
        console.print(f"[red]kipsec lab {args.command}: {exc}[/]")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
