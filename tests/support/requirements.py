"""Skip a test tier whose requirements are missing here — or fail, where they must exist.

A developer without root or without the VM packages still gets a green fast loop; CI
sets ``KIPSEC_REQUIRE_ALL_TIERS=1`` (in ``.ci/run``), so a missing install step there is a
failure, never a silently skipped tier.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ENV = "KIPSEC_REQUIRE_ALL_TIERS"


def required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def unavailable(reason: str) -> None:
    """Skip the calling test, or fail it when every tier is required."""
    if required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: this tier must run here)", pytrace=False)
    pytest.skip(reason)
