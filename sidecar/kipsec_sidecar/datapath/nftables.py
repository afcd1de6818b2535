"""Running nftables scripts in the sidecar's own network namespace.

kipsec keeps each piece of its nftables state in a table of its own (``inet kipsec``
for MSS clamping, ``inet kipsec_svc`` for Service translation) and always rewrites a
table whole: the script starts with :func:`drop_table` (declare the table, then delete
it, so the delete never fails on a missing table) and declares the new contents after
it. ``nft -f`` applies a script as one transaction, so the kernel switches from the old
table to the new one at once and never holds half of either, and a stale table left
by a crashed run is replaced by the same script that installs a fresh one.

The ``nft`` command comes from the ``nftables`` package (the sidecar image installs
it); :func:`run_nft` returns None when it is absent and the caller decides whether that
is fatal.
"""

from __future__ import annotations

import shutil
import subprocess

from .base import DatapathError

#: Seconds one ``nft -f`` may take before it counts as failed.
NFT_TIMEOUT = 5.0


def drop_table(table: str) -> str:
    """Script lines that delete ``inet <table>`` whether or not it exists."""
    return f"table inet {table}\ndelete table inet {table}\n"


def available() -> bool:
    """Is the ``nft`` command on PATH?"""
    return shutil.which("nft") is not None


def run_nft(script: str) -> subprocess.CompletedProcess[str] | None:
    """Run ``nft -f -`` with ``script`` (one transaction); None when ``nft`` is absent.

    Never raises for nft's own failures: the caller reads ``returncode`` and ``stderr``.
    Raises ``subprocess.TimeoutExpired`` after :data:`NFT_TIMEOUT` seconds.
    """
    nft = shutil.which("nft")
    if nft is None:
        return None
    return subprocess.run(  # noqa: S603 - fixed program, script built from validated values
        [nft, "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=NFT_TIMEOUT,
        check=False,
    )


def apply(table: str, script: str) -> bool:
    """Run ``script`` (one transaction on ``inet <table>``); False when ``nft`` is absent.

    Raises DatapathError naming the table with nft's message when nft refuses the script,
    cannot be executed or times out; the table then keeps what it held before.
    """
    try:
        result = run_nft(script)
    except (OSError, subprocess.SubprocessError) as exc:  # cannot exec, or timed out
        raise DatapathError(f"nftables table {table}: {exc}") from None
    if result is None:
        return False
    if result.returncode != 0:
        raise DatapathError(f"nftables table {table}: {result.stderr.strip()}")
    return True


__all__ = ["NFT_TIMEOUT", "apply", "available", "drop_table", "run_nft"]
