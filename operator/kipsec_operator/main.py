"""`kipsec-operator run`: the operator process (kopf plus the HTTPS endpoints).

Two replicas are safe: kopf peering (a `ClusterKopfPeering` named `kipsec`, or a
namespaced `KopfPeering` with `--namespace`) pauses every replica but the one with
the highest priority, and each replica takes a random priority so that two never tie
(kopf pauses both on a tie). Every replica keeps its index with its own watches
(:mod:`.index_watches`); only the one kopf does not pause reconciles
(:mod:`.leadership`). The webhook, CSR and configuration endpoints are served by every
replica: they only read, from the API server rather than the index
(:mod:`.live_reads`). `--standalone` disables peering (one replica, tests, the lab).
What the webhook injects comes from the environment the chart sets
(:mod:`.webhook.environment`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import kopf

from .handlers import Operator, register
from .kube import ConfigException, Connection, Credentials, default_credentials
from .leadership import kopf_pause
from .webhook.environment import SettingsError, cluster_networks, injection_settings
from .webhook.injection import InjectionSettings

PEERING_NAME = "kipsec"


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base with an empty essence.

    kopf builds the "essence" of the object in every watch event (a deep copy of it,
    then a second copy to clear it) to find the changes that `on.create`/`on.update`
    handlers react to. This operator registers none (timers only,
    `tests/unit/test_operator_kopf_settings.py` keeps it so), and those copies were a
    fifth of kopf's time per event at thousands of pods. Timers read the diff only
    for `idle`, which none sets. Nor is a last-handled essence read back from each
    object's annotations (parsed per event; 2 % of the operator at 5,000 pods): with
    no change handler kopf never stores one, so there is none to read.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None


def settings(*, standalone: bool) -> kopf.OperatorSettings:
    """kopf settings: peering for leader election, Events posted, no CRD scanning,
    no diff base (:class:`NoDiffBase`)."""
    configured = kopf.OperatorSettings()
    configured.persistence.diffbase_storage = NoDiffBase()
    configured.peering.name = PEERING_NAME
    configured.peering.standalone = standalone
    configured.peering.mandatory = not standalone
    configured.peering.priority = random.randint(1, 2**31 - 1)  # noqa: S311 - not a secret
    configured.posting.enabled = True
    configured.posting.level = logging.INFO
    configured.scanning.disabled = True  # the chart installs the CRDs before the operator
    configured.watching.server_timeout = 300
    configured.networking.request_timeout = 60
    return configured


async def run_operator(
    operator: Operator,
    *,
    namespaces: Sequence[str] = (),
    standalone: bool = False,
    priority: int | None = None,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run kopf with `operator`'s handlers until `stop_flag` is set (or forever).

    What :func:`kopf.operator` does (spawn its tasks, run them), with the operator told
    in between whether it leads: kopf's peering pause (:mod:`.leadership`). `priority`
    is this replica's peering priority (default: random, :func:`settings`)."""
    registry = kopf.OperatorRegistry()
    register(operator, registry)
    operator.namespaces = tuple(namespaces)
    current = asyncio.current_task()
    existing = {task for task in asyncio.all_tasks() if task is not current}
    tasks = await kopf.spawn_tasks(
        registry=registry,
        settings=settings(standalone=standalone),
        standalone=standalone,
        priority=priority,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        memo=kopf.Memo(),
    )
    operator.leadership.follow(None if standalone else kopf_pause(tasks), PEERING_NAME)
    await kopf.run_tasks(tasks, ignored=existing)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kipsec-operator")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")
    run.add_argument("--namespace", action="append", default=[], help="watch only these")
    run.add_argument("--standalone", action="store_true", help="no leader election")
    run.add_argument(
        "--kubeconfig",
        help="kubeconfig file(s) (default: the pod's ServiceAccount in a pod, else "
        "$KUBECONFIG or ~/.kube/config)",
    )
    run.add_argument("--context", help="kubeconfig context (default: its current-context)")
    run.add_argument(
        "--server", help="API server URL with the token in $KIPSEC_API_TOKEN (the lab)"
    )
    run.add_argument("--insecure", action="store_true", help="with --server: do not verify")
    run.add_argument(
        "--operator-namespace",
        default=os.environ.get("POD_NAMESPACE", "kipsec-system"),
        help="where the CA Secret lives",
    )
    run.add_argument("--listen", default="0.0.0.0:8443", help="webhook/CSR/metrics address")
    run.add_argument("--tls-cert", help="serving certificate (PEM) of the endpoints")
    run.add_argument("--tls-key", help="its key (PEM)")
    run.add_argument("--report-interval", type=float, default=10.0, help="seconds")
    run.add_argument("--verbose", action="store_true")
    return parser


def credentials(args: argparse.Namespace) -> Credentials:
    """Where the API server is and how to authenticate, from the command line."""
    if args.server:
        return Connection(args.server, os.environ.get("KIPSEC_API_TOKEN"), None, args.insecure)
    return default_credentials(args.kubeconfig, args.context)


async def _main(
    args: argparse.Namespace, injection: InjectionSettings, networks: tuple[str, ...]
) -> None:
    connection = credentials(args)
    try:
        await connection.configuration()  # fail here, clearly, rather than inside kopf
    except ConfigException as exc:
        message = f"kipsec-operator: no API server credentials ({connection}): {exc}"
        raise SystemExit(message) from None
    host, _, port = args.listen.rpartition(":")
    operator = Operator(
        connection,
        namespace=args.operator_namespace,
        injection=injection,
        report_interval=args.report_interval,
        listen=(host, int(port)),
        tls=(args.tls_cert, args.tls_key) if args.tls_cert and args.tls_key else None,
        cluster_networks=networks,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_operator(
        operator, namespaces=args.namespace, standalone=args.standalone, stop_flag=stop
    )


def main(argv: Sequence[str] | None = None) -> None:
    """The command line; a bad setting in the environment exits 2 naming the variable."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        injection = injection_settings(os.environ)
        networks = cluster_networks(os.environ)
    except SettingsError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        # kopf logs a line per handler run at INFO ("Timer 'sidecar_reports' succeeded."):
        # one per Tunnel every report interval (and, when kopf fed the index, four per
        # pod: 4 % of the operator's CPU at thousands of pods). Its warnings and errors
        # stay; the operator's own log ("kipsec.operator") is unchanged.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(_main(args, injection, networks))


if __name__ == "__main__":
    main()
