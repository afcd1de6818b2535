"""Random mutations of valid sidecar configuration documents, and random YAML text.

Whatever the document, loading it gives a SidecarConfig or a ConfigError — never
another exception — and a document that loads maps onto the cores (`to_core`) or
fails with a ConfigError. An unknown key added anywhere is reported at its exact path.
The JSON shortcut of the loader reads the same data as the YAML parser, or declines.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipsec_sidecar.config import ConfigError, SidecarConfig, load_config_data, to_core
from kipsec_sidecar.config.errors import join_path
from kipsec_sidecar.config.load import load_config_string, plain_json
from kipsec_sidecar.config.strict_yaml import parse_yaml
from support.sidecar_config_files import EXAMPLES, ExampleFiles

FILES = ExampleFiles()


def _valid_documents() -> list[dict[str, Any]]:
    documents = [yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]
    inline = copy.deepcopy(documents[0])
    inline["local"]["auth"] = {"psk": {"value": "an inline test secret"}}
    inline["peers"].append(
        {
            "name": "manual-inline",
            "address": "10.244.7.7",
            "keying": "manual",
            "manual": {
                "spiIn": "0x4000",
                "spiOut": 16385,
                "encryption": "aes128",
                "integrity": "sha256",
                "keys": {
                    "encryptionIn": "01" * 16,
                    "encryptionOut": "02" * 16,
                    "integrityIn": "03" * 32,
                    "integrityOut": "04" * 32,
                },
            },
        }
    )
    return [*documents, inline]


DOCUMENTS = _valid_documents()

# Values a careless or hostile author might put anywhere: the kinds YAML produces.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "auto",
            "esp",
            "ah",
            "tunnel",
            "transport",
            "manual",
            "raw",
            "udp",
            "4h",
            "0s",
            "10.0.0.1",
            "fd00::1",
            "10.0.0.0/8",
            "0x100",
            "aes256",
            "3des",
            "sha256",
            "aes256gcm16-x25519",
            "tcp",
            "80-90",
            "1Gi",
            "/tmp/x",
            "CN=a",
            "a@b",
            "00" * 36,
            "kipsec.io/v1alpha1",
            "SidecarConfig",
            "",
        ]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=8), inner, max_size=3),
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(DOCUMENTS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths[1:]))
        parent = _get(document, path[:-1])
        action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
        else:
            parent[path[-1]] = copy.deepcopy(parent[path[-1]])
    return document


def _load_and_map(document: object) -> None:
    try:
        config = load_config_data(document)
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e.message, str) and e.message for e in exc.errors)
        return
    assert isinstance(config, SidecarConfig)
    try:
        plans = to_core(config, read_file=FILES.read)
    except ConfigError as exc:
        assert exc.errors
        return
    assert len(plans) == len(config.peers)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_a_mutated_document_loads_or_raises_config_error(document: dict[str, Any]) -> None:
    _load_and_map(document)


@st.composite
def with_unknown_key(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    document: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(DOCUMENTS)))
    mappings = [p for p in _paths(document) if isinstance(_get(document, p), dict)]
    path = draw(st.sampled_from(mappings))
    target = _get(document, path)
    key = draw(st.sampled_from(["zzUnknown", "x-extra", "peer", "trafficSelector"]))
    if key in target:
        key = "zzUnknown"
    target[key] = draw(SCALARS)
    return document, join_path(*path, key)


@settings(max_examples=200, deadline=None)
@given(with_unknown_key())
def test_an_unknown_key_is_reported_at_its_exact_path(case: tuple[dict[str, Any], str]) -> None:
    document, path = case
    try:
        load_config_data(document)
    except ConfigError as exc:
        if path in ("apiVersion", "kind"):
            return
        assert path in exc.paths, (path, exc.paths)
        return
    raise AssertionError(f"unknown key {path} was accepted")


YAML_FRAGMENTS = st.lists(
    st.sampled_from(
        [
            "apiVersion: kipsec.io/v1alpha1\n",
            "kind: SidecarConfig\n",
            "local:\n",
            "  addresses: [10.0.0.1]\n",
            "  auth: {psk: {value: abcdefghij}}\n",
            "peers:\n",
            "  - name: b\n",
            "    address: 10.0.0.2\n",
            "    mode: transport\n",
            "- ",
            ": ",
            "&a ",
            "*a ",
            "!!binary ",
            "!!python/object:os.system ",
            "{",
            "}",
            "[",
            "]",
            "\t",
            "'",
            '"',
            "? ",
            "%YAML 1.1\n",
            "---\n",
            "...\n",
            "<<: *a\n",
            "0x1F ",
            "2001-12-14 ",
            "~ ",
            "=",
            "!!set {a, b}\n",
        ]
    ),
    max_size=14,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(YAML_FRAGMENTS.map("".join), st.text(max_size=80)))
def test_random_yaml_text_loads_or_raises_config_error(text: str) -> None:
    try:
        config = load_config_string(text)
    except ConfigError:
        return
    assert isinstance(config, SidecarConfig)


def test_the_mutation_corpus_is_valid() -> None:
    for document in DOCUMENTS:
        config = load_config_data(document)
        assert to_core(config, read_file=FILES.read)
    assert Path(EXAMPLES).is_dir()


# --- the JSON shortcut of parse_text -------------------------------------------------------

#: Mostly printable ASCII (what the shortcut takes), some of everything else.
JSON_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12) | st.text(
    max_size=4
)
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([1e16, 1.5e-7, -0.0, 1e300]),  # exponents: strings to YAML
        JSON_TEXT,
        st.sampled_from(["yes", "no", "on", "0x10", "1e3", "1_000", "~", "<<", ": x", "#"]),
    ),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["<<", "?", "-", ""]), children, max_size=4
        )
    ),
    max_leaves=20,
)
LAYOUTS = st.sampled_from(
    [
        {"indent": 2, "sort_keys": True},  # what the operator writes
        {},
        {"separators": (",", ":")},
        {"indent": 1, "ensure_ascii": False},
        {"separators": (" , ", " : ")},
        {"indent": "\t"},
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(JSON_TEXT, JSON_VALUES, max_size=5), LAYOUTS)
def test_the_json_shortcut_reads_what_the_yaml_parser_reads(
    document: dict[str, Any], layout: dict[str, Any]
) -> None:
    # plain_json either declines (the YAML parser decides) or gives exactly the YAML data.
    text = json.dumps(document, **layout)
    shortcut = plain_json(text)
    if shortcut is None:
        return
    assert shortcut == parse_yaml(text, source="fuzz")


def test_the_operators_documents_take_the_json_shortcut_and_load_the_same() -> None:
    for document in DOCUMENTS:
        text = json.dumps(document, sort_keys=True, indent=2) + "\n"
        assert plain_json(text) == parse_yaml(text, source="t") == document
        assert load_config_string(text) == load_config_data(document)
