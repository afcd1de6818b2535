"""The Prometheus text exposition (format 0.0.4) of the sidecar's metric families.

Why not prometheus-client: the sidecar only turns snapshots into families at scrape time
(no counters it increments, no histograms, no push), and importing prometheus-client
loads ``http.server``, ``urllib`` and ``email`` with it: ~4 MiB of every sidecar's
resident memory and ~0.03 s of its start (``bench/sidecar_startup.py``). This module is
the part the sidecar uses, written to give byte for byte what prometheus-client's
``generate_latest`` gives for the same families (``tests/unit/test_exposition.py``
renders the same registry with both): counter samples named ``<name>_total``, labels
sorted by name, label values and HELP escaped the same way, values formatted as Go
formats floats. The operator still uses prometheus-client (its histograms and counters
are incremented in place).

Families are duck-compatible with prometheus-client's (``name``, ``type``,
``documentation``, ``samples`` of ``(name, labels, value, timestamp)``), so a test can
hand a :class:`Registry` to prometheus-client's writer and parser.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

#: The ``Content-Type`` of the exposition (prometheus-client's ``CONTENT_TYPE_PLAIN_0_0_4``).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Sample(NamedTuple):
    """One line of a family: sample name, labels, value (no timestamps are exported)."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp: float | None = None


class Family:
    """A metric family: its name, HELP text, label names and samples (see the two kinds
    below)."""

    type = ""
    #: What sample names add to the family's name (a name given with it drops it).
    suffix = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        value: float | None = None,
        labels: Sequence[str] = (),
    ) -> None:
        if self.suffix:
            name = name.removesuffix(self.suffix)
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labels)
        """The label names every sample carries (the dashboard's catalog reads them)."""
        self._sample_name = name + self.suffix
        self.samples: list[Sample] = []
        if value is not None:
            self.add_metric([], value)

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        """One sample with these label values (in the order of the family's labels)."""
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(labels)} label values for {self.labelnames}")
        named = dict(zip(self.labelnames, labels, strict=True))
        self.samples.append(Sample(self._sample_name, named, value))


class GaugeFamily(Family):
    """A value that goes up and down; samples carry the family's name."""

    type = "gauge"


class CounterFamily(Family):
    """A monotonic total, named without ``_total`` and its samples with it, as
    prometheus-client's ``CounterMetricFamily``."""

    type = "counter"
    suffix = "_total"


class Collector(Protocol):
    """What a registry asks at scrape time (and, for the duplicate check, at register)."""

    def collect(self) -> Iterable[Family]: ...

    def describe(self) -> Iterable[Family]: ...


class Registry:
    """The collectors of one endpoint, never process-global (two sidecars in one test
    process do not share one)."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def register(self, collector: Collector) -> None:
        """Add ``collector``; ValueError when one of its families' names is taken."""
        names = {family.name for family in collector.describe()}
        with self._lock:
            taken = names & self._names
            if taken:
                raise ValueError(f"duplicate metric families: {sorted(taken)}")
            self._collectors.append(collector)
            self._names |= names

    def collect(self) -> Iterable[Family]:
        with self._lock:
            collectors = list(self._collectors)
        for collector in collectors:
            yield from collector.collect()


def go_float(value: float) -> str:
    """``value`` as Prometheus (Go) prints it: ``1.0``, ``+Inf``, ``1.234567e+06``."""
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    # Go switches to exponents sooner than Python (prometheus-client's floatToGoString).
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render(registry: Registry) -> bytes:
    """The text exposition of every family the registry's collectors yield now.

    Whatever a collector raises propagates (the HTTP server answers 500).
    """
    out: list[str] = []
    for family in registry.collect():
        name = family.name + family.suffix
        help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.type}\n")
        for sample in family.samples:
            labels = ",".join(
                f'{key}="{_label_value(value)}"' for key, value in sorted(sample.labels.items())
            )
            braces = f"{{{labels}}}" if labels else ""
            out.append(f"{sample.name}{braces} {go_float(sample.value)}\n")
    return "".join(out).encode("utf-8")


class ProcessCollector:
    """The standard ``process_*`` families of this process, from ``/proc/self``: virtual
    and resident memory, start time, CPU seconds, open and maximum file descriptors
    (the names, HELP texts, values and order of prometheus-client's ``ProcessCollector``;
    like it, a part that cannot be read is left out)."""

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = proc
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._pagesize = os.sysconf("SC_PAGE_SIZE")
        try:
            self._btime = self._boot_time()
        except OSError:
            self._btime = 0.0

    def _boot_time(self) -> float:
        with open(os.path.join(self._proc, "stat"), "rb") as stat:
            for line in stat:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
        return 0.0

    def describe(self) -> list[Family]:
        return self._usage([b"0"] * 22) + self._fds(0.0, 0.0)

    def collect(self) -> list[Family]:
        if not self._btime:
            return []
        pid = os.path.join(self._proc, "self")
        families: list[Family] = []
        try:
            with open(os.path.join(pid, "stat"), "rb") as stat:
                families += self._usage(stat.read().split(b")")[-1].split())
        except OSError:
            pass
        try:
            with open(os.path.join(pid, "limits"), "rb") as limits:
                max_fds = next(
                    float(line.split()[3]) for line in limits if line.startswith(b"Max open file")
                )
            families += self._fds(float(len(os.listdir(os.path.join(pid, "fd")))), max_fds)
        except (OSError, StopIteration):
            pass
        return families

    def _usage(self, stat: list[bytes]) -> list[Family]:
        """Memory, start time and CPU from the fields of ``/proc/self/stat`` after the
        command name."""
        ticks = self._ticks
        return [
            GaugeFamily(
                "process_virtual_memory_bytes", "Virtual memory size in bytes.", float(stat[20])
            ),
            GaugeFamily(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                float(stat[21]) * self._pagesize,
            ),
            GaugeFamily(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                float(stat[19]) / ticks + self._btime,
            ),
            CounterFamily(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                float(stat[11]) / ticks + float(stat[12]) / ticks,
            ),
        ]

    @staticmethod
    def _fds(open_fds: float, max_fds: float) -> list[Family]:
        return [
            GaugeFamily("process_open_fds", "Number of open file descriptors.", open_fds),
            GaugeFamily("process_max_fds", "Maximum number of open file descriptors.", max_fds),
        ]
