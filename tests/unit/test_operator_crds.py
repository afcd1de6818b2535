"""The CRDs generated from the models: committed, structural, documented, with sound CEL.

The CEL rules are compiled and evaluated with cel-python (the API server's CEL is Go;
the rules use only what both implement: has(), size(), in, ternaries, duration()).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from kipsec_operator.certificates.terms import lifetime_problem
from kipsec_operator.crds.reference import CONDITIONS, crd_reference, update_document
from kipsec_operator.crds.render import REGENERATE, crds, to_yaml
from kipsec_sidecar.handshake_failures import REASONS as FAILURE_REASONS

ROOT = Path(__file__).resolve().parents[2]
CHART_CRDS = ROOT / "charts" / "kipsec" / "crds"
EXAMPLES = ROOT / "examples" / "operator"

CRDS = crds()
SCHEMAS = {
    manifest["spec"]["names"]["kind"]: manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for manifest in CRDS.values()
}
_FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "const", "propertyNames"}


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")


@pytest.mark.parametrize("name", sorted(CRDS))
def test_committed_crds_match_the_models(name: str) -> None:
    committed = CHART_CRDS / name
    assert committed.exists(), f"{committed} is missing: run `{REGENERATE}`"
    assert committed.read_text() == to_yaml(CRDS[name]), (
        f"{committed} is stale: run `{REGENERATE}` and commit the result"
    )


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_schema_is_structural(kind: str) -> None:
    for path, node in _nodes(SCHEMAS[kind]):
        assert "type" in node, f"{kind}{path} has no type"
        assert not _FORBIDDEN_KEYS & node.keys(), f"{kind}{path}: {_FORBIDDEN_KEYS & node.keys()}"
        assert node.get("additionalProperties") is not False, f"{kind}{path}"
        if node["type"] == "object" and path not in ("", ".metadata"):
            assert "properties" in node or isinstance(node.get("additionalProperties"), dict), (
                f"{kind}{path}: an object with neither properties nor additionalProperties"
            )


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_property_has_a_description(kind: str) -> None:
    missing = [
        path
        for path, node in _nodes(SCHEMAS[kind])
        if not path.endswith(("[]", ".*")) and not node.get("description")
    ]
    assert missing == [], f"{kind}: no description at {missing}"


def _schema_at(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in json_path.strip(".").split("."):
        if node is None:
            return None
        name, _, filt = part.partition("[")
        node = (node.get("properties") or {}).get(name)
        if node is not None and filt:
            node = node.get("items")
    return node


@pytest.mark.parametrize("name", sorted(CRDS))
def test_printer_columns_point_at_existing_fields(name: str) -> None:
    version = CRDS[name]["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path == ".metadata.creationTimestamp":
            continue
        if "[?(" in path:  # .status.conditions[?(@.type=="Ready")].status
            head, _, tail = path.partition("[?(")
            items = _schema_at(schema, head)
            assert items is not None and items["type"] == "array", path
            field = tail.split(")]", 1)[1].strip(".")
            assert field in items["items"]["properties"], path
            continue
        assert _schema_at(schema, path) is not None, f"{name}: {path} is not in the schema"


def test_tunnel_crd_has_short_name_categories_and_status_subresource() -> None:
    spec = CRDS["tunnels.kipsec.io.yaml"]["spec"]
    assert spec["names"]["shortNames"] == ["tun"]
    assert spec["names"]["categories"] == ["kipsec"]
    assert spec["versions"][0]["subresources"] == {"status": {}}
    columns = [c["name"] for c in spec["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Mode", "Protocol", "IKE", "Pods", "SAs", "Ready", "Age"]


def test_tunnel_certificate_crd_columns_and_short_name() -> None:
    spec = CRDS["tunnelcertificates.kipsec.io.yaml"]["spec"]
    assert spec["names"]["shortNames"] == ["tcert"]
    columns = [c["name"] for c in spec["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Issuer", "NotAfter", "Ready", "Age"]


def test_defaults_are_the_safe_ones() -> None:
    spec = SCHEMAS["Tunnel"]["properties"]["spec"]["properties"]
    proposals = spec["proposals"]["properties"]
    assert proposals["ike"]["default"] == ["aes256gcm16-prfsha256-x25519"]
    assert proposals["esp"]["default"] == ["aes256gcm16"]
    assert spec["mode"]["default"] == "transport"
    assert spec["mode"]["enum"] == ["transport", "tunnel"]


# --- CEL ------------------------------------------------------------------------------

_ENV = celpy.Environment()


def _rules() -> Iterator[tuple[str, str, dict[str, str]]]:
    for kind, schema in SCHEMAS.items():
        for path, node in _nodes(schema):
            for entry in node.get("x-kubernetes-validations") or []:
                yield kind, path, entry


ALL_RULES = list(_rules())


def test_there_are_cel_rules() -> None:
    assert len(ALL_RULES) >= 10


@pytest.mark.parametrize(
    ("kind", "path", "entry"), ALL_RULES, ids=[f"{k}{p}:{e['rule'][:30]}" for k, p, e in ALL_RULES]
)
def test_cel_rule_compiles_and_its_message_names_a_field(
    kind: str, path: str, entry: dict[str, str]
) -> None:
    _ENV.compile(entry["rule"])
    head = entry["message"].split(":", 1)[0]
    assert head and " " not in head, f"message does not start with a field: {entry['message']}"


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it (defaults of absent fields)."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, child in schema["properties"].items():
            if name not in out and "default" in child:
                out[name] = child["default"]
            if name in out:
                out[name] = apply_defaults(child, out[name])
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def cel_failures(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Messages of the CEL rules `value` breaks (value already defaulted)."""
    failures = []
    for entry in schema.get("x-kubernetes-validations") or []:
        program = _ENV.program(_ENV.compile(entry["rule"]))
        try:
            result = program.evaluate({"self": json_to_cel(value)})
        except CELEvalError:  # the API server refuses the object on an evaluation error
            result = celpy.celtypes.BoolType(False)
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            failures.append(entry["message"])
    if isinstance(value, dict):
        for name, child in (schema.get("properties") or {}).items():
            if name in value:
                failures += cel_failures(child, value[name], f"{path}.{name}")
    if isinstance(value, list) and "items" in schema:
        for item in value:
            failures += cel_failures(schema["items"], item, path)
    return failures


