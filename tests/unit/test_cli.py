"""``kipsec-sidecar`` control commands against a control server run by the test."""

from __future__ import annotations

import gc
import importlib
import json
import os
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from kipsec_sidecar import cli
from kipsec_sidecar.cli import main, render_sas
from kipsec_sidecar.control import SOCKET_ENV
from support.controller_double import (
    NOW,
    ControllerDouble,
    example_snapshot,
    not_ready_snapshot,
    running,
    short_dir,
)
from support.pki import CertificateAuthority

EXPECTED_TABLE = """\
kipsec 0.1.0, userspace datapath (kernel has no ESP SA type), up 1h02m05s, ready
b: established, 10.20.0.2, keying ike, start onStart
  IKE SA: established, initiator, up 2m05s
    local  'a.pods.example' @ 10.20.0.1:4500
    remote 'b.pods.example' @ 10.20.0.2:4500
    SPIs   1122334455667788_i* 99aabbccddeeff00_r
    proposal aes-gcm-16-256/prf-hmac-sha2-256/ecp256
  child pods: installed, ESP tunnel in UDP, aes-gcm-16-256, ESN
    in   c0ffee01, 1500 bytes, 10 packets
    out  0badf00d, 3000 bytes, 20 packets
    installed 10s ago, rekeying in 50m00s, expires in 59m50s
    local  10.1.0.5/32
    remote 10.2.0.7/32
c: established, 10.20.0.3, keying manual, start onStart
  child pods: installed, AH transport, hmac-sha2-256-128
    in   7e57ab1e,  7 bytes, 1 packets
    out  5ca1ab1e, 11 bytes, 2 packets
    installed 1m00s ago
    local  10.20.0.1/32
    remote 10.20.0.3/32
  child pods: rekeyed, AH transport, hmac-sha2-256-128
    in   00001111, 100 bytes, 3 packets
    out  00002222, 200 bytes, 4 packets
    installed 1h06m40s ago
    local  10.20.0.1/32
    remote 10.20.0.3/32
"""


def as_wire(data: object) -> object:
    return json.loads(json.dumps(data))


def test_the_sas_table_lists_ike_and_child_sas_per_peer() -> None:
    assert render_sas(as_wire(example_snapshot().to_json()), now=NOW) == EXPECTED_TABLE  # type: ignore[arg-type]


def test_the_sas_table_shows_peers_without_sas_and_their_last_error() -> None:
    snapshot = not_ready_snapshot()
    d = replace(snapshot.peers[1], last_error="AUTHENTICATION_FAILED")
    text = render_sas(as_wire(replace(snapshot, peers=(d,)).to_json()), now=NOW)  # type: ignore[arg-type]
    assert text.splitlines()[1:] == [
        "d: connecting, 10.20.0.4, keying ike, start onDemand",
        "  last error: AUTHENTICATION_FAILED",
        "  no IKE SA",
        "  no child SA",
    ]
    assert text.splitlines()[0].endswith(", not ready")


def test_sas_prints_the_table_from_the_running_sidecar(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "wall_clock", lambda: NOW)
    with running() as (server, _):
        assert main(["--socket", server.path, "sas"]) == 0
    assert capsys.readouterr().out == EXPECTED_TABLE


