"""Random Tunnel specs: a list of problems naming fields, or valid sidecar documents.

Whatever the spec (well-formed, half-formed or junk), validation returns problems whose
paths start at `spec`, and a spec without problems renders, for every selected pod, a
document the sidecar's own loader accepts. Nothing raises.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.render import plan
from kipsec_operator.reconcile.validation import validate_tunnel
from kipsec_sidecar.config import load_config_data
from support.operator_objects import MASTER_KEY_HEX, namespace, pod, psk_secret, secret, tunnel

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
