"""The CRD reference pages, generated from the CRD schemas.

`python -m kipsec_operator.crds` writes two things from the same manifests the chart
installs, so the pages and `kubectl explain` always say the same thing:

- `docs/crd-reference.md`, whole (:func:`crd_reference`): names, printer columns, every
  field with its type, default, validation and description, the CEL rules with the
  messages the API server answers, and the status conditions with their reasons;
- the tables of `docs/operator.md` between the markers
  `<!-- BEGIN GENERATED: <section> -->` and `<!-- END GENERATED: <section> -->`
  (:func:`update_document`).

The condition reasons are not part of any schema: :data:`CONDITIONS` lists them, and a
unit test holds that list to the reasons the operator's code writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .openapi import JsonObject
from .render import REGENERATE, crds


@dataclass(frozen=True)
class Field:
    """One property of a schema, flattened for a table row."""

    path: str
    """Dotted path from the resource (`spec.lifetimes.ikeSa`; `[]` marks list items)."""
    type: str
    """`string`, `list of object`, `map of string`, or the enum values."""
    default: str
    """The default as JSON in backticks, or empty."""
    description: str
    validation: str
    """Required, bounds, lengths, pattern and item counts, as short text."""


@dataclass(frozen=True)
class Rule:
    """One CEL `x-kubernetes-validations` rule, where it sits and what it answers."""

    path: str
    field_path: str
    rule: str
    message: str


@dataclass(frozen=True)
class ConditionReason:
    """One (type, status, reason) a resource's status can hold, and when."""

    type: str
    status: str
    reason: str
    when: str