def _tunnel_spec(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"from": {"podSelector": {"matchLabels": {"app": "a"}}}},
        "authentication": {"psk": {"secretRef": {"name": "s", "key": "psk"}}},
    }
    spec.update(extra)
    return spec


def _spec_failures(spec: dict[str, Any]) -> list[str]:
    schema = SCHEMAS["Tunnel"]["properties"]["spec"]
    return cel_failures(schema, apply_defaults(schema, spec))


def test_cel_accepts_a_defaulted_minimal_tunnel() -> None:
    assert _spec_failures(_tunnel_spec()) == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"protocol": "ah", "encapsulation": "udp"}, "spec.encapsulation"),
        ({"keying": "manual"}, "spec.manual"),
        ({"authentication": None}, "spec.authentication"),
        ({"lifetimes": {"childSa": "5m", "rekeyMargin": "9m"}}, "spec.lifetimes.rekeyMargin"),
        ({"traffic": [{"protocol": "ICMP", "port": 8}]}, "port"),
        ({"traffic": [{"protocol": "TCP", "port": 90, "endPort": 80}]}, "endPort"),
        (
            {
                "authentication": {
                    "psk": {"secretRef": {"name": "s", "key": "k"}},
                    "certificate": {"secretRef": {"name": "t"}},
                }
            },
            "spec.authentication",
        ),
    ],
)
def test_cel_refuses_with_a_message_naming_the_field(extra: dict[str, Any], field: str) -> None:
    spec = {k: v for k, v in _tunnel_spec(**extra).items() if v is not None}
    failures = _spec_failures(spec)
    assert failures, f"no CEL rule refused {extra}"
    assert failures[0].split(":", 1)[0] == field


def test_cel_refuses_rsa_key_of_1024_bits() -> None:
    schema = SCHEMAS["TunnelCertificate"]["properties"]["spec"]
    spec = {"selector": {}, "privateKey": {"algorithm": "RSA", "size": 1024}}
    failures = cel_failures(schema, apply_defaults(schema, spec))
    assert [f.split(":", 1)[0] for f in failures] == ["spec.privateKey.size"]


def test_cel_refuses_renew_before_longer_than_duration() -> None:
    schema = SCHEMAS["TunnelCertificate"]["properties"]["spec"]
    spec = {"selector": {}, "duration": "1h", "renewBefore": "2h"}
    failures = cel_failures(schema, apply_defaults(schema, spec))
    assert [f.split(":", 1)[0] for f in failures] == ["spec.renewBefore"]


