"""The sidecar's own text exposition gives byte for byte what prometheus-client gives.

The sidecar writes ``/metrics`` with :mod:`kipsec_sidecar.exposition` instead of
prometheus-client (which it no longer imports: see that module). Scrapers, the chart's
dashboard and alerts were written against prometheus-client's output, so each test here
renders the same families with both writers and compares the bytes: the sidecar's
families, the identity families, edge values and label escaping, and the ``process_*``
families read from the same (fake) ``/proc``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import ProcessCollector as ClientProcessCollector

from kipsec_sidecar.daemon.enrollment import Enrollment, EnrollmentCollector
from kipsec_sidecar.exposition import (
    CounterFamily,
    Family,
    GaugeFamily,
    ProcessCollector,
    Registry,
    go_float,
    render,
)
from kipsec_sidecar.metrics import build_registry
from kipsec_sidecar.state import SidecarSnapshot
from support.controller_double import ControllerDouble, example_snapshot, not_ready_snapshot


class _Fixed:
    """A collector of fixed families."""

    def __init__(self, *families: Family) -> None:
        self.families = families

    def collect(self) -> tuple[Family, ...]:
        return self.families

    def describe(self) -> tuple[Family, ...]:
        return self.families


def both(registry: Registry) -> tuple[str, str]:
    """``registry`` rendered by the sidecar and by prometheus-client's ``generate_latest``
    (which takes any object with ``collect()``)."""
    return render(registry).decode(), generate_latest(cast(CollectorRegistry, registry)).decode()


@pytest.mark.parametrize(
    "snapshot",
    [
        example_snapshot(),
        not_ready_snapshot(),
        example_snapshot(peers=()),
        example_snapshot(started_at=1765096543.123456, drops={"replay": 123456789}),
    ],
)
def test_the_sidecar_families_render_as_prometheus_client_renders_them(
    snapshot: SidecarSnapshot,
) -> None:
    registry = build_registry(ControllerDouble(current=snapshot), process_metrics=False)
    ours, theirs = both(registry)
    assert "# TYPE kipsec_packets_total counter" in ours
    assert ours == theirs


def test_the_identity_families_render_as_prometheus_client_renders_them() -> None:
    issued = SimpleNamespace(not_after=example_time(86400), renewal_time=example_time(57600))
    for enrolled in (
        SimpleNamespace(results={"issued": 2, "not-selected": 1}, identity=issued),
        SimpleNamespace(results={}, identity=None),
    ):
        registry = Registry()
        registry.register(EnrollmentCollector(cast(Enrollment, enrolled)))
        ours, theirs = both(registry)
        assert "kipsec_identity_waiting" in ours
        assert ours == theirs


def example_time(offset: float) -> object:
    from datetime import UTC, datetime, timedelta

    return datetime(2026, 12, 7, tzinfo=UTC) + timedelta(seconds=offset)


def test_edge_values_and_escapes_render_as_prometheus_client_renders_them() -> None:
    values = [0, 1, -3, 0.5, 1e-9, 123456, 1234567, 12345678.9, 2**63, 1e21, -1e21]
    values += [float("inf"), float("-inf"), float("nan")]
    gauge = GaugeFamily("kipsec_test_values", 'A "gauge" with\\ a\nnewline.', labels=["i"])
    for i, value in enumerate(values):
        gauge.add_metric([str(i)], value)
    counter = CounterFamily("kipsec_test_total", "A counter given with _total.", labels=["b", "a"])
    counter.add_metric(['quote " backslash \\ newline \n end', "é ü 日本"], 7)
    counter.add_metric(["", ""], 0)
    plain = CounterFamily("kipsec_test_plain", "No labels.", value=3)
    registry = Registry()
    registry.register(_Fixed(gauge, counter, plain))
    ours, theirs = both(registry)
    escaped = 'b="quote \\" backslash \\\\ newline \\n end"'
    assert f'kipsec_test_total{{a="é ü 日本",{escaped}}} 7.0' in ours
    assert 'kipsec_test_values{i="7"} 1.23456789e+07' in ours
    assert ours == theirs
    assert go_float(float("nan")) == "NaN"


def fake_proc(root: Path, *, fds: int, limits: bool = True) -> Path:
    """A ``/proc`` with ``stat`` (btime) and ``self/{stat,limits,fd}``."""
    (root / "self" / "fd").mkdir(parents=True)
    (root / "stat").write_text("cpu  1 2 3\nbtime 1765000000\nprocesses 5\n")
    # pid (comm with ) and spaces) state ... utime=14th stime=15th starttime=22nd
    # vsize=23rd rss=24th field: after the comm, index 11, 12, 19, 20, 21.
    after = ["S", "1", "1", "1", "0", "-1", "4194560", "10", "0", "0", "0"]
    after += ["1234", "567", "0", "0", "20", "0", "1", "0", "98765", "123456789", "4321"]
    (root / "self" / "stat").write_text("42 (kipsec) sidecar) " + " ".join(after) + " 0 0\n")
    if limits:
        (root / "self" / "limits").write_text(
            "Limit                     Soft Limit           Hard Limit           Units\n"
            "Max open files            1048576              1048576              files\n"
        )
    for i in range(fds):
        (root / "self" / "fd" / str(i)).touch()
    return root


@pytest.mark.parametrize("limits", [True, False])
def test_the_process_families_render_as_prometheus_client_renders_them(
    tmp_path: Path, limits: bool
) -> None:
    proc = fake_proc(tmp_path, fds=7, limits=limits)
    ours = Registry()
    ours.register(ProcessCollector(str(proc)))
    theirs = CollectorRegistry()
    ClientProcessCollector(proc=str(proc), registry=theirs)
    text = render(ours).decode()
    assert ("process_open_fds 7.0" in text) is limits
    assert "process_cpu_seconds_total 18.0" in text  # (1234 + 567) ticks at 100 Hz
    assert text == generate_latest(theirs).decode()


def test_the_process_families_of_this_process_are_all_there() -> None:
    registry = Registry()
    registry.register(ProcessCollector())
    names = [f.name for f in registry.collect()]
    assert names == [
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_cpu_seconds",
        "process_open_fds",
        "process_max_fds",
    ]


def test_a_family_name_registered_twice_is_refused() -> None:
    registry = build_registry(ControllerDouble(), process_metrics=False)
    with pytest.raises(ValueError, match="kipsec_ready"):
        registry.register(_Fixed(GaugeFamily("kipsec_ready", "again")))


def test_a_sample_with_the_wrong_number_of_labels_is_refused() -> None:
    family = GaugeFamily("kipsec_x", "x", labels=["a", "b"])
    with pytest.raises(ValueError, match="kipsec_x"):
        family.add_metric(["only one"], 1)


def test_a_snapshot_change_shows_at_the_next_scrape() -> None:
    controller = ControllerDouble()
    registry = build_registry(controller, process_metrics=False)
    assert "kipsec_ready 1.0" in render(registry).decode()
    controller.current = replace(not_ready_snapshot())
    assert "kipsec_ready 0.0" in render(registry).decode()