#: Kind → every condition reason the operator writes, in the order people meet them.
#: Tunnel: `kipsec_operator.reconcile.status`; TunnelCertificate: the operator's
#: `certificate_status` handler. A unit test compares this with the code.
CONDITIONS: dict[str, tuple[ConditionReason, ...]] = {
    "Tunnel": (
        ConditionReason(
            "Ready",
            "True",
            "AllSasEstablished",
            "every expected link reports an established child SA and no selected pod "
            "waits for an IP",
        ),
        ConditionReason("Ready", "False", "SasPending", "some links are not established yet"),
        ConditionReason(
            "Ready",
            "False",
            "PeerCertificatesPending",
            "public-key encryption: some pods wait for their peers' certificates (not yet "
            "signed), so those links are not configured yet; the message counts the pods",
        ),
        ConditionReason("Ready", "False", "PodsPending", "a selected pod has no IP yet"),
        ConditionReason("Ready", "False", "NoPodsSelected", "no pod matches `spec.selector`"),
        ConditionReason(
            "Ready",
            "False",
            "NoPeers",
            "the selected pods have no peer; the message says why (a single pod in a mesh, "
            "an empty side, no common IP version)",
        ),
        ConditionReason(
            "Ready",
            "False",
            "PeerConflict",
            "there is no link because another Tunnel holds every pair (as Degraded)",
        ),
        ConditionReason(
            "Ready",
            "False",
            "NoCertificate",
            "there is no link because the ExternalPeer's TunnelCertificate selects none of "
            "the pods (as Degraded)",
        ),
        ConditionReason(
            "Ready",
            "False",
            "NamespaceNotConsenting",
            "there is no link because the pods it would select are in namespaces that do "
            "not consent (as Degraded; the message names the namespace)",
        ),
        ConditionReason(
            "Ready",
            "False",
            "InvalidSpec",
            "see [What is checked where](operator.md#what-is-checked-where); the message "
            "lists the fields (at most five)",
        ),
        ConditionReason("Degraded", "False", "AsExpected", "nothing needs attention"),
        ConditionReason("Degraded", "True", "InvalidSpec", "as above"),
        ConditionReason(
            "Degraded",
            "True",
            "PeerConflict",
            "another Tunnel already links a pod pair, or a pod and an ExternalPeer, this "
            "one selects (the first in namespace/name order wins; for an ExternalPeer the "
            "message names both Tunnels, the pod and the peer)",
        ),
        ConditionReason(
            "Degraded",
            "True",
            "NoCertificate",
            "a pod this Tunnel links to an ExternalPeer with certificates is not selected "
            "by that peer's `tunnelCertificateRef`, so it would have no certificate to "
            "present: it gets no entry for that peer, and the message names the pod",
        ),
        ConditionReason(
            "Degraded",
            "True",
            "NamespaceNotConsenting",
            "a `namespaceSelector` selects pods in a namespace that does not list the "
            "Tunnel's namespace in its `kipsec.io/allow-tunnels-from` annotation; those "
            "pods take no part, and the message names the field and the namespace",
        ),
        ConditionReason(
            "Degraded",
            "True",
            "SidecarError",
            "a sidecar reports an error for a peer (`AUTHENTICATION_FAILED`, "
            "`NEGOTIATION_FAILED`, `PEER_DEAD` ...); the message is `status.lastError`",
        ),
    ),
    "ExternalPeer": (
        ConditionReason(
            "Ready",
            "False",
            "InvalidSpec",
            "the spec cannot be used: a bad CIDR, a subnet overlapping the cluster's "
            "networks or another ExternalPeer, a missing Secret or TunnelCertificate, an "
            "address that does not resolve; the message names the fields (at most five)",
        ),
        ConditionReason(
            "Ready",
            "False",
            "NotUsed",
            "no pod is configured towards it (no valid Tunnel with a selected pod names it)",
        ),
        ConditionReason(
            "Ready", "False", "SasPending", "some configured pods have no established child SA"
        ),
        ConditionReason(
            "Ready",
            "True",
            "AllSasEstablished",
            "every configured pod reports an established child SA with it",
        ),
        ConditionReason("Degraded", "False", "AsExpected", "nothing needs attention"),
        ConditionReason("Degraded", "True", "InvalidSpec", "as above"),
        ConditionReason(
            "Degraded",
            "True",
            "SidecarError",
            "pods report a failure towards it (`status.podErrors`: per pod a fixed reason "
            "such as `authentication_failed`, `peer_dead`); the message names the first pod, "
            "its reason and the spec fields to check (`authentication_failed`: "
            "`spec.identity`, the identity the gateway must prove, and "
            "`spec.authentication`)",
        ),
    ),
    "TunnelCertificate": (
        ConditionReason(
            "Ready",
            "False",
            "InvalidSpec",
            "the spec cannot be used (e.g. lifetimes outside the bounds, which an older "
            "CRD does not enforce); the message names the field",
        ),
        ConditionReason(
            "Ready",
            "False",
            "IssuerUnavailable",
            "the `CASecret` issuer's Secret is missing or holds no usable CA; the message "
            "names the Secret",
        ),
        ConditionReason("Ready", "False", "NoPodsSelected", "no pod matches `spec.selector`"),
        ConditionReason(
            "Ready",
            "False",
            "IssuanceFailed",
            "a selected pod without a current certificate was refused its last request; "
            "the message names the pod and the refusal",
        ),
        ConditionReason(
            "Ready", "False", "PodsPending", "some selected pods hold no current certificate yet"
        ),
        ConditionReason(
            "Ready",
            "True",
            "AllPodsIssued",
            "every selected pod holds a certificate that has not expired",
        ),
    ),
}


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _type(node: JsonObject) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = str(node["type"])
    if kind == "array":
        return f"list of {_type(node['items'])}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type(node['additionalProperties'])}"
    return kind


