"""Tunnel status from what the sidecars report: conditions, counts, last error."""

from __future__ import annotations

from typing import Any

import pytest

from kipsec_operator.reconcile.cluster import Cluster, ObjectKey
from kipsec_operator.reconcile.render import plan
from kipsec_operator.reconcile.status import (
    MIN_REDACTED_LENGTH,
    REDACTED,
    SidecarReport,
    redact,
    tunnel_status,
)
from support.operator_objects import PSK, namespace, pod, psk_mesh_spec, psk_secret, tunnel

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"
MESH = [pod(f"m{i}", f"10.0.0.{i}", labels={"app": "mesh"}) for i in (1, 2, 3)]


def _status(
    objects: list[dict[str, Any]],
    reports: dict[str, dict[str, Any]] | None = None,
    *,
    now: str = NOW,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    cluster = Cluster.of([namespace("default"), psk_secret(), *objects])
    parsed: dict[ObjectKey, SidecarReport] = {
        ("default", name): SidecarReport.from_dict(r) for name, r in (reports or {}).items()
    }
    return tunnel_status(
        cluster.tunnels[("default", "t")],
        plan(cluster),
        cluster,
        parsed,
        now=now,
        previous=previous,
    )


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


ALL_UP: dict[str, dict[str, Any]] = {
    "m1": {"established": ["default/m2", "default/m3"]},
    "m2": {"established": ["default/m1", "default/m3"]},
    "m3": {"established": ["default/m1", "default/m2"]},
}


def test_every_link_established_is_ready() -> None:
    status = _status([tunnel("t", psk_mesh_spec()), *MESH], ALL_UP)
    assert _conditions(status) == {
        "Ready": ("True", "AllSasEstablished"),
        "Degraded": ("False", "AsExpected"),
    }
    assert (status["pods"], status["peersExpected"], status["childSasEstablished"]) == (3, 6, 6)
    assert status["observedGeneration"] == 1


def test_without_reports_nothing_is_established_and_it_is_not_ready() -> None:
    status = _status([tunnel("t", psk_mesh_spec()), *MESH])
    assert _conditions(status)["Ready"] == ("False", "SasPending")
    assert status["childSasEstablished"] == 0


def test_reports_count_only_the_tunnels_own_peers() -> None:
    reports = {"m1": {"established": ["default/m2", "default/elsewhere"]}}
    assert _status([tunnel("t", psk_mesh_spec()), *MESH], reports)["childSasEstablished"] == 1


def test_a_sidecar_error_degrades_with_the_pod_named() -> None:
    reports = {**ALL_UP, "m2": {"established": [], "lastError": "NO_PROPOSAL_CHOSEN from 10.0.0.1"}}
    status = _status([tunnel("t", psk_mesh_spec()), *MESH], reports)
    assert _conditions(status)["Degraded"] == ("True", "SidecarError")
    assert status["lastError"] == "default/m2: NO_PROPOSAL_CHOSEN from 10.0.0.1"


def test_a_secret_in_a_sidecar_error_never_reaches_the_status() -> None:
    reports = {"m1": {"lastError": f"bad key {PSK} here"}}
    status = _status([tunnel("t", psk_mesh_spec()), *MESH], reports)
    assert PSK not in str(status)
    assert status["lastError"] == f"default/m1: bad key {REDACTED} here"


def test_an_invalid_spec_names_the_field_in_both_conditions() -> None:
    status = _status([tunnel("t", psk_mesh_spec(secret_name="gone")), *MESH])
    assert _conditions(status) == {
        "Ready": ("False", "InvalidSpec"),
        "Degraded": ("True", "InvalidSpec"),
    }
    message = status["conditions"][0]["message"]
    assert message.startswith('spec.authentication.psk.secretRef.name: Secret "gone" not found')


@pytest.mark.parametrize(
    ("pods", "reason"),
    [
        ([], "NoPodsSelected"),
        ([pod("m1", None, labels={"app": "mesh"})], "PodsPending"),
        ([MESH[0]], "NoPeers"),
    ],
)
def test_not_ready_reasons(pods: list[dict[str, Any]], reason: str) -> None:
    assert _conditions(_status([tunnel("t", psk_mesh_spec()), *pods]))["Ready"] == ("False", reason)


def test_a_pending_pod_keeps_an_otherwise_established_tunnel_not_ready() -> None:
    waiting = pod("m9", None, labels={"app": "mesh"})
    status = _status([tunnel("t", psk_mesh_spec()), *MESH, waiting], ALL_UP)
    assert _conditions(status)["Ready"] == ("False", "PodsPending")
    assert status["pods"] == 3


def test_a_pair_claimed_by_two_tunnels_degrades_the_later_one() -> None:
    objects = [tunnel("a", psk_mesh_spec()), tunnel("t", psk_mesh_spec()), *MESH]
    status = _status(objects)
    assert _conditions(status)["Degraded"] == ("True", "PeerConflict")
    assert status["conditions"][1]["message"].startswith("spec.selector: ")


def test_transition_time_moves_only_when_the_status_changes() -> None:
    objects = [tunnel("t", psk_mesh_spec()), *MESH]
    first = _status(objects, now=NOW)
    same = _status(objects, now=LATER, previous=first)
    assert same["conditions"][0]["lastTransitionTime"] == NOW
    changed = _status(objects, ALL_UP, now=LATER, previous=first)
    assert changed["conditions"][0]["lastTransitionTime"] == LATER


def _cross_namespace(consent: str | None) -> list[dict[str, Any]]:
    """A mesh in `default` that also selects the mesh pods of namespace `pay`."""
    spec = psk_mesh_spec()
    spec["selector"]["from"]["namespaceSelector"] = {}
    return [
        namespace("pay", allow_tunnels_from=consent),
        tunnel("t", spec),
        *MESH,
        pod("p1", "10.0.1.1", namespace="pay", labels={"app": "mesh"}),
    ]


def test_a_namespace_that_does_not_consent_degrades_the_tunnel_naming_it() -> None:
    status = _status(_cross_namespace(None))
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "NamespaceNotConsenting")
    assert degraded["message"] == (
        'spec.selector.from.namespaceSelector: namespace "pay" does not allow Tunnels'
        ' from "default" (annotation kipsec.io/allow-tunnels-from)'
    )
    assert status["pods"] == 3  # the refusing namespace's pod is not counted


