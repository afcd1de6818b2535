"""Fixtures of the lab tests: the images built once per session, one running lab per
module (see support.lab_harness)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kipsec_lab import cli, host
from support.lab_harness import Lab, build_images, lab_runtime, start_lab
from support.requirements import unavailable


@pytest.fixture(scope="session", autouse=True)
def images() -> None:
    """The sidecar and operator images of this tree, built once per test session (the
    base tarball and the wheelhouse are cached across sessions)."""
    if lab_runtime() == "host":
        return
    reason = build_images()
    if reason is not None and lab_runtime() == "podman":
        unavailable(reason)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab for the module (scenarios use namespaces of their own), with its
    Prometheus; down afterwards."""
    started = start_lab(
        tmp_path_factory.mktemp("lab") / "state", f"klt{os.getpid() % 100000}", prometheus=True
    )
    try:
        yield started
    finally:
        cli.down(started.paths, quiet=True)
        assert not [ns for ns in host.netns_list() if ns.startswith(f"{started.config.name}-")]