def _validation(node: JsonObject, required: bool) -> str:
    parts = ["required"] if required else []
    if "minimum" in node or "maximum" in node:
        parts.append(f"{node.get('minimum', '')}–{node.get('maximum', '')}".strip("–"))
    if "minLength" in node:
        parts.append(f"length {node['minLength']}–{node['maxLength']}")
    elif "maxLength" in node:
        parts.append(f"at most {node['maxLength']} characters")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    if "minItems" in node:
        parts.append(f"{node['minItems']}–{node['maxItems']} items")
    elif "maxItems" in node:
        parts.append(f"at most {node['maxItems']} items")
    items = node.get("items") if node.get("type") == "array" else None
    if items is not None and items.get("type") != "object":
        inner = _validation(items, False)
        if inner:
            parts.append(f"each: {inner}")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        inner = _validation(extra, False)
        if inner:
            parts.append(f"each value: {inner}")
    return ", ".join(parts)


def _fields(node: JsonObject, path: str) -> Iterator[Field]:
    required = set(node.get("required") or [])
    for name, child in (node.get("properties") or {}).items():
        here = f"{path}.{name}" if path else name
        default = child.get("default")
        shown = "" if default is None or default in ({}, []) else f"`{json.dumps(default)}`"
        yield Field(
            here,
            _type(child),
            shown,
            child.get("description", ""),
            _validation(child, name in required),
        )
        target = child.get("items") if child["type"] == "array" else child
        if target is not None and target.get("properties"):
            yield from _fields(target, here + ("[]" if child["type"] == "array" else ""))


def _rules(node: JsonObject, path: str) -> Iterator[Rule]:
    for entry in node.get("x-kubernetes-validations") or []:
        yield Rule(path, entry.get("fieldPath", ""), entry["rule"], entry["message"])
    for name, child in (node.get("properties") or {}).items():
        yield from _rules(child, f"{path}.{name}")
    if node.get("type") == "array":
        yield from _rules(node["items"], f"{path}[]")


def _manifest(kind: str) -> JsonObject:
    return next(m for m in crds().values() if m["spec"]["names"]["kind"] == kind)


