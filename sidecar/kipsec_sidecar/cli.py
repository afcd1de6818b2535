"""``kipsec-sidecar``: run the sidecar, and inspect or act on a running one.

``run --config FILE`` starts the daemon. The control commands (``sas``, ``initiate``,
``rekey``, ``terminate``, ``reload``) talk to a running sidecar over its control socket
(:mod:`kipsec_sidecar.control`), like ``swanctl`` over vici. ``demo`` runs the in-memory
demo of the protocol cores.

Exit codes, for scripts: 0 done; 1 the sidecar refused or failed the request (its message
on stderr; with ``--wait``, the exchange failed and the message gives the reason); 2 usage
error; 3 the control socket cannot be reached (the message names the path and whether the
sidecar seems to be running); 4 ``--wait`` ran out before the exchange ended.

``initiate``, ``rekey`` and ``terminate`` return, without ``--wait``, once the sidecar has
sent the request: exit 0 says nothing about the exchange's outcome.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .control import DEFAULT_SOCKET, SOCKET_ENV, ControlClient, ControlConnectionError
from .core.ikev1.constants import AuthMethod
from .state import ControlError, ControlTimeout

EXIT_OK = 0
EXIT_CONTROL_ERROR = 1
EXIT_USAGE = 2
EXIT_CANNOT_CONNECT = 3
EXIT_WAIT_TIMEOUT = 4

#: Seconds ``--wait`` waits when given without a value.
DEFAULT_WAIT = 30.0

#: Environment variable naming the health endpoint's address (the injected sidecar's).
HEALTH_LISTEN_ENV = "KIPSEC_HEALTH_LISTEN"
#: Environment variable naming the probes-only listener's address (the injected sidecar's).
PROBE_LISTEN_ENV = "KIPSEC_PROBE_LISTEN"


def wall_clock() -> float:
    """Seconds since 1970; the ``sas`` table shows times relative to it."""
    return time.time()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kipsec-sidecar",
        description="kipsec per-pod IPsec agent",
        epilog="exit codes: 0 ok, 1 control error or failed exchange, 2 usage, "
        "3 cannot reach the control socket, 4 --wait timed out",
    )
    parser.add_argument("--version", action="version", version=f"kipsec {__version__}")
    parser.add_argument(
        "--socket",
        default=os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET,
        metavar="PATH",
        help=f"control socket of the running sidecar (default ${SOCKET_ENV} or {DEFAULT_SOCKET})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the sidecar daemon")
    run.add_argument("--config", required=True, metavar="FILE", help="configuration file")
    run.add_argument(
        "--log-format", choices=("text", "json"), help="override the configuration's format"
    )
    run.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="override the configuration's level",
    )
    run.add_argument(
        "--health-listen",
        default=os.environ.get(HEALTH_LISTEN_ENV) or None,
        metavar="ADDR:PORT",
        help=f"health/metrics endpoint, also while waiting for the configuration file "
        f"(default ${HEALTH_LISTEN_ENV}, else the configuration's metrics.listen)",
    )
    run.add_argument(
        "--probe-listen",
        default=os.environ.get(PROBE_LISTEN_ENV) or None,
        metavar="ADDR:PORT",
        help=f"a second listener serving only /healthz and /readyz, for the kubelet's "
        f"probes, with its own connection limit (default ${PROBE_LISTEN_ENV}; unset: none)",
    )
    run.add_argument(
        "--operator-config-dir",
        metavar="DIR",
        help="also poll the operator ($KIPSEC_OPERATOR_URL/v1/config) for the configuration "
        "and keep it in DIR (default $KIPSEC_OPERATOR_CONFIG_DIR; unset: the file only)",
    )

    sas = commands.add_parser("sas", help="list IKE and child SAs, like swanctl --list-sas")
    sas.add_argument("--json", action="store_true", help="print the stable JSON snapshot")
    sas.add_argument("--peer", metavar="NAME", help="only this peer")

    initiate = commands.add_parser(
        "initiate", help="establish the SAs with a peer now (ends a terminate)"
    )
    initiate.add_argument("peer", metavar="PEER")
    _add_wait(initiate, "until the child SA is established")

    rekey = commands.add_parser("rekey", help="rekey a peer's child SAs or IKE SA now")
    rekey.add_argument("peer", metavar="PEER")
    kind = rekey.add_mutually_exclusive_group(required=True)
    kind.add_argument("--child", dest="kind", action="store_const", const="child")
    kind.add_argument("--ike", dest="kind", action="store_const", const="ike")
    _add_wait(rekey, "until the new SA replaced the old one")

    terminate = commands.add_parser(
        "terminate",
        help="delete a peer's SAs (sends DELETE) and keep it down until initiate or a reload",
    )
    terminate.add_argument("peer", metavar="PEER")
    _add_wait(terminate, "until the peer answered the DELETE (or it was given up)")

    commands.add_parser("reload", help="re-read the configuration file")
    commands.add_parser(
        "demo",
        help="negotiate IKEv2 between two in-memory peers and carry a packet through ESP",
    )
    return parser


def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be above 0 and at most 3600 seconds")
    return value


def _add_wait(parser: argparse.ArgumentParser, until: str) -> None:
    parser.add_argument(
        "--wait",
        nargs="?",
        const=DEFAULT_WAIT,
        type=_wait_seconds,
        metavar="SECONDS",
        help=f"wait {until}, at most SECONDS (default {DEFAULT_WAIT:g}): exit 0 done, "
        "1 failed (the reason on stderr), 4 timed out",
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # argparse: --help/--version (0) or a usage error (2)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    if args.command == "demo":
        from .demo import main as demo

        return demo()
    if args.command == "run":
        return _run(args)
    return _control(args)


def _run(args: argparse.Namespace) -> int:
    # Importing the daemon creates some 73,000 objects the cyclic collector tracks, and
    # nearly all live as long as the process. The collector would scan them over and over
    # while they are created (~90 collections, ~20 ms of a start's CPU) and again at
    # every full collection afterwards (~25 ms each, a pause of the datapath; 0.03 ms
    # once they are frozen): collect nothing during the import, then freeze what it made
    # out of the collector's sight (its garbage, ~750 objects, stays; VmRSS +0.3 MiB).
    gc.disable()
    try:
        run: Callable[..., int] = importlib.import_module(f"{__package__}.daemon").run
    except (ImportError, AttributeError) as error:
        print(f"kipsec-sidecar: the daemon cannot be loaded: {error}", file=sys.stderr)
        return EXIT_CONTROL_ERROR
    finally:
        gc.freeze()
        gc.enable()
    options = {
        name: value
        for name, value in (
            ("log_format", args.log_format),
            ("log_level", args.log_level),
            ("health_listen", args.health_listen),
            ("probe_listen", args.probe_listen),
            ("operator_config_dir", args.operator_config_dir),
        )
        if value is not None
    }
    return int(run(args.config, **options))


def _control(args: argparse.Namespace) -> int:
    client = ControlClient(args.socket)
    try:
        if args.command == "sas":
            fields = {"peer": args.peer} if args.peer else {}
            data = client.request("sas", **fields)
            if args.json:
                print(json.dumps(data, indent=2))
            else:
                print(render_sas(data, now=wall_clock()), end="")
        elif args.command == "rekey":
            client.request("rekey", peer=args.peer, kind=args.kind, **_wait(args))
            done = "done" if args.wait else "started"
            print(f"rekey of the {args.kind} SA(s) of peer {args.peer!r} {done}")
        elif args.command == "initiate":
            client.request("initiate", peer=args.peer, **_wait(args))
            done = "established" if args.wait else "initiated"
            print(f"{done} peer {args.peer!r}")
        elif args.command == "terminate":
            client.request("terminate", peer=args.peer, **_wait(args))
            print(f"terminated peer {args.peer!r}: it stays down until initiate or a reload")
        elif args.command == "reload":
            changes = client.request("reload")
            print("\n".join(changes) if changes else "configuration reloaded: no change")
    except ControlConnectionError as error:
        print(f"kipsec-sidecar: {error}", file=sys.stderr)
        return EXIT_CANNOT_CONNECT
    except ControlTimeout as error:
        print(f"kipsec-sidecar {args.command}: {error}", file=sys.stderr)
        return EXIT_WAIT_TIMEOUT
    except ControlError as error:
        print(f"kipsec-sidecar {args.command}: {error}", file=sys.stderr)
        return EXIT_CONTROL_ERROR
    except TimeoutError:
        print(
            f"kipsec-sidecar {args.command}: no answer from {args.socket} "
            f"within {client.timeout:g} s",
            file=sys.stderr,
        )
        return EXIT_CONTROL_ERROR
    return EXIT_OK


def _wait(args: argparse.Namespace) -> dict[str, float]:
    return {} if args.wait is None else {"wait": args.wait}


# --- the sas table ----------------------------------------------------------------------


def _duration(seconds: float) -> str:
    """``3725`` -> ``1h02m05s``; whole seconds, no sign."""
    total = int(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _when(at: float | None, now: float, future: str, past: str) -> str | None:
    if at is None:
        return None
    return f"{future} {_duration(at - now)}" if at >= now else f"{past} {_duration(now - at)} ago"


def _auth_method_name(number: int) -> str:
    """`method 4 (rsa-encryption)`: an IKEv1 authentication method as the table shows it."""
    try:
        name = AuthMethod(number).name.lower().replace("_", "-")
    except ValueError:
        return f"method {number}"
    return f"method {number} ({name})"


def _ike_lines(ike: dict[str, Any], now: float) -> list[str]:
    role = "initiator" if ike["initiator"] else "responder"
    at = ike.get("established_at")
    version = ", IKEv1" if ike.get("ike_version") == 1 else ""
    if ike.get("auth_method") is not None:
        version += f" {_auth_method_name(int(ike['auth_method']))}"
    head = f"  IKE SA: {ike['state']}, {role}{version}" + (
        f", up {_duration(now - at)}" if at else ""
    )
    algorithms = f"{ike['encryption']}/{ike['prf']}/{ike['dh_group']}"
    star_i, star_r = ("*", "") if ike["initiator"] else ("", "*")
    return [
        head,
        f"    local  '{ike['local_id']}' @ {ike['local_addr']}",
        f"    remote '{ike['remote_id']}' @ {ike['remote_addr']}",
        f"    SPIs   {ike['spi_i']}_i{star_i} {ike['spi_r']}_r{star_r}",
        f"    proposal {algorithms}" + (", NAT detected" if ike["nat_detected"] else ""),
    ]


def _child_lines(child: dict[str, Any], now: float) -> list[str]:
    wire = " in UDP" if child["encapsulation"] == "udp" else ""
    algorithms = "/".join(a for a in (child["encryption"], child["integrity"]) if a)
    esn = ", ESN" if child["esn"] else ""
    timing = [
        _when(child.get("installed_at") or None, now, "installs in", "installed"),
        _when(child.get("rekey_at"), now, "rekeying in", "rekey due"),
        _when(child.get("expire_at"), now, "expires in", "expired"),
    ]
    width = max(len(str(child[f"bytes_{d}"])) for d in ("in", "out"))
    return [
        f"  child {child['name']}: {child['state']}, {child['protocol'].upper()} "
        f"{child['mode']}{wire}, {algorithms}{esn}",
        f"    in   {child['spi_in']}, {child['bytes_in']:>{width}} bytes, "
        f"{child['packets_in']} packets",
        f"    out  {child['spi_out']}, {child['bytes_out']:>{width}} bytes, "
        f"{child['packets_out']} packets",
        "    " + ", ".join(t for t in timing if t),
        f"    local  {' '.join(child['local_ts'])}",
        f"    remote {' '.join(child['remote_ts'])}",
    ]


def render_sas(data: dict[str, Any], *, now: float) -> str:
    """The human ``sas`` table of a snapshot's JSON (as the control socket returns it).

    Times are shown relative to ``now`` (wall clock, seconds since 1970). The layout is
    for people and may change; scripts use ``--json``.
    """
    ready = "ready" if data.get("ready") else "not ready"
    lines = [
        f"kipsec {data['version']}, {data['datapath']} datapath ({data['datapath_reason']}), "
        f"up {_duration(now - data['started_at'])}, {ready}",
    ]
    if not data["peers"]:
        lines.append("no peers configured")
    for peer in data["peers"]:
        held = ", terminated (down until initiate or reload)" if peer.get("terminated") else ""
        lines.append(
            f"{peer['name']}: {peer['state']}, {peer['address']}, keying {peer['keying']}, "
            f"start {peer['start']}{held}"
        )
        if peer.get("last_error"):
            lines.append(f"  last error: {peer['last_error']}")
        lines += [f"  warning: {w}" for w in peer.get("warnings", ())]
        if peer.get("ike_sa"):
            lines += _ike_lines(peer["ike_sa"], now)
        elif peer["keying"] == "ike":
            lines.append("  no IKE SA")
        for child in peer["children"]:
            lines += _child_lines(child, now)
        if not peer["children"]:
            lines.append("  no child SA")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
