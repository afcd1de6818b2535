"""The sidecar daemon: ``kipsec-sidecar run --config FILE`` ends up in :func:`run`.

:func:`run` blocks until SIGTERM or SIGINT (exit 0 after a clean shutdown: DELETE sent
for every IKE SA, answers awaited for at most a second, the datapath's devices, routes
and rules removed). SIGHUP, or a change of the configuration file (checked every
second), reloads the peers.

A second SIGTERM/SIGINT while the first is still waiting for DELETE answers (a peer
that is gone or unreachable) stops the wait: the daemon removes its device, routes,
rules and nft table at once and exits 1. Cleanup is a few netlink calls; should it hang
anyway, the daemon exits :data:`HURRY_LIMIT` seconds after the second signal, and a
third signal exits at once. Exiting without cleanup still fails closed: the blackhole
routes and rules outlive the process (see :mod:`kipsec_sidecar.datapath.routing`) and
the next start removes them.

Exit codes: 0 stopped cleanly, 1 could not start (datapath, sockets, control socket) or
stopped by a second signal, 2 the configuration is invalid (the message names every
bad field).

When the configuration file does not exist yet (the operator wrote an empty bootstrap
Secret for a pod that had no IP), the daemon waits for it: it logs that once, serves
the health endpoint with ``/healthz`` answering 503 "waiting for configuration" (so
the native sidecar's startupProbe holds the application back), and starts as soon as
the file appears and loads (an invalid one is logged and waited past). A stop signal
while waiting exits 0. The health endpoint listens on ``health_listen`` (the
``--health-listen`` option / ``KIPSEC_HEALTH_LISTEN``, which the injected sidecar gets),
else on the document's ``metrics.listen``; while waiting there is no document, so on
``health_listen`` or :data:`~kipsec_sidecar.health.DEFAULT_LISTEN`.

With ``operator_config_dir`` (``--operator-config-dir``, ``KIPSEC_OPERATOR_CONFIG_DIR``)
the daemon also polls the operator's ``/v1/config`` and follows the copy it writes
there (:mod:`.delivery`); it starts from, and waits on, the mounted file first and that
copy second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from .. import capabilities
from ..capabilities import MissingCapability
from ..config.errors import ConfigError
from ..config.load import load_config
from ..config.model import SidecarConfig
from ..datapath.base import DatapathError
from ..exposition import Registry
from ..logs import setup_logging
from ..state import ControlError
from .config_watch import Digest, digest, wait_for_document
from .datapath_choice import choose_datapath, factory_for
from .delivery import Delivery, DeliverySettings
from .enrollment import Enrollment
from .sidecar import CONFIG_POLL_INTERVAL, DatapathFactory, Sidecar

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_BAD_CONFIG = 2

#: Seconds after a second stop signal within which the process exits, cleaned up or not.
HURRY_LIMIT = 2.0


def run(config_path: str, **options: Any) -> int:
    """Run the sidecar for the configuration at ``config_path`` until a stop signal.

    Options: ``log_format`` ("text"/"json") and ``log_level`` override the document's
    logging; ``datapath_factory`` (tests) replaces the userspace datapath;
    ``ike_port``/``natt_port`` (tests) replace 500/4500; ``rotation_grace`` (tests)
    shortens the manual-key rotation grace period; ``config_poll_interval`` sets how
    often the configuration file is checked for changes (seconds, 0: never — SIGHUP
    and ``kipsec-sidecar reload`` still reload); ``shutdown_wait`` (tests) replaces the
    one second SIGTERM waits for DELETE answers; ``health_listen`` (``address:port``)
    replaces the document's ``metrics.listen`` and is where the health endpoint listens
    while the configuration file does not exist yet; ``probe_listen`` (``address:port``)
    adds the probes-only listener beside it (:mod:`kipsec_sidecar.health`);
    ``operator_config_dir`` turns on
    configuration delivery from the operator (:mod:`.delivery`). Returns the exit code.
    """
    return asyncio.run(_main(config_path, **options))


async def _main(config_path: str, *, operator_config_dir: str | None = None, **options: Any) -> int:
    """:func:`_daemon`, with configuration delivery from the operator polling beside it
    when it is enabled (``operator_config_dir`` or its environment, see :mod:`.delivery`)."""
    settings = DeliverySettings.from_environ(config_path, operator_config_dir)
    if settings is None:
        return await _daemon(config_path, **options)
    setup_logging(_format(options.get("log_format")), options.get("log_level") or "info")
    delivery = Delivery(settings)
    task = asyncio.create_task(delivery.run(), name="kipsec-config-delivery")
    try:
        return await _daemon(config_path, delivery=delivery, **options)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _daemon(
    config_path: str,
    *,
    log_format: str | None = None,
    log_level: str | None = None,
    datapath_factory: DatapathFactory | None = None,
    ike_port: int = 500,
    natt_port: int = 4500,
    rotation_grace: float | None = None,
    config_poll_interval: float | None = None,
    shutdown_wait: float | None = None,
    health_listen: str | None = None,
    probe_listen: str | None = None,
    delivery: Delivery | None = None,
) -> int:
    loaded: Digest | None = None
    # The mounted Secret first, else the operator's copy (see .delivery).
    paths = (config_path,) if delivery is None else (config_path, delivery.settings.document)
    # Before anything (the health endpoint while waiting for the configuration included):
    # a missing capability is named and the pod never starts, not an EPERM later.
    if datapath_factory is None:  # a test's datapath needs no capability
        setup_logging(_format(log_format), log_level or "info")
        if not _capable(None, (ike_port, natt_port)):
            return EXIT_START_FAILED
    config_path = next((path for path in paths if os.path.exists(path)), config_path)
    if not os.path.exists(config_path):
        setup_logging(_format(log_format), log_level or "info")
        try:
            waited = await _wait_for_config(
                paths, config_poll_interval or CONFIG_POLL_INTERVAL, health_listen, probe_listen
            )
        except (OSError, ValueError) as exc:
            log.error("cannot start", extra={"error": str(exc)})
            return EXIT_START_FAILED
        if waited is None:
            return EXIT_OK
        config, loaded, config_path = waited
    try:
        if loaded is None:
            loaded = digest(config_path)
            config = load_config(config_path)
    except ConfigError as exc:
        setup_logging(_format(log_format), log_level or "info")
        return _invalid(exc, config_path)
    setup_logging(_format(log_format or config.logging.format), log_level or config.logging.level)
    if datapath_factory is None and not _capable(config, (ike_port, natt_port)):
        return EXIT_START_FAILED
    try:
        enrollment = Enrollment.from_environment(config, config_path)
        listen = health_listen or (config.metrics.listen if config.metrics.enabled else None)
        if enrollment is not None and not await _wait_for_certificate(
            enrollment, listen, probe_listen
        ):
            return EXIT_OK
    except ConfigError as exc:
        return _invalid(exc, config_path)
    except (OSError, ValueError) as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return EXIT_START_FAILED
    # Here, not at import: an invalid document or a sidecar still waiting for one never
    # needs the datapath's routing code.
    from ..datapath.routing import DEFAULT_MARK

    try:
        choice = choose_datapath(config.datapath)
        log.info(
            "datapath chosen",
            extra={"datapath": choice.name, "reason": choice.reason, "configured": config.datapath},
        )
        sidecar = Sidecar(
            config_path,
            config,
            datapath_factory=datapath_factory or factory_for(choice),
            datapath_choice=choice,
            ike_port=ike_port,
            natt_port=natt_port,
            mark=DEFAULT_MARK,
            **_given(
                rotation_grace=rotation_grace,
                config_poll_interval=config_poll_interval,
                shutdown_wait=shutdown_wait,
            ),
            loaded=loaded,
        )
    except ConfigError as exc:
        return _invalid(exc, config_path)
    except DatapathError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return EXIT_START_FAILED
    if delivery is not None:
        delivery.attach(sidecar.follow, sidecar.config_path)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[None]] = set()

    signals_seen = 0

    def on_stop(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        name = signal.Signals(signum).name
        if signals_seen == 1:
            log.info("stop signal received", extra={"signal": name})
            stop.set()
        elif signals_seen == 2:
            log.warning(
                "second stop signal: not waiting for DELETE answers, cleaning up",
                extra={"signal": name},
            )
            sidecar.hurry()
            loop.call_later(HURRY_LIMIT, _exit_now, "cleanup did not finish in time")
        else:
            _exit_now("third stop signal")

    def on_hup() -> None:
        log.info("SIGHUP: reloading the configuration")
        task = asyncio.create_task(_reload(sidecar))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop, signum)
    loop.add_signal_handler(signal.SIGHUP, on_hup)

    servers: list[Any] = []
    registry: Registry | None = None
    code = EXIT_OK
    renewal: asyncio.Task[None] | None = None

    def identity_pending(new: SidecarConfig) -> str | None:
        # A document that names `source: operator` only after start (the pod's first one
        # had no peer yet, or a Tunnel moved from PSK to certificates): enroll now, and
        # apply it once the certificate it names exists.
        nonlocal enrollment, renewal
        if enrollment is not None:
            return None
        late = Enrollment.from_environment(new, sidecar.config_path)
        if late is None:
            return None
        enrollment = late
        if registry is not None:
            registry.register(late.collector())
        renewal = asyncio.create_task(_enroll_late(late, sidecar, stop), name="kipsec-renew")
        return "waiting for the pod's first certificate from the operator"

    sidecar.identity_pending = identity_pending
    try:
        try:
            await sidecar.start()
            servers, registry = await _start_servers(sidecar, health_listen, probe_listen)
            if registry is not None and enrollment is not None:
                registry.register(enrollment.collector())
            if enrollment is not None and renewal is None:
                renewal = asyncio.create_task(enrollment.run(sidecar.reload), name="kipsec-renew")
        except (DatapathError, ConfigError, ControlError, OSError) as exc:
            log.error("cannot start", extra={"error": str(exc)})
            code = EXIT_START_FAILED
            stop.set()
        if code == EXIT_OK:
            log.info("ready")
        await stop.wait()
    finally:
        if renewal is not None:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                await server.close()
        try:
            await sidecar.stop()
        except Exception:
            log.exception("shutdown was not clean")
            code = code or EXIT_START_FAILED
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    if signals_seen > 1:
        code = code or EXIT_START_FAILED
    return code


def _invalid(exc: ConfigError, config_path: str) -> int:
    """Report an invalid configuration the one way, wherever it was found (the document,
    or a file it names: PSK, keys, certificates): logged, and printed on stderr as the
    error block (one line per bad field, with the document's path) for the person who
    started the sidecar."""
    error = exc if exc.source else exc.with_source(config_path)
    log.error("invalid configuration", extra={"path": config_path, "error": str(error)})
    print(f"kipsec-sidecar: {error}", file=sys.stderr)
    return EXIT_BAD_CONFIG


def _capable(config: SidecarConfig | None, ports: tuple[int, ...]) -> bool:
    """Whether this process holds the capabilities ``config`` needs (None: those every
    configuration needs); logs and prints the missing ones."""
    try:
        capabilities.check(config, ports)
    except MissingCapability as exc:
        log.error("cannot start", extra={"error": str(exc)})
        print(f"kipsec-sidecar: {exc}", file=sys.stderr)
        return False
    return True


def _exit_now(why: str) -> None:
    """Leave without cleanup; the blackhole routes keep the pod's traffic from leaking."""
    log.error("exiting without cleanup", extra={"reason": why})
    logging.shutdown()
    os._exit(EXIT_START_FAILED)


def _given(**options: float | None) -> dict[str, float]:
    return {name: value for name, value in options.items() if value is not None}


async def _wait_for_config(
    paths: tuple[str, ...], interval: float, health_listen: str | None, probe_listen: str | None
) -> tuple[SidecarConfig, Digest, str] | None:
    """Serve a waiting health endpoint until the configuration file exists and loads.

    None when a stop signal came first. Raises OSError when the health endpoint cannot
    listen, ValueError when ``health_listen`` is not ``address:port``.
    """
    from ..health import DEFAULT_LISTEN, HealthServer

    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    reason = f"waiting for configuration: {paths[0]} does not exist yet"
    health = HealthServer(
        None,
        Registry(),
        health_listen or DEFAULT_LISTEN,
        waiting=reason,
        probe_listen=probe_listen,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    try:
        async with health:
            return await wait_for_document(paths, interval=interval, stopped=stopped)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _wait_for_certificate(
    enrollment: Enrollment, listen: str | None, probe_listen: str | None = None
) -> bool:
    """Serve a waiting health endpoint on ``listen`` (None: none; ``probe_listen`` beside
    it) answering 503 "waiting
    for certificate: <the operator's reason>" until the first certificate is stored;
    False when a stop signal came first. Raises OSError/ValueError when the endpoint
    cannot listen."""
    from ..health import HealthServer

    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    registry = Registry()
    registry.register(enrollment.collector())
    health = None
    if listen is not None:
        health = HealthServer(
            None, registry, listen, waiting=enrollment.waiting or "", probe_listen=probe_listen
        )

    def waiting(reason: str) -> None:
        if health is not None:
            health.waiting = reason

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    try:
        async with health or contextlib.nullcontext():
            return await enrollment.first(stopped, on_wait=waiting)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _start_servers(
    sidecar: Sidecar,
    health_listen: str | None = None,
    probe_listen: str | None = None,
) -> tuple[list[Any], Registry | None]:
    """The control socket, then (if enabled) the metrics/health endpoint and its probes;
    the servers and the metrics registry (None when metrics are off)."""
    from ..control import ControlServer
    from ..health import HealthServer
    from ..metrics import build_registry

    servers: list[Any] = []
    control = ControlServer(sidecar, sidecar.config.control.socket)
    await control.start()
    servers.append(control)
    if sidecar.config.metrics.enabled:
        listen = health_listen or sidecar.config.metrics.listen
        registry = build_registry(sidecar)
        health = HealthServer(sidecar, registry, listen, probe_listen=probe_listen)
        try:
            await health.start()
        except BaseException:
            await control.close()
            raise
        servers.append(health)
        return servers, registry
    return servers, None


async def _enroll_late(enrollment: Enrollment, sidecar: Sidecar, stopped: asyncio.Event) -> None:
    """The first certificate of a document that named ``source: operator`` only after
    start, then that document (held back until now), then the renewals."""
    if await enrollment.first(stopped):
        await _reload(sidecar)
        await enrollment.run(sidecar.reload)


async def _reload(sidecar: Sidecar) -> None:
    with contextlib.suppress(ControlError):  # already logged; the old config stays
        await sidecar.reload()


def _format(value: str | None) -> Any:
    return value if value in ("text", "json") else "text"


__all__ = ["EXIT_BAD_CONFIG", "EXIT_OK", "EXIT_START_FAILED", "HURRY_LIMIT", "run"]