def test_sas_json_prints_the_snapshot_json_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    with running() as (server, _):
        assert main(["--socket", server.path, "sas", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == as_wire(example_snapshot().to_json())


def test_sas_json_for_one_peer(capsys: pytest.CaptureFixture[str]) -> None:
    with running() as (server, _):
        assert main(["--socket", server.path, "sas", "--json", "--peer", "b"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [peer["name"] for peer in data["peers"]] == ["b"]
    assert data["peers"][0]["children"][0]["spi_in"] == "c0ffee01"


@pytest.mark.parametrize(
    ("argv", "action", "printed"),
    [
        (["initiate", "b"], ("initiate", "b"), "initiated peer 'b'"),
        (["rekey", "b", "--child"], ("rekey", "b", "child"), "rekey of the child SA(s)"),
        (["rekey", "c", "--ike"], ("rekey", "c", "ike"), "rekey of the ike SA(s) of peer 'c'"),
        (["terminate", "c"], ("terminate", "c"), "terminated peer 'c': it stays down"),
        (["initiate", "b", "--wait"], ("initiate", "b", "30.0"), "established peer 'b'"),
        (["rekey", "b", "--ike", "--wait", "5"], ("rekey", "b", "ike", "5.0"), "ike SA(s) of"),
        (["terminate", "c", "--wait", "2.5"], ("terminate", "c", "2.5"), "terminated peer"),
        (["reload"], ("reload",), "+ d (added)\n- c (removed)"),
    ],
)
def test_actions_reach_the_controller_and_exit_0(
    argv: list[str], action: tuple[str, ...], printed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with running() as (server, controller):
        assert main(["--socket", server.path, *argv]) == 0
    assert controller.actions == [action]
    assert printed in capsys.readouterr().out


def test_a_control_error_exits_1_with_the_message_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with running() as (server, controller):
        assert main(["--socket", server.path, "initiate", "nobody"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "kipsec-sidecar initiate: unknown peer 'nobody'\n"
    assert captured.out == ""
    assert controller.actions == []


def test_the_sas_table_marks_a_terminated_peer() -> None:
    snapshot = example_snapshot()
    held = replace(snapshot, peers=(replace(snapshot.peers[0], terminated=True),))
    table = render_sas(held.to_json(), now=NOW)
    assert "terminated (down until initiate or reload)" in table.splitlines()[1]
    assert "terminated" not in render_sas(snapshot.to_json(), now=NOW)


def test_the_sas_table_names_an_ikev1_sa() -> None:
    snapshot = example_snapshot()
    peer = snapshot.peers[0]
    assert peer.ike_sa is not None
    v1 = replace(peer, ike_sa=replace(peer.ike_sa, ike_version=1))
    table = render_sas(replace(snapshot, peers=(v1,)).to_json(), now=NOW)
    assert table.splitlines()[2] == "  IKE SA: established, initiator, IKEv1, up 2m05s"
    assert "IKEv1" not in render_sas(snapshot.to_json(), now=NOW)
    pke = replace(peer, ike_sa=replace(peer.ike_sa, ike_version=1, auth_method=4))
    table = render_sas(replace(snapshot, peers=(pke,)).to_json(), now=NOW)
    assert table.splitlines()[2].startswith(
        "  IKE SA: established, initiator, IKEv1 method 4 (rsa-encryption), up"
    )


def test_a_failed_wait_exits_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    failing = ControllerDouble(wait_failure="initiate of peer 'b' failed: NO_PROPOSAL_CHOSEN")
    with running(failing) as (server, _):
        assert main(["--socket", server.path, "initiate", "b", "--wait", "5"]) == 1
    captured = capsys.readouterr()
    assert "NO_PROPOSAL_CHOSEN" in captured.err and captured.out == ""


def test_a_wait_that_runs_out_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    with running(ControllerDouble(wait_failure="timeout")) as (server, _):
        assert main(["--socket", server.path, "terminate", "b", "--wait", "0.2"]) == 4
    assert "timeout: no outcome within 0.2 s" in capsys.readouterr().err


def test_without_wait_a_failing_outcome_is_not_waited_for() -> None:
    with running(ControllerDouble(wait_failure="timeout")) as (server, controller):
        assert main(["--socket", server.path, "initiate", "b"]) == 0
    assert controller.actions == [("initiate", "b")]


@pytest.mark.parametrize(
    "argv",
    [
        ["initiate", "b", "--wait", "0"],
        ["initiate", "b", "--wait", "soon"],
        ["rekey", "b"],
        ["rekey", "b", "--child", "--ike"],
        ["initiate"],
        ["bogus"],
        [],
        ["sas", "-x"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: kipsec-sidecar" in capsys.readouterr().err


def test_no_sidecar_exits_3_naming_the_path(capsys: pytest.CaptureFixture[str]) -> None:
    with short_dir() as directory:
        path = str(directory / "control.sock")
        assert main(["--socket", path, "sas"]) == 3
    err = capsys.readouterr().err
    assert path in err
    assert "the sidecar is not running" in err


def test_the_socket_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with running() as (server, controller):
        monkeypatch.setenv(SOCKET_ENV, server.path)
        assert main(["terminate", "b"]) == 0
    assert controller.actions == [("terminate", "b")]


def test_the_default_socket_is_the_documented_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    assert cli.build_parser().parse_args(["reload"]).socket == "/run/kipsec/control.sock"


def test_run_passes_the_config_and_log_overrides_to_the_daemon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, dict[str, object]]] = []

    def run(config_path: str, **options: object) -> int:
        calls.append((config_path, options))
        return 0

    fake = types.ModuleType("kipsec_sidecar.daemon")
    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kipsec_sidecar.daemon", fake)
    assert main(["run", "--config", "/etc/kipsec/sidecar.yaml", "--log-format", "json"]) == 0
    assert main(["run", "--config", "a.yaml", "--log-level", "debug"]) == 0
    assert calls == [
        ("/etc/kipsec/sidecar.yaml", {"log_format": "json"}),
        ("a.yaml", {"log_level": "debug"}),
    ]


def test_run_imports_the_daemon_without_collecting_and_runs_it_with_the_collector_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[bool, int]] = []
    imported: list[bool] = []

    def run(config_path: str, **options: object) -> int:
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        return 0

    def import_module(name: str) -> types.ModuleType:
        imported.append(gc.isenabled())
        if "broken" in name:
            raise ImportError("broken")
        fake = types.ModuleType(name)
        fake.run = run  # type: ignore[attr-defined]
        return fake

    monkeypatch.setattr(importlib, "import_module", import_module)
    monkeypatch.setattr(cli, "__package__", "kipsec_sidecar")
    try:
        assert main(["run", "--config", "a.yaml"]) == 0
        # the import ran with the collector off; the daemon runs with it on, what the
        # import made frozen out of its sight
        assert imported == [False]
        assert seen[0][0] and seen[0][1] > 0
        monkeypatch.setattr(cli, "__package__", "kipsec_sidecar.broken")
        assert main(["run", "--config", "a.yaml"]) == cli.EXIT_CONTROL_ERROR
        assert gc.isenabled()  # also when the daemon cannot be imported
    finally:
        gc.unfreeze()
        gc.enable()


def test_run_requires_a_config() -> None:
    assert main(["run"]) == 2


def test_the_demo_still_runs() -> None:
    assert main(["demo"]) == 0


@pytest.mark.parametrize(
    "argv", [["--version"], ["sas"], ["run", "--config", "{tmp}/invalid.yaml"]]
)
def test_no_command_prints_cryptographys_dsa_deprecation_warning(
    argv: list[str], tmp_path: Path
) -> None:
    """DSA stays for the classic DSS method; its deprecation warning is for us, not users."""
    sidecar = Path(sys.executable).with_name("kipsec-sidecar")
    environment = {**os.environ, "PYTHONWARNINGS": "default"}
    environment[SOCKET_ENV] = str(tmp_path / "none.sock")
    (tmp_path / "invalid.yaml").write_text("apiVersion: kipsec.io/v0\n")
    result = subprocess.run(
        [str(sidecar), *(arg.format(tmp=tmp_path) for arg in argv)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert "DSA is deprecated" not in result.stderr
    assert "Warning" not in result.stderr, result.stderr


def test_a_dsa_certificate_and_key_load_without_the_deprecation_warning(tmp_path: Path) -> None:
    """The run path that touches DSA (key file, certificate chain, DSS signature) is quiet."""
    root = CertificateAuthority.root("dsa root", key_kind="dsa")
    leaf = root.issue("pod-a", dns=["pod-a.test"], key_kind="dsa")
    (tmp_path / "tls.crt").write_bytes(leaf.cert.public_bytes(Encoding.PEM))
    (tmp_path / "ca.crt").write_bytes(root.cert.public_bytes(Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(
        leaf.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    document = {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {
            "addresses": ["10.0.0.1"],
            "identity": {"fqdn": "pod-a.test"},
            "auth": {
                "certificate": {"certFile": "tls.crt", "keyFile": "tls.key", "caFiles": ["ca.crt"]}
            },
        },
        "peers": [{"name": "b", "address": "10.0.0.2"}],
    }
    (tmp_path / "config.json").write_text(json.dumps(document))
    code = f"""
from kipsec_sidecar.config import load_config, to_core
from kipsec_sidecar.core.ike import auth, certs
(plan,) = to_core(load_config({str(tmp_path / "config.json")!r}))
ours = certs.load_certificate(plan.ike.auth.certificates[0])
anchors = [certs.load_certificate(der) for der in plan.ike.auth.trust_anchors]
certs.validate_chain(ours, [], anchors, ours.not_valid_before_utc)
data = auth.Signer(plan.ike.auth.private_key).sign(b"octets", 3)  # DSS, SHA-1
auth.verify_signature(3, ours.public_key(), b"octets", data)
"""
    environment = {**os.environ, "PYTHONWARNINGS": "default"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=environment
    )
    assert result.returncode == 0, result.stderr
    assert "DSA is deprecated" not in result.stderr, result.stderr