def _certificate_failures(duration: str, renew_before: str) -> list[str]:
    schema = SCHEMAS["TunnelCertificate"]["properties"]["spec"]
    spec = {"selector": {}, "duration": duration, "renewBefore": renew_before}
    return cel_failures(schema, apply_defaults(schema, spec))


@pytest.mark.parametrize(
    ("duration", "renew_before", "fields"),
    [
        ("1s", "0s", ["spec.duration", "spec.renewBefore"]),
        ("59m", "5m", ["spec.duration"]),
        ("721h", "8h", ["spec.duration"]),
        # Go's duration() overflows past 2562047h: an evaluation error, which the API
        # server (like cel-python here) treats as the rule failing.
        ("876000000h", "8h", ["spec.duration", "spec.renewBefore"]),
        ("24h", "4m", ["spec.renewBefore"]),
        ("1h", "51m", ["spec.renewBefore"]),
    ],
)
def test_cel_bounds_the_certificate_lifetimes(
    duration: str, renew_before: str, fields: list[str]
) -> None:
    failures = _certificate_failures(duration, renew_before)
    assert sorted({f.split(":", 1)[0] for f in failures}) == fields


@pytest.mark.parametrize("duration", ["30m", "1h", "90m", "24h", "720h", "721h"])
@pytest.mark.parametrize("renew_before", ["0s", "4m59s", "5m", "50m", "51m", "8h", "710h"])
def test_cel_and_the_operator_agree_on_the_certificate_lifetimes(
    duration: str, renew_before: str
) -> None:
    """The operator's check (for API servers with an older CRD) accepts exactly what CEL does."""
    cel_accepts = _certificate_failures(duration, renew_before) == []
    assert cel_accepts == (lifetime_problem(duration, renew_before) is None)


# --- the examples ---------------------------------------------------------------------------


def _example_resources() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("apiVersion") == "kipsec.io/v1alpha1":
                found.append((f"{path.name}:{document['metadata']['name']}", document))
    return found


EXAMPLE_RESOURCES = _example_resources()


def test_every_example_file_has_a_kipsec_resource() -> None:
    files = {name.split(":")[0] for name, _ in EXAMPLE_RESOURCES}
    assert files == {p.name for p in EXAMPLES.glob("*.yaml")}


@pytest.mark.parametrize(
    "resource", [r for _, r in EXAMPLE_RESOURCES], ids=[n for n, _ in EXAMPLE_RESOURCES]
)
def test_example_validates_against_the_generated_schema(resource: dict[str, Any]) -> None:
    schema = SCHEMAS[resource["kind"]]
    jsonschema.validate(resource, schema)
    defaulted = apply_defaults(schema, resource)
    jsonschema.validate(defaulted, schema)
    assert cel_failures(schema, defaulted) == []


def test_the_field_tables_of_the_docs_are_current() -> None:
    docs = (ROOT / "docs" / "operator.md").read_text()
    assert update_document(docs) == docs, f"docs/operator.md is stale: run `{REGENERATE}`"


def test_the_crd_reference_page_is_current() -> None:
    page = ROOT / "docs" / "crd-reference.md"
    assert page.exists(), f"{page} is missing: run `{REGENERATE}`"
    assert page.read_text() == crd_reference(), f"{page} is stale: run `{REGENERATE}`"


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_the_crd_reference_names_every_field_and_rule_message(kind: str) -> None:
    page = crd_reference()
    for path, node in _nodes(SCHEMAS[kind]["properties"]["spec"], "spec"):
        if path != "spec" and not path.endswith(("[]", ".*")):
            assert f"| `{path}` |" in page, f"{kind}: {path} is not in the reference"
        for entry in node.get("x-kubernetes-validations") or []:
            assert entry["message"] in page, f"{kind}{path}: rule message missing"


def _calls_of(module: Path, function: str) -> list[ast.Call]:
    tree = ast.parse(module.read_text())
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == function
    ]


def test_the_documented_tunnel_conditions_are_the_ones_the_status_code_writes() -> None:
    status_py = ROOT / "operator" / "kipsec_operator" / "reconcile" / "status.py"
    written = set()
    for call in _calls_of(status_py, "condition"):
        kind, status, reason = (a.value for a in call.args[:3] if isinstance(a, ast.Constant))
        written.add((kind, str(status), reason))
    documented = {(c.type, c.status, c.reason) for c in CONDITIONS["Tunnel"]}
    assert documented == written


