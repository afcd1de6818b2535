"""SHA-1 for a legacy IKEv1 peer through the operator (issue 11): a Tunnel or an
ExternalPeer with `ikeVersion: 1` naming `sha1` / `prfsha1` in `spec.proposals.ike` is
rendered, and the sidecar's own loader takes the document and warns; the resource's
`status.warnings` names the field. Everywhere the sidecar refuses SHA-1 (IKEv2, ESP/AH
integrity, an AEAD phase 1 proposal) the operator still refuses it, naming the field."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.external import external_peer_name
from kipsec_operator.reconcile.external_status import external_peer_status
from kipsec_operator.reconcile.render import CONFIG_KEY, Rendering, plan
from kipsec_operator.reconcile.status import tunnel_status
from kipsec_sidecar.config import load_config_string, to_core
from kipsec_sidecar.config.proposals import LEGACY_SHA1_DEPRECATION, legacy_sha1_warning
from kipsec_sidecar.config.to_core import PeerPlan
from support.operator_objects import (
    external_peer,
    external_spec,
    namespace,
    pod,
    psk_mesh_spec,
    psk_secret,
    tunnel,
)

SHA1 = "aes128-sha1-modp2048"
PRF_SHA1 = "aes256-sha256-prfsha1-modp2048"
SHA256 = "aes256-sha256-modp2048"
OBJECTS = [
    namespace("default"),
    psk_secret(),
    psk_secret("site-psk"),
    pod("a", "10.0.0.1", labels={"app": "legacy"}),
    pod("b", "10.0.0.2", labels={"app": "legacy"}),
    pod("c1", "10.0.1.1", labels={"app": "client"}),
]


def _tunnel_spec(ike_version: int, ike: list[str], **extra: Any) -> dict[str, Any]:
    return {
        **psk_mesh_spec("legacy"),
        "ikeVersion": ike_version,
        "proposals": {"ike": ike, **extra},
    }


def _plan(*objects: dict[str, Any]) -> tuple[Cluster, Rendering]:
    cluster = Cluster.of([*OBJECTS, *objects])
    return cluster, plan(cluster)


def _loaded_peer(rendering: Rendering, pod_name: str) -> tuple[Any, Any, PeerPlan]:
    """The pod's document as the sidecar loads it, its one peer, and the sidecar's plan
    for that peer (the files the document names read from the pod's Secret)."""
    files = rendering.pods[("default", pod_name)].files
    loaded = load_config_string(base64.b64decode(files[CONFIG_KEY]).decode())
    (peer,) = loaded.peers
    (peer_plan,) = to_core(
        loaded, read_file=lambda path: base64.b64decode(files[os.path.basename(path)])
    )
    return loaded, peer, peer_plan


def test_a_v1_tunnel_naming_sha1_is_rendered_and_warns_naming_the_field() -> None:
    cluster, rendering = _plan(tunnel("legacy", _tunnel_spec(1, [SHA256, SHA1, PRF_SHA1])))
    assert rendering.problems == {}
    loaded, peer, peer_plan = _loaded_peer(rendering, "a")
    assert peer.ike_version == 1
    assert loaded.proposals_for(peer).ike == [SHA256, SHA1, PRF_SHA1]
    # The sidecar admits it as its legacy opt-in, and warns itself too.
    assert peer_plan.ike is not None
    assert [p.legacy_sha1 for p in peer_plan.ike.proposals] == [False, True, True]
    assert peer_plan.warnings == (legacy_sha1_warning(peer.name),)
    status = tunnel_status(cluster.tunnels[("default", "legacy")], rendering, cluster, {}, now="T")
    ike_version, sha1 = status["warnings"]
    assert ike_version.startswith("spec.ikeVersion: ")
    assert sha1.startswith("spec.proposals.ike[1], spec.proposals.ike[2]: ")
    assert "SHA-1" in sha1 and sha1.endswith(LEGACY_SHA1_DEPRECATION)


def test_a_v1_tunnel_without_sha1_warns_only_of_ikev1() -> None:
    cluster, rendering = _plan(tunnel("legacy", _tunnel_spec(1, [SHA256])))
    status = tunnel_status(cluster.tunnels[("default", "legacy")], rendering, cluster, {}, now="T")
    assert [w.split(":")[0] for w in status["warnings"]] == ["spec.ikeVersion"]


@pytest.mark.parametrize(
    ("ike_version", "ike", "extra", "field", "words"),
    [
        # IKEv2: the refusal it always had, and where SHA-1 would pass.
        (
            2,
            [SHA256, SHA1],
            {},
            "spec.proposals.ike[1]",
            "sha1 is not implemented by kipsec; use one of sha256",
        ),
        (2, [PRF_SHA1], {}, "spec.proposals.ike[0]", "PRF-HMAC-SHA1 is refused"),
        # ESP integrity: never (the datapaths have no HMAC-SHA1).
        (1, [SHA1], {"esp": ["aes256-sha1"]}, "spec.proposals.esp[0]", "sha1 is not implemented"),
        # An AEAD phase 1 proposal stays an IKEv1 refusal, SHA-1 or not.
        (
            1,
            ["aes256gcm16-prfsha1-ecp256"],
            {},
            "spec.proposals.ike[0]",
            "IKEv1 has no AEAD cipher",
        ),
        # SHA-1 is no way around the other refusals of the registry.
        (1, ["aes128-md5-modp2048"], {}, "spec.proposals.ike[0]", "HMAC-MD5-96 is refused"),
        (1, ["aes128-sha1-modp1024"], {}, "spec.proposals.ike[0]", "MODP-1024"),
    ],
)
def test_sha1_stays_refused_where_the_sidecar_refuses_it(
    ike_version: int, ike: list[str], extra: dict[str, Any], field: str, words: str
) -> None:
    _, rendering = _plan(
        tunnel("legacy", _tunnel_spec(ike_version, ike, **extra)),
        tunnel("mesh", psk_mesh_spec("client")),
    )
    (problem,) = rendering.problems[("default", "legacy")]
    assert problem.path == field and words in problem.message
    if ike_version == 2 and field.startswith("spec.proposals.ike"):
        assert "admitted only with spec.ikeVersion: 1" in problem.message
    assert ("default", "a") not in rendering.pods  # nothing half-configured
    assert ("default", "mesh") not in rendering.problems


def test_a_v1_external_peer_naming_sha1_is_rendered_and_warns_naming_the_field() -> None:
    peer = external_peer(ikeVersion=1, proposals={"ike": [SHA1]})
    cluster, rendering = _plan(peer, tunnel("t", external_spec()))
    assert rendering.problems == {}
    loaded, entry, peer_plan = _loaded_peer(rendering, "c1")
    assert entry.name == external_peer_name(("default", "site"))
    assert loaded.proposals_for(entry).ike == [SHA1]
    assert peer_plan.warnings == (legacy_sha1_warning(entry.name),)
    status = external_peer_status(
        cluster.external_peers[("default", "site")], rendering, cluster, {}, now="T"
    )
    assert [w.split(":")[0] for w in status["warnings"]] == [
        "spec.ikeVersion",
        "spec.proposals.ike[0]",
    ]
    tunnel_warnings = tunnel_status(
        cluster.tunnels[("default", "t")], rendering, cluster, {}, now="T"
    )
    assert tunnel_warnings["warnings"] == []  # the ExternalPeer warns, not each Tunnel


def test_a_v2_external_peer_naming_sha1_is_refused_as_before() -> None:
    cluster = Cluster.of([*OBJECTS, external_peer(proposals={"ike": [SHA1]})])
    (problem,) = cluster.external_checks[("default", "site")]
    assert problem.path == "spec.proposals.ike[0]"
    assert "sha1 is not implemented" in problem.message