def _schema(kind: str) -> JsonObject:
    schema: JsonObject = _manifest(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def field_table(kind: str, part: str = "spec", validation: bool = False) -> str:
    """A Markdown table of every field under `part` (`spec` or `status`) of `kind`;
    with `validation`, a column of the schema's checks too."""
    extra = (" Validation |", "---|") if validation else ("", "")
    lines = [f"| Field | Type | Default |{extra[0]} Description |", f"|---|---|---|{extra[1]}---|"]
    for f in _fields(_schema(kind)["properties"][part], part):
        checks = f" {_escape(f.validation)} |" if validation else ""
        lines.append(f"| `{f.path}` | {f.type} | {f.default} |{checks} {_escape(f.description)} |")
    return "\n".join(lines)


def rules_table(kind: str) -> str:
    """Every CEL rule of `kind`: where it applies, the API server's message, the rule."""
    lines = ["| On | Message (as the API server answers it) | Rule |", "|---|---|---|"]
    for r in _rules(_schema(kind)["properties"]["spec"], "spec"):
        where = f"`{r.path}`" + (f" (field `{r.field_path.lstrip('.')}`)" if r.field_path else "")
        lines.append(f"| {where} | {_escape(r.message)} | `{_escape(r.rule)}` |")
    return "\n".join(lines)


def conditions_table(kind: str) -> str:
    """The status conditions of `kind` with every reason the operator writes."""
    lines = ["| Condition | Status | Reason | When |", "|---|---|---|---|"]
    for c in CONDITIONS[kind]:
        lines.append(f"| {c.type} | {c.status} | `{c.reason}` | {_escape(c.when)} |")
    return "\n".join(lines)


def _names_table(manifest: JsonObject) -> str:
    spec = manifest["spec"]
    names = spec["names"]
    version = spec["versions"][0]
    rows = [
        ("API version", f"`{spec['group']}/{version['name']}`"),
        ("Kind / list kind", f"`{names['kind']}` / `{names['listKind']}`"),
        ("Plural / singular", f"`{names['plural']}` / `{names['singular']}`"),
        ("Short names", ", ".join(f"`{n}`" for n in names.get("shortNames", []))),
        ("Categories", ", ".join(f"`{n}`" for n in names.get("categories", []))),
        ("Scope", spec["scope"]),
        ("Subresources", ", ".join(f"`{n}`" for n in version.get("subresources", {}))),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def _columns_table(manifest: JsonObject) -> str:
    lines = ["| Column | Type | JSONPath |", "|---|---|---|"]
    for column in manifest["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = _escape(column["jsonPath"])
        lines.append(f"| {column['name']} | {column['type']} | `{path}` |")
    return "\n".join(lines)


_PAGE_HEAD = f"""<!-- Generated from operator/kipsec_operator/crds/models.py by `{REGENERATE}`.
     Do not edit: change the models (or CONDITIONS in crds/reference.py) and regenerate. -->
# CRD reference

Every field of kipsec's custom resources, generated from the same schemas the chart
installs (`charts/kipsec/crds/`), so this page, the API server's validation and
`kubectl explain` agree. What the fields mean together, with examples, is in
[operator.md](operator.md); what the operator checks beyond the schema (Secrets that
exist, algorithms the sidecar implements) in
[operator.md, What is checked where](operator.md#what-is-checked-where).

Conventions: durations are Go durations (`90s`, `1h30m`), which `kubectl` prints and the
CEL `duration()` function parses. A default of an object field is applied by the API
server from the defaults of the fields inside it. Unknown fields are pruned by the API
server, not refused. A Validation entry "required" means the field must be present when
its parent is.

Regenerate after changing the models:

```sh
{REGENERATE}   # writes charts/kipsec/crds/*.yaml, this page, and the tables of operator.md
```

A unit test (`tests/unit/test_operator_crds.py`) fails when this page is stale.
"""


def _resource_section(kind: str) -> str:
    manifest = _manifest(kind)
    schema = _schema(kind)
    return "\n".join(
        [
            f"## {kind}",
            "",
            schema["description"],
            "",
            _names_table(manifest),
            "",
            "`kubectl get` columns:",
            "",
            _columns_table(manifest),
            "",
            f"### {kind} spec",
            "",
            field_table(kind, "spec", validation=True),
            "",
            f"### {kind} validation rules",
            "",
            "Checked by the API server on create and update (CEL `x-kubernetes-validations`); "
            "a rule on a list item holds for every item.",
            "",
            rules_table(kind),
            "",
            f"### {kind} status",
            "",
            "Written by the operator only (the status subresource).",
            "",
            field_table(kind, "status", validation=True),
            "",
            f"### {kind} conditions",
            "",
            conditions_table(kind),
            "",
        ]
    )


def crd_reference() -> str:
    """The complete text of docs/crd-reference.md."""
    return "\n".join(
        [
            _PAGE_HEAD,
            _resource_section("Tunnel"),
            _resource_section("TunnelCertificate"),
            _resource_section("ExternalPeer"),
        ]
    )


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN GENERATED: {name} -->", f"<!-- END GENERATED: {name} -->"


#: Section name of docs/operator.md → what fills it.
SECTIONS: dict[str, Callable[[], str]] = {
    "Tunnel spec": lambda: field_table("Tunnel", "spec"),
    "Tunnel status": lambda: field_table("Tunnel", "status"),
    "Tunnel conditions": lambda: conditions_table("Tunnel"),
    "TunnelCertificate spec": lambda: field_table("TunnelCertificate", "spec"),
    "TunnelCertificate status": lambda: field_table("TunnelCertificate", "status"),
}


def update_document(text: str) -> str:
    """`text` (docs/operator.md) with every generated section replaced by the current one."""
    for name, build in SECTIONS.items():
        begin, end = _markers(name)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"docs/operator.md has no section {begin} ... {end}")
        replacement = f"{begin}\n{build()}\n{end}"
        text = text[: match.start()] + replacement + text[match.end() :]
    return text


__all__ = [
    "CONDITIONS",
    "SECTIONS",
    "ConditionReason",
    "conditions_table",
    "crd_reference",
    "field_table",
    "rules_table",
    "update_document",
]
