"""The metrics kipsec really exports, read from the code's own registries.

The dashboard and the alert rules refer to metrics only through :class:`Catalog`, which
is built from the sidecar's collector (:class:`kipsec_sidecar.metrics.SnapshotCollector`)
and the operator's :class:`kipsec_operator.metrics.OperatorMetrics`. A metric renamed
or a label dropped in the code makes :meth:`Catalog.series` raise, so the generators and
their staleness tests fail instead of shipping a panel that shows nothing.

Besides the labels the code sets, a series carries the labels its scrape adds
(:data:`TARGET_LABELS`): the chart's PodMonitor gives sidecar series ``namespace`` and
``pod`` (Prometheus Operator) and ``node`` (its relabelling); the operator's
ServiceMonitor keeps the operator's own labels (``honorLabels``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Literal, cast

from prometheus_client.metrics import MetricWrapperBase

from kipsec_operator.metrics import OperatorMetrics
from kipsec_sidecar.daemon.enrollment import Enrollment, EnrollmentCollector
from kipsec_sidecar.metrics import SnapshotCollector
from kipsec_sidecar.state import Controller, SidecarSnapshot

Source = Literal["sidecar", "operator"]

TARGET_LABELS: Mapping[Source, tuple[str, ...]] = {
    "sidecar": ("namespace", "pod", "node"),
    "operator": ("namespace", "pod"),
}
"""Labels the chart's scrape configuration adds to every series of a source."""

_ALWAYS = ("job", "instance")
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
}


class UnknownMetric(LookupError):
    """A query names a metric or label that the code does not export."""


@dataclass(frozen=True)
class Family:
    """One metric family: its registered name, type, own labels and where it comes from."""

    name: str
    type: str
    labels: tuple[str, ...]
    source: Source

    @property
    def samples(self) -> tuple[str, ...]:
        """The sample names Prometheus stores (a counter ``x`` is scraped as ``x_total``)."""
        return tuple(self.name + suffix for suffix in _SUFFIXES.get(self.type, ("",)))

    def labels_of(self, sample: str) -> tuple[str, ...]:
        """Every label a series of ``sample`` may carry."""
        extra = ("le",) if sample.endswith("_bucket") else ()
        return (*self.labels, *extra, *TARGET_LABELS[self.source], *_ALWAYS)


@dataclass(frozen=True)
class Regex:
    """A regular-expression matcher value (``label=~"..."``)."""

    pattern: str


class Catalog:
    """Lookup of exported samples; builds PromQL selectors that are checked against it."""

    def __init__(self, families: Iterable[Family]) -> None:
        self.families = {f.name: f for f in families}
        self._by_sample = {s: f for f in self.families.values() for s in f.samples}

    def family(self, sample: str) -> Family:
        """The family a sample name belongs to; UnknownMetric when nothing exports it."""
        try:
            return self._by_sample[sample]
        except KeyError:
            raise UnknownMetric(f"{sample}: no kipsec metric exports this sample") from None

    def check_labels(self, sample: str, labels: Iterable[str]) -> None:
        """Raise UnknownMetric naming the first label ``sample``'s series never carry."""
        allowed = self.family(sample).labels_of(sample)
        for label in labels:
            if label not in allowed:
                raise UnknownMetric(f"{sample}: no label {label!r} (it has {', '.join(allowed)})")

    def series(self, sample: str, **matchers: str | Regex) -> str:
        """A selector such as ``kipsec_handshakes_total{result="failure"}``, checked."""
        self.check_labels(sample, matchers)
        if not matchers:
            return sample
        parts = []
        for label, value in matchers.items():
            if isinstance(value, Regex):
                parts.append(f'{label}=~"{value.pattern}"')
            else:
                parts.append(f'{label}="{value}"')
        return f"{sample}{{{', '.join(parts)}}}"

    def by(self, sample: str, *labels: str) -> str:
        """``by (a, b)`` for an aggregation of ``sample``, checked."""
        self.check_labels(sample, labels)
        return f"by ({', '.join(labels)})"

    def samples(self) -> Iterator[str]:
        yield from self._by_sample


class _NoController:
    """Stands for a sidecar when only the families' descriptions are wanted."""

    def snapshot(self) -> SidecarSnapshot:
        raise RuntimeError("describing metrics takes no snapshot")


def sidecar_families() -> list[Family]:
    """The sidecar's families, from its collectors' descriptions (the SA snapshot, and
    the certificate enrollment of pods whose identity the operator issues)."""
    collectors = (
        SnapshotCollector(cast(Controller, _NoController())),
        EnrollmentCollector(cast(Enrollment, None)),
    )
    return [
        Family(m.name, m.type, m.labelnames, "sidecar")
        for collector in collectors
        for m in collector.describe()
    ]


def operator_families() -> list[Family]:
    """The operator's families, from the metric objects of :class:`OperatorMetrics`."""
    metrics = OperatorMetrics()
    found = []
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = str(value._name)
            found.append(Family(name, str(value._type), tuple(value._labelnames), "operator"))
    return found


@cache
def catalog() -> Catalog:
    """The catalog of everything the sidecar and the operator export."""
    return Catalog([*sidecar_families(), *operator_families()])