def test_the_documented_tunnel_certificate_reasons_are_the_ones_the_status_code_writes() -> None:
    readiness_py = ROOT / "operator" / "kipsec_operator" / "certificates" / "readiness.py"
    written = set()
    for call in _calls_of(readiness_py, "Readiness"):
        ready, reason = call.args[:2]
        assert isinstance(ready, ast.Constant) and isinstance(reason, ast.Constant)
        written.add((str(ready.value), reason.value))
    documented = {(c.status, c.reason) for c in CONDITIONS["TunnelCertificate"]}
    assert documented == written


def test_the_documented_pod_error_reasons_are_the_ones_sidecars_report() -> None:
    """`status.podErrors[].reason` is a sidecar's failure reason as it reports it (lower
    case, from a closed set): the schema's description names exactly those."""
    reason = SCHEMAS["ExternalPeer"]["properties"]["status"]["properties"]["podErrors"]["items"]
    description = reason["properties"]["reason"]["description"]
    assert set(re.findall(r"\b[a-z]+(?:_[a-z]+)*\b", description)) >= set(FAILURE_REASONS)
    assert not re.search(r"\b[A-Z]+_[A-Z_]+\b", description)


RULES_WITH_FIELD_PATH = [r for r in ALL_RULES if "fieldPath" in r[2]]


@pytest.mark.parametrize(
    ("kind", "path", "entry"),
    RULES_WITH_FIELD_PATH,
    ids=[f"{k}{p}:{e['fieldPath']}" for k, p, e in RULES_WITH_FIELD_PATH],
)
def test_cel_field_path_names_a_property_of_its_node(
    kind: str, path: str, entry: dict[str, str]
) -> None:
    node = dict(_nodes(SCHEMAS[kind]))[path]
    assert entry["fieldPath"].lstrip(".") in node["properties"]


@pytest.mark.parametrize("version", ["1.29", "1.31", "1.33"])
@pytest.mark.parametrize("name", sorted(CRDS))
def test_crd_is_a_valid_apiextensions_object(name: str, version: str) -> None:
    kubernetes_validate.validate(CRDS[name], version, strict=True)


def _external_failures(**extra: Any) -> list[str]:
    spec: dict[str, Any] = {
        "address": "192.0.2.10",
        "subnets": ["172.20.0.0/24"],
        "authentication": {"psk": {"secretRef": {"name": "s", "key": "psk"}}},
    }
    spec.update(extra)
    schema = SCHEMAS["ExternalPeer"]["properties"]["spec"]
    return cel_failures(schema, apply_defaults(schema, spec))


def test_cel_accepts_a_defaulted_minimal_external_peer() -> None:
    assert _external_failures() == []
    assert _external_failures(initiator="external", start="none") == []
    assert _external_failures(ikeVersion=1) == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"initiator": "external", "start": "onStart"}, "spec.start"),
        (
            {
                "authentication": {
                    "psk": {"secretRef": {"name": "s", "key": "k"}},
                    "certificate": {
                        "caSecretRef": {"name": "ca"},
                        "tunnelCertificateRef": {"name": "t"},
                    },
                }
            },
            "spec.authentication",
        ),
        ({"identity": {"fqdn": "a.example", "address": "192.0.2.1"}}, "spec.identity"),
        ({"identity": {}}, "spec.identity"),
    ],
)
def test_cel_refuses_external_peers_with_a_message_naming_the_field(
    extra: dict[str, Any], field: str
) -> None:
    failures = _external_failures(**extra)
    assert failures, f"no CEL rule refused {extra}"
    assert failures[0].split(":", 1)[0] == field


def test_cel_takes_a_tunnel_to_external_peers_without_authentication() -> None:
    spec = _tunnel_spec(selector={"from": {}, "to": {"externalPeers": ["site"]}})
    del spec["authentication"]
    assert _spec_failures(spec) == []
    mesh = _tunnel_spec()
    del mesh["authentication"]
    assert [f.split(":")[0] for f in _spec_failures(mesh)] == ["spec.authentication"]


def test_cel_refuses_external_peers_beside_pod_selectors() -> None:
    to = {"externalPeers": ["site"], "podSelector": {"matchLabels": {"app": "db"}}}
    failures = _spec_failures(_tunnel_spec(selector={"from": {}, "to": to}))
    assert [f.split(":")[0] for f in failures] == ["spec.selector.to.externalPeers"]
