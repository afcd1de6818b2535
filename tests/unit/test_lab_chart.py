"""SA counts over time: parsed from the lab's samples or Prometheus, drawn as a PNG."""

from __future__ import annotations

from pathlib import Path

import pytest

from kipsec_lab.chart import (
    MAX_OFFSET,
    draw,
    figure,
    from_prometheus,
    from_samples,
    offsets,
    sample_line,
)
from kipsec_lab.prometheus import config, targets
from kipsec_lab.state import PodState


def test_samples_become_one_series_per_pod_in_time_order() -> None:
    lines = [
        sample_line(2.0, "demo/a", 1, 2),
        sample_line(1.0, "demo/a", 1, 0),
        sample_line(1.0, "demo/b", 1, 2),
    ]
    assert from_samples(lines) == {"demo/a": [(1.0, 0.0), (2.0, 2.0)], "demo/b": [(1.0, 2.0)]}
    assert from_samples(lines, key="ike")["demo/a"] == [(1.0, 1.0), (2.0, 1.0)]


def test_a_cut_sample_line_is_skipped() -> None:
    assert from_samples([sample_line(1.0, "p", 0, 1), '{"t": 2, "po']) == {"p": [(1.0, 1.0)]}


def test_a_prometheus_range_answer_is_labelled_by_pod() -> None:
    answer = {
        "status": "success",
        "data": {
            "result": [
                {"metric": {"namespace": "demo", "pod": "a"}, "values": [[1, "2"], [6, "0"]]}
            ]
        },
    }
    assert from_prometheus(answer) == {"demo/a": [(1.0, 2.0), (6.0, 0.0)]}


def test_a_prometheus_error_is_raised_with_its_message() -> None:
    with pytest.raises(ValueError, match="bad_data"):
        from_prometheus({"status": "error", "error": "bad_data"})


def test_the_picture_is_a_png(tmp_path: Path) -> None:
    draw({"demo/a": [(1.0e9, 0.0), (1.0e9 + 5, 2.0)]}, tmp_path / "sas.png")
    assert (tmp_path / "sas.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_nothing_to_draw_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no samples"):
        draw({}, tmp_path / "sas.png")


def test_prometheus_scrapes_only_running_sidecars_labelled_by_pod() -> None:
    pods = [
        PodState("demo", "a", "lab-node-0", "10.213.1.2", "ns-a", sidecar="running"),
        PodState("demo", "b", "lab-node-1", "10.213.2.2", "ns-b", sidecar="waiting"),
    ]
    assert targets(pods) == [
        {
            "targets": ["10.213.1.2:9585"],
            "labels": {"namespace": "demo", "pod": "a", "node": "lab-node-0"},
        }
    ]


def test_prometheus_scrapes_the_operator_over_https_with_the_lab_ca() -> None:
    scrape = config("127.0.0.1:8443", Path("/lab/ca.crt"), Path("/lab/t.json"))["scrape_configs"]
    assert isinstance(scrape, list)
    operator, sidecars = scrape
    assert operator["scheme"] == "https"
    assert operator["tls_config"] == {"ca_file": "/lab/ca.crt"}
    assert sidecars["file_sd_configs"][0]["files"] == ["/lab/t.json"]


def test_pods_with_equal_counts_are_drawn_as_distinct_visible_lines() -> None:
    """Three pods of a mesh hold the same number of SAs: they were drawn on top of each
    other, one line for three pods. Each now has its own shifted line, marker and style,
    and the value is still the nearest integer."""
    from matplotlib import pyplot

    same = [(1.0e9, 0.0), (1.0e9 + 5, 2.0), (1.0e9 + 10, 2.0)]
    series = {"demo/a": list(same), "demo/b": list(same), "demo/c": list(same)}
    drawn = figure(series)
    try:
        lines = drawn.axes[0].get_lines()
        assert [line.get_label() for line in lines] == ["demo/a", "demo/b", "demo/c"]
        ys = [tuple(line.get_ydata()) for line in lines]
        assert len(set(ys)) == 3  # no two lines coincide
        for y in ys:
            assert [round(v) for v in y] == [0, 2, 2]
            assert all(abs(v - round(v)) <= MAX_OFFSET + 1e-9 for v in y)
        styles = {(line.get_color(), line.get_marker(), line.get_linestyle()) for line in lines}
        assert len(styles) == 3
        assert len({line.get_marker() for line in lines}) == 3
    finally:
        pyplot.close(drawn)


def test_offsets_are_distinct_centred_and_bounded() -> None:
    for count in range(1, 40):
        shifts = offsets(count)
        assert len(set(shifts)) == count
        assert all(abs(s) <= MAX_OFFSET + 1e-9 for s in shifts)
        assert abs(sum(shifts)) < 1e-9