def test_ready_names_missing_consent_when_that_is_why_there_is_no_peer() -> None:
    """Ready once said `NoPeers ... (one pod, or no common IP version)` here, while
    the only reason was the namespace's refusal."""
    spec = psk_mesh_spec()
    spec["selector"] = {
        "from": {"podSelector": {"matchLabels": {"app": "client"}}, "namespaceSelector": {}},
        "to": {"podSelector": {"matchLabels": {"app": "server"}}},
    }
    objects = [
        namespace("pay"),
        tunnel("t", spec),
        pod("s1", "10.0.0.1", labels={"app": "server"}),
        pod("c1", "10.0.1.1", namespace="pay", labels={"app": "client"}),
    ]
    status = _status(objects)
    ready, degraded = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "NamespaceNotConsenting")
    assert ready["message"] == degraded["message"]
    assert ready["message"].startswith('spec.selector.from.namespaceSelector: namespace "pay"')


def test_no_peers_says_exactly_why() -> None:
    status = _status([tunnel("t", psk_mesh_spec()), MESH[0]])
    ready = status["conditions"][0]
    assert (ready["reason"], ready["message"]) == (
        "NoPeers",
        "spec.selector.from: only 1 pod selected; a mesh links two or more",
    )
    six = pod("m6", None, labels={"app": "mesh"}, ips=None)
    six["status"] = {"phase": "Running", "podIP": "fd00::6", "podIPs": [{"ip": "fd00::6"}]}
    ready = _status([tunnel("t", psk_mesh_spec()), MESH[0], six])["conditions"][0]
    assert ready["reason"] == "NoPeers"
    assert ready["message"].startswith("the selected pods have no IP version in common")


