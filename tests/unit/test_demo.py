"""The README's main job really negotiates and really round-trips a packet."""

from __future__ import annotations

from kipsec_sidecar.cli import main as cli_main
from kipsec_sidecar.demo import main


def test_demo_negotiates_psk_and_certificates_and_carries_a_packet() -> None:
    lines: list[str] = []
    assert main(lines.append) == 0
    text = "\n".join(lines)
    assert text.count("identical, plaintext absent from the wire") == 2
    assert text.count("CHILD SA 'pods' ESP tunnel") == 4
    assert "alice.demo <-> bob.demo" in text


def test_cli_runs_the_demo(capsys: object) -> None:
    assert cli_main(["demo"]) == 0
