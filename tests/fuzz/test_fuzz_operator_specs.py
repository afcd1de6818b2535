"""Random Tunnel and ExternalPeer specs: problems naming fields, or valid sidecar documents.

Whatever the spec (well-formed, half-formed or junk), validation returns problems whose
paths start at `spec`, and a spec without problems renders, for every selected pod, a
document the sidecar's own loader accepts. Nothing raises.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.external_status import external_peer_status
from kipsec_operator.reconcile.render import plan
from kipsec_operator.reconcile.validation import validate_tunnel
from kipsec_sidecar.config import load_config_data
from support.operator_objects import (
    MASTER_KEY_HEX,
    config_map,
    namespace,
    pod,
    psk_secret,
    secret,
    tunnel,
)
from support.pki import CertificateAuthority

OBJECTS = [
    namespace("default", team="a"),
    psk_secret(),
    secret("master", {"key": MASTER_KEY_HEX}),
    secret("tls", {"tls.crt": "C", "tls.key": "K", "ca.crt": "A"}, type_="kubernetes.io/tls"),
    pod("a1", "10.0.0.1", labels={"app": "a"}),
    pod("a2", "10.0.0.2", labels={"app": "a"}),
    pod("b1", "10.0.0.3", labels={"app": "b"}),
    pod("v6", "fd00::1", labels={"app": "b"}),
    pod("nip", None, labels={"app": "a"}),
]

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12), st.just([]), st.just({})
)
labels = st.dictionaries(
    st.sampled_from(["app", "team", "x"]), st.sampled_from(["a", "b", ""]), max_size=2
)
expression = st.fixed_dictionaries(
    {
        "key": st.sampled_from(["app", "x"]),
        "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Maybe"]),
    },
    optional={"values": st.lists(st.sampled_from(["a", "b"]), max_size=2)},
)
label_selector = st.fixed_dictionaries(
    {}, optional={"matchLabels": labels, "matchExpressions": st.lists(expression, max_size=2)}
)
side = st.fixed_dictionaries(
    {},
    optional={"podSelector": label_selector, "namespaceSelector": st.one_of(label_selector, junk)},
)
secret_ref = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["mesh-psk", "tls", "master", "nope", ""]),
        "key": st.sampled_from(["psk", "k"]),
    }
)
authentication = st.one_of(
    st.fixed_dictionaries({"psk": st.fixed_dictionaries({"secretRef": secret_ref})}),
    st.fixed_dictionaries(
        {
            "certificate": st.fixed_dictionaries(
                {},
                optional={
                    "secretRef": st.fixed_dictionaries(
                        {"name": st.sampled_from(["tls", "mesh-psk"])}
                    ),
                    "tunnelCertificateRef": st.fixed_dictionaries({"name": st.just("ids")}),
                    "caSecretRef": st.fixed_dictionaries({"name": st.sampled_from(["tls", "x"])}),
                },
            )
        }
    ),
    junk,
)
proposal = st.sampled_from(
    [
        "aes256gcm16-prfsha256-x25519",
        "aes128-sha256-ecp256",
        "3des-md5-modp1024",
        "sha256",
        "aes256gcm16",
        "chacha20poly1305",
        "null",
        "",
        "aes256-sha384-x448",
        "sha512-x25519",
    ]
)
duration = st.sampled_from(["1h", "4h", "9m", "30s", "0s", "1d", "abc", "2m"])
traffic_rule = st.fixed_dictionaries(
    {},
    optional={
        "protocol": st.sampled_from(["TCP", "UDP", "SCTP", "ICMP", "Any", "GRE"]),
        "port": st.integers(0, 70000),
        "endPort": st.integers(0, 70000),
    },
)
wild_spec = st.fixed_dictionaries(
    {"selector": st.one_of(st.fixed_dictionaries({"from": side}, optional={"to": side}), junk)},
    optional={
        "mode": st.sampled_from(["transport", "tunnel", "bus"]),
        "protocol": st.sampled_from(["esp", "ah", "gre"]),
        "keying": st.sampled_from(["ike", "manual"]),
        "authentication": authentication,
        "manual": st.one_of(
            st.fixed_dictionaries(
                {"secretRef": st.fixed_dictionaries({"name": st.sampled_from(["master", "nope"])})},
                optional={
                    "encryption": st.sampled_from(["aes256gcm16", "aes128", "des"]),
                    "integrity": st.sampled_from(["sha256", "md5"]),
                },
            ),
            junk,
        ),
        "proposals": st.fixed_dictionaries(
            {},
            optional={k: st.lists(proposal, max_size=3) for k in ("ike", "esp", "ah")},
        ),
        "lifetimes": st.fixed_dictionaries(
            {}, optional={"ikeSa": duration, "childSa": duration, "rekeyMargin": duration}
        ),
        "liveness": st.fixed_dictionaries({}, optional={"interval": duration, "timeout": duration}),
        "traffic": st.one_of(st.lists(traffic_rule, max_size=3), junk),
        "encapsulation": st.sampled_from(["udp", "raw", "tcp"]),
        "extra": junk,
    },
)


good_side = st.fixed_dictionaries(
    {
        "podSelector": st.fixed_dictionaries(
            {"matchLabels": st.sampled_from([{"app": "a"}, {"app": "b"}, {}])}
        )
    },
    optional={"namespaceSelector": st.sampled_from([{}, {"matchLabels": {"team": "a"}}])},
)
good_spec = st.fixed_dictionaries(
    {
        "selector": st.fixed_dictionaries({"from": good_side}, optional={"to": good_side}),
        "authentication": st.sampled_from(
            [
                {"psk": {"secretRef": {"name": "mesh-psk", "key": "psk"}}},
                {"certificate": {"secretRef": {"name": "tls"}}},
            ]
        ),
    },
    optional={
        "mode": st.sampled_from(["transport", "tunnel"]),
        "protocol": st.just("esp"),
        "proposals": st.fixed_dictionaries(
            {},
            optional={
                "esp": st.lists(
                    st.sampled_from(["aes256gcm16", "aes128-sha256"]), min_size=1, max_size=2
                )
            },
        ),
        "lifetimes": st.fixed_dictionaries(
            {}, optional={"childSa": st.sampled_from(["1h", "30m"])}
        ),
        "traffic": st.lists(traffic_rule, max_size=2),
    },
)
manual_spec = st.fixed_dictionaries(
    {
        "selector": st.fixed_dictionaries({"from": good_side}, optional={"to": good_side}),
        "keying": st.just("manual"),
        "manual": st.fixed_dictionaries(
            {"secretRef": st.just({"name": "master"})},
            optional={"encryption": st.sampled_from(["aes256gcm16", "aes128", "chacha20poly1305"])},
        ),
    },
    optional={"mode": st.sampled_from(["transport", "tunnel"]), "encapsulation": st.just("raw")},
)
spec_strategy = st.one_of(good_spec, manual_spec, wild_spec)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=spec_strategy)
def test_a_random_spec_gives_field_problems_or_valid_documents(spec: dict[str, Any]) -> None:
    objects = [*OBJECTS, tunnel("t", spec)]
    cluster = Cluster.of(objects)
    problems = validate_tunnel(cluster.tunnels[("default", "t")], cluster)
    for problem in problems:
        assert problem.path.startswith("spec"), problem
        assert problem.message
    rendering = plan(cluster)
    if problems:
        assert rendering.pods == {}
        return
    for config in rendering.pods.values():
        load_config_data(config.document)


# --- ExternalPeer specs --------------------------------------------------------------------

SITE_CA = CertificateAuthority.root("site CA").cert.public_bytes(Encoding.PEM).decode()
EXTERNAL_OBJECTS = [
    *OBJECTS,
    psk_secret("site-psk"),
    secret("site-ca", {"ca.crt": SITE_CA, "junk": "-----BEGIN CERTIFICATE-----"}),
    config_map("public-cas", {"ca.crt": SITE_CA, "junk": "not pem"}),
    config_map("binary-cas", {"ca.crt": "%%%"}, field="binaryData"),
    {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "TunnelCertificate",
        "metadata": {"name": "ids", "namespace": "default"},
        "spec": {"selector": {"podSelector": {"matchLabels": {"app": "a"}}}},
    },
    tunnel(
        "mesh",
        {
            "selector": {"from": {"podSelector": {"matchLabels": {"app": "b"}}}},
            "authentication": {"psk": {"secretRef": {"name": "mesh-psk", "key": "psk"}}},
        },
    ),
]
ca_ref = st.fixed_dictionaries(
    {"name": st.sampled_from(["site-ca", "public-cas", "binary-cas", "nope", "mesh-psk"])},
    optional={"key": st.sampled_from(["ca.crt", "junk", "psk", "missing"])},
)
external_authentication = st.one_of(
    st.fixed_dictionaries({"psk": st.fixed_dictionaries({"secretRef": secret_ref})}),
    st.fixed_dictionaries(
        {
            "certificate": st.fixed_dictionaries(
                {
                    "tunnelCertificateRef": st.fixed_dictionaries(
                        {"name": st.sampled_from(["ids", "x"])}
                    )
                },
                optional={"caSecretRef": ca_ref, "caConfigMapRef": ca_ref},
            )
        }
    ),
    junk,
)
identity_value = st.sampled_from(
    ["vpn.example.com", "-bad", "192.0.2.10", "fd00::1", "CN=vpn,O=x", "not a dn", "a@b", ""]
)
external_spec_strategy = st.fixed_dictionaries(
    {
        "address": st.one_of(
            st.sampled_from(["192.0.2.10", "fd00::10", "vpn.example.com", "nowhere.invalid"]),
            junk,
        ),
        "authentication": external_authentication,
    },
    optional={
        "subnets": st.one_of(
            st.lists(
                st.sampled_from(
                    [
                        "172.20.0.0/24",
                        "172.20.0.1/24",
                        "10.0.0.0/24",
                        "10.0.0.0/8",
                        "0.0.0.0/0",
                        "fd01::/64",
                        "nope",
                        "1.2.3.4/33",
                    ]
                ),
                max_size=3,
            ),
            junk,
        ),
        "identity": st.one_of(
            st.dictionaries(
                st.sampled_from(["fqdn", "address", "email", "dn", "keyId"]),
                identity_value,
                max_size=2,
            ),
            junk,
        ),
        "proposals": st.fixed_dictionaries(
            {}, optional={k: st.lists(proposal, max_size=2) for k in ("ike", "esp")}
        ),
        "lifetimes": st.fixed_dictionaries(
            {}, optional={"ikeSa": duration, "childSa": duration, "rekeyMargin": duration}
        ),
        "liveness": st.fixed_dictionaries({}, optional={"interval": duration, "timeout": duration}),
        "ikeVersion": st.sampled_from([1, 2, 3, "2"]),
        "initiator": st.sampled_from(["pods", "external", "either", "nobody"]),
        "start": st.sampled_from(["none", "onDemand", "onStart", "auto", "later"]),
        "closeAction": st.sampled_from(["none", "onDemand", "restart", "panic"]),
        "dpdAction": st.sampled_from(["none", "onDemand", "restart"]),
        "extra": junk,
    },
)


good_external_spec = st.fixed_dictionaries(
    {
        "address": st.sampled_from(["192.0.2.10", "vpn.example.com"]),
        "authentication": st.sampled_from(
            [
                {"psk": {"secretRef": {"name": "site-psk", "key": "psk"}}},
                {
                    "certificate": {
                        "caSecretRef": {"name": "site-ca"},
                        "tunnelCertificateRef": {"name": "ids"},
                    }
                },
                {
                    "certificate": {
                        "caConfigMapRef": {"name": "public-cas"},
                        "tunnelCertificateRef": {"name": "ids"},
                    }
                },
            ]
        ),
    },
    optional={
        "subnets": st.lists(
            st.sampled_from(["172.20.0.0/24", "172.21.0.0/16", "192.168.7.0/24"]),
            max_size=2,
            unique=True,
        ),
        "identity": st.sampled_from(
            [{"fqdn": "vpn.example.com"}, {"dn": "CN=vpn,O=site"}, {"address": "192.0.2.10"}]
        ),
        "initiator": st.sampled_from(["pods", "external", "either"]),
        "closeAction": st.sampled_from(["none", "onDemand", "restart"]),
        "dpdAction": st.sampled_from(["none", "onDemand", "restart"]),
        "lifetimes": st.fixed_dictionaries(
            {}, optional={"childSa": st.sampled_from(["1h", "30m"])}
        ),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.one_of(good_external_spec, external_spec_strategy),
    mode=st.sampled_from(["transport", "tunnel"]),
)
def test_a_random_external_peer_gives_a_condition_naming_fields_or_valid_documents(
    spec: dict[str, Any], mode: str
) -> None:
    """Never a crash: the peer's status has a Ready condition whatever the spec; an
    invalid peer names fields under `spec` and is configured in no pod (the Tunnel
    naming it says so), while the mesh Tunnel's pods keep their documents; a valid one
    renders documents the sidecar's loader accepts."""
    peer = {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "ExternalPeer",
        "metadata": {"name": "site", "namespace": "default", "generation": 1},
        "spec": spec,
    }
    to_site = tunnel(
        "to-site",
        {
            "selector": {
                "from": {"podSelector": {"matchLabels": {"app": "a"}}},
                "to": {"externalPeers": ["site"]},
            },
            "mode": mode,
        },
    )
    cluster = Cluster.of(
        [*EXTERNAL_OBJECTS, peer, to_site], resolved={"vpn.example.com": ("192.0.2.77",)}
    )
    checked = cluster.external_checks[("default", "site")]
    rendering = plan(cluster)
    status = external_peer_status(peer, rendering, cluster, {}, now="T")
    ready = status["conditions"][0]
    assert ready["type"] == "Ready" and ready["reason"]
    for config in rendering.pods.values():
        load_config_data(config.document)
    assert ("default", "b1") in rendering.pods
    event("invalid peer" if isinstance(checked, list) else "valid peer")
    if isinstance(checked, list):
        assert checked and all(p.path.startswith("spec") and p.message for p in checked)
        assert ready["reason"] == "InvalidSpec" and ready["message"]
        assert ("default", "to-site") in rendering.problems
        assert not rendering.external
    else:
        assert ready["reason"] != "InvalidSpec"
