"""``kipsec-sidecar``: the sidecar's command line.

Today it runs the demo of the protocol cores; the daemon (``run --config FILE``) and the
control commands (``sas``, ``initiate``, ``rekey``, ``terminate``, ``reload``) come with
the sidecar issue.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kipsec-sidecar", description="kipsec per-pod IPsec agent"
    )
    parser.add_argument("--version", action="version", version=f"kipsec {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo",
        help="negotiate IKEv2 between two in-memory peers and carry a packet through ESP",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo

        return demo()
    return 2  # argparse rejects unknown commands before this


if __name__ == "__main__":
    sys.exit(main())