def test_ready_names_the_conflict_when_another_tunnel_holds_every_pair() -> None:
    status = _status([tunnel("a", psk_mesh_spec()), tunnel("t", psk_mesh_spec()), *MESH])
    ready, degraded = status["conditions"]
    assert (ready["reason"], degraded["reason"]) == ("PeerConflict", "PeerConflict")
    assert ready["message"].startswith("spec.selector: ")


def test_a_consenting_namespace_leaves_the_tunnel_as_expected() -> None:
    status = _status(_cross_namespace("default"))
    assert _conditions(status)["Degraded"] == ("False", "AsExpected")
    assert status["pods"] == 4


# --- redaction: a last line of defence that does not garble ----------------------------------


@pytest.mark.parametrize("value", ["short", "Secret", "psk", "bytes", "shorter", "rb", "s", "8"])
def test_a_short_psk_is_reported_readably_without_its_value(value: str) -> None:
    """With PSK `short` the message once read `Secret "rb-[redacted]" key "psk" is
    [redacted]er than 8 bytes`: the operator never puts the value in a message, and
    redaction does not cut words and names apart."""
    spec = psk_mesh_spec(secret_name="rb-short")
    cluster = Cluster.of(
        [namespace("default"), psk_secret("rb-short", value=value), tunnel("t", spec), *MESH]
    )
    status = tunnel_status(cluster.tunnels[("default", "t")], plan(cluster), cluster, {}, now=NOW)
    message = status["conditions"][0]["message"]
    assert message == (
        'spec.authentication.psk.secretRef.key: the PSK in Secret "rb-short" key "psk" is '
        "shorter than 8 bytes (after decoding a 0x/0s form); use 32 random bytes (the value "
        "is not shown)"
    )
    assert REDACTED not in str(status)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0x01020304", "is shorter than 8 bytes (after decoding a 0x/0s form)"),
        ("0xnot-hex-at-all", "starts with 0x but the rest is not hexadecimal"),
        ("0s!!!!", "starts with 0s but the rest is not base64"),
        ("0x0102030405060708", None),
        ("0sAAECAwQFBgcICQ==", None),
    ],
)
def test_the_operator_reads_a_psk_as_the_sidecar_does(value: str, problem: str | None) -> None:
    """A Secret holding `0x…`/`0s…` is judged by the sidecar's own rule (decoded length,
    valid encoding), so a key the pods would refuse is a condition, not a pod log line."""
    spec = psk_mesh_spec(secret_name="hexpsk")
    cluster = Cluster.of(
        [namespace("default"), psk_secret("hexpsk", value=value), tunnel("t", spec), *MESH]
    )
    status = tunnel_status(cluster.tunnels[("default", "t")], plan(cluster), cluster, {}, now=NOW)
    messages = " ".join(c.get("message", "") for c in status["conditions"])
    if problem is None:
        assert "spec.authentication.psk" not in messages
    else:
        assert problem in messages
        assert value not in messages


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"bad key {PSK} here", f"bad key {REDACTED} here"),
        (f"psk={PSK}.", f"psk={REDACTED}."),
        (f'"{PSK}"', f'"{REDACTED}"'),
        (f"{PSK}", REDACTED),
        (f"Secret rb-{PSK} is fine", f"Secret rb-{PSK} is fine"),
        (f"{PSK}x and x{PSK}", f"{PSK}x and x{PSK}"),
    ],
)
def test_redaction_replaces_whole_tokens_only(text: str, expected: str) -> None:
    assert redact(text, [PSK]) == expected


def test_values_shorter_than_the_floor_are_not_redacted() -> None:
    assert redact("short of shorter", ["short"]) == "short of shorter"
    assert redact("x 12345678 y", ["12345678"]) == f"x {REDACTED} y"
    assert MIN_REDACTED_LENGTH == 8


def test_a_psk_with_spaces_and_regex_characters_is_redacted() -> None:
    value = "a.b* (c)+ [d]"
    assert redact(f"error: {value}", [value]) == f"error: {REDACTED}"
