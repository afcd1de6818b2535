"""``kipsec lab status --png FILE``: SA counts over time, as a picture.

Two sources, one shape (:data:`Series`: a label → time-ordered ``(unix time, value)``
points): the lab's Prometheus (``query_range`` of installed child SAs per pod) when the
lab runs one, else the samples the supervisor keeps (:func:`sample_lines`, every
:data:`SAMPLE_INTERVAL` seconds, in ``samples.jsonl``). Parsing is pure; :func:`figure`
plots with matplotlib's Agg backend (no display needed) so that every pod is visible
even when several hold the same count, and :func:`draw` writes it as a PNG.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Series = dict[str, list[tuple[float, float]]]
SAMPLE_INTERVAL = 5.0
MAX_SAMPLES = 20_000
"""Lines kept in ``samples.jsonl`` (about a day of a 3-pod lab)."""
CHILD_SAS_QUERY = 'sum by (namespace, pod) (kipsec_child_sas{state="installed"})'


def sample_line(when: float, pod: str, ike: int, child: int) -> str:
    return json.dumps({"t": round(when, 3), "pod": pod, "ike": ike, "child": child})


def from_samples(lines: Iterable[str], key: str = "child") -> Series:
    """The series of ``key`` (``child`` or ``ike``) per pod from sample lines (a line
    that is not a sample is skipped: the file may be cut mid-line by a crash)."""
    series: Series = {}
    for line in lines:
        try:
            sample = json.loads(line)
            point = (float(sample["t"]), float(sample[key]))
            pod = str(sample["pod"])
        except (ValueError, KeyError, TypeError):
            continue
        series.setdefault(pod, []).append(point)
    return {pod: sorted(points) for pod, points in series.items()}


def from_prometheus(answer: Mapping[str, Any]) -> Series:
    """The series of a Prometheus ``query_range`` answer, labelled ``namespace/pod``."""
    if answer.get("status") != "success":
        raise ValueError(f"Prometheus answered {answer.get('status')}: {answer.get('error')}")
    series: Series = {}
    for result in (answer.get("data") or {}).get("result") or []:
        metric = result.get("metric") or {}
        label = f"{metric.get('namespace', '')}/{metric.get('pod', '')}".strip("/") or "all"
        series[label] = [(float(t), float(v)) for t, v in result.get("values") or []]
    return series


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
MAX_OFFSET = 0.2
"""Largest vertical shift of a pod's line (SA counts are integers, so the value is the
nearest integer to any point drawn)."""
MAX_STEP = 0.1
"""Shift between neighbouring lines: few pods stay close to the true value."""


def offsets(count: int) -> list[float]:
    """A distinct vertical shift per line, centred on 0 and within ±:data:`MAX_OFFSET`.

    Pods with equal SA counts (the normal case: every pod of a mesh holds the same
    number) would otherwise be drawn on top of each other, three pods showing as one
    line; shifted, with their own marker and line style, every pod stays visible.
    """
    if count <= 1:
        return [0.0] * count
    step = min(MAX_STEP, 2 * MAX_OFFSET / (count - 1))
    first = -step * (count - 1) / 2
    return [first + i * step for i in range(count)]


def figure(series: Series, title: str = "Installed child SAs per pod") -> Any:
    """The matplotlib Figure (Agg backend) of ``series``: one step line per pod, each
    shifted by :func:`offsets` and given its own marker and line style. Raises
    ValueError when there is nothing to draw."""
    if not any(series.values()):
        raise ValueError("no samples yet: the lab records one every few seconds")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import MaxNLocator

    result, axes = pyplot.subplots(figsize=(9, 4.5), dpi=100)
    labels = sorted(series)
    for index, (label, shift) in enumerate(zip(labels, offsets(len(labels)), strict=True)):
        points = series[label]
        # Matplotlib dates: days since 1970 (what its date axis formats).
        days = [t / 86400.0 for t, _ in points]
        axes.step(
            days,
            [v + shift for _, v in points],
            where="post",
            label=label,
            marker=MARKERS[index % len(MARKERS)],
            markersize=4,
            linestyle=LINESTYLES[(index // len(MARKERS)) % len(LINESTYLES)],
            color=f"C{index % 10}",
        )
    axes.xaxis_date()
    top = max((v for points in series.values() for _, v in points), default=0.0)
    axes.set_ylim(bottom=-0.5, top=top + 1)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title)
    axes.set_ylabel(f"child SAs (lines shifted up to ±{MAX_OFFSET:g})")
    axes.set_xlabel("time")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    result.autofmt_xdate()
    result.tight_layout()
    return result


def draw(series: Series, path: Path, title: str = "Installed child SAs per pod") -> None:
    """Write the PNG of :func:`figure` (raises ValueError when there is nothing to draw)."""
    from matplotlib import pyplot

    drawn = figure(series, title)
    drawn.savefig(path, format="png")
    pyplot.close(drawn)


__all__ = [
    "CHILD_SAS_QUERY",
    "MAX_OFFSET",
    "MAX_SAMPLES",
    "MAX_STEP",
    "SAMPLE_INTERVAL",
    "Series",
    "draw",
    "figure",
    "from_prometheus",
    "from_samples",
    "offsets",
    "sample_line",
]
