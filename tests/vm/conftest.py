"""The VM test group (DESIGN.md tier 3): select with ``-m vm``, leave out with ``-m "not vm"``."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Until pyproject.toml registers it (the suite runs with --strict-markers).
    config.addinivalue_line("markers", "vm: kernel tests inside a virtme-ng VM (root, ~2 min)")
