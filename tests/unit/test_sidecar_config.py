"""The sidecar configuration document: examples, defaults, field errors, refusals, secrets,
the committed JSON Schema and the mapping onto the cores' configuration objects."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from kipsec_sidecar.config import (
    MIGRATIONS,
    ConfigError,
    SidecarConfig,
    load_config,
    load_config_data,
    load_config_string,
    to_core,
)
from kipsec_sidecar.config.errors import FieldError
from kipsec_sidecar.config.model import DEFAULT_IKEV1_PROPOSALS
from kipsec_sidecar.config.proposals import parse_child_proposal, parse_ike_proposal
from kipsec_sidecar.config.schema import REGENERATE, json_schema, render
from kipsec_sidecar.config.to_core import retransmission_for
from kipsec_sidecar.config.units import format_duration, parse_duration, parse_size
from kipsec_sidecar.core import algorithms
from kipsec_sidecar.core.errors import LocalProtocolError
from kipsec_sidecar.core.ike.config import IkeConfig
from kipsec_sidecar.core.ike.constants import (
    DhGroup,
    EncrId,
    IdType,
    IntegId,
    PrfId,
    ProtocolId,
)
from kipsec_sidecar.core.ipsec_sa import IpsecSa
from kipsec_sidecar.core.traffic_selectors import TrafficSelector
from kipsec_sidecar.daemon.datapath_choice import userspace_workers
from support.pki import CertificateAuthority
from support.sidecar_config_files import (
    EXAMPLES,
    PSK,
    SCHEMA_FILE,
    ExampleFiles,
    minimal_document,
)

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
SECRET = "correct horse battery staple"


minimal = minimal_document


def errors_of(document: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_data(document)
    return [(e.path, e.message) for e in info.value.errors]


def only_error(document: object) -> tuple[str, str]:
    errors = errors_of(document)
    assert len(errors) == 1, errors
    return errors[0]


@pytest.fixture(scope="module")
def files() -> ExampleFiles:
    return ExampleFiles()


# --- examples, schema -------------------------------------------------------------------


def test_the_four_documented_examples_exist() -> None:
    names = {p.stem for p in EXAMPLE_FILES}
    assert {"psk-mesh", "ecdsa-certificates", "transport-ah", "manual-keys"} <= names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_example_loads_and_maps_to_core_configs(path: Path, files: ExampleFiles) -> None:
    config = load_config(path)
    plans = to_core(config, read_file=files.read)
    assert len(plans) == len(config.peers) > 0
    for plan in plans:
        if plan.keying == "ike":
            assert plan.ike is not None and plan.manual is None
            assert plan.ike.children[0].name == plan.name
        else:
            assert plan.manual is not None and plan.ike is None
            assert isinstance(plan.manual.inbound.build(), IpsecSa)
            assert isinstance(plan.manual.outbound.build(), IpsecSa)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_the_json_schema_validates_every_example(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    jsonschema.Draft202012Validator(json_schema()).validate(document)


def test_the_json_schema_rejects_an_unknown_key() -> None:
    document = minimal()
    document["peers"][0]["trafficSelector"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(json_schema()).validate(document)


def test_the_committed_json_schema_is_the_generated_one() -> None:
    committed = SCHEMA_FILE.read_text() if SCHEMA_FILE.exists() else ""
    assert committed == render(), (
        f"{SCHEMA_FILE} is out of date with the model; regenerate it with: {REGENERATE}"
    )


def test_the_json_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text()))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_a_written_document_loads_back_to_the_same_model(path: Path) -> None:
    config = load_config(path)
    again = load_config_data(config.to_document())
    assert again.model_dump() == config.model_dump()
    assert again.to_document() == config.to_document()


# --- defaults -----------------------------------------------------------------------------


def test_a_minimal_document_gets_the_documented_defaults() -> None:
    config = load_config_data(minimal())
    assert config.proposals.ike == ["aes256gcm16-prfsha256-x25519"]
    assert config.proposals.esp == ["aes256gcm16"]
    assert config.proposals.ah == ["sha256"]
    assert (config.lifetimes.ike_sa, config.lifetimes.child_sa) == (14400.0, 3600.0)
    assert (config.lifetimes.rekey_margin, config.lifetimes.jitter) == (540.0, 0.1)
    assert (config.liveness.interval, config.liveness.timeout) == (30.0, 120.0)
    assert (config.datapath, config.encapsulation, config.mtu) == ("auto", "udp", None)
    assert config.nat_traversal.enabled and config.nat_traversal.keepalive == 20.0
    assert config.metrics.listen == "127.0.0.1:9585"
    assert config.control.socket == "/run/kipsec/control.sock"
    assert (config.logging.format, config.logging.level) == ("text", "info")
    peer = config.peers[0]
    assert (peer.port, peer.mode, peer.protocol, peer.keying) == (500, "tunnel", "esp", "ike")


def test_start_auto_initiates_at_start_for_up_to_16_peers() -> None:
    document = minimal()
    document["peers"] = [{"name": f"p{i}", "address": f"10.0.1.{i}"} for i in range(16)]
    config = load_config_data(document)
    assert {config.start_for(p) for p in config.peers} == {"onStart"}


def test_start_auto_initiates_on_demand_above_16_peers() -> None:
    document = minimal()
    document["peers"] = [{"name": f"p{i}", "address": f"10.0.1.{i}"} for i in range(17)]
    document["peers"][0]["start"] = "onStart"
    config = load_config_data(document)
    assert config.start_for(config.peers[0]) == "onStart"
    assert {config.start_for(p) for p in config.peers[1:]} == {"onDemand"}


def test_a_peer_override_replaces_only_the_fields_it_writes() -> None:
    document = minimal()
    document["lifetimes"] = {"childSa": "2h", "rekeyMargin": "10m"}
    document["peers"][0]["lifetimes"] = {"childSa": "30m"}
    document["peers"][0]["proposals"] = {"esp": ["chacha20poly1305"]}
    config = load_config_data(document)
    peer = config.peers[0]
    assert config.lifetimes_for(peer).child_sa == 1800.0
    assert config.lifetimes_for(peer).rekey_margin == 600.0
    assert config.proposals_for(peer).esp == ["chacha20poly1305"]
    assert config.proposals_for(peer).ike == ["aes256gcm16-prfsha256-x25519"]


def test_peers_with_the_same_proposals_share_them_parsed_once(files: ExampleFiles) -> None:
    document = minimal()
    document["peers"] = [{"name": f"p{i}", "address": f"10.0.1.{i}"} for i in range(3)]
    document["peers"][2]["proposals"] = {"esp": ["chacha20poly1305"]}
    document["peers"][2]["ikeVersion"] = 1  # legacy SHA-1 allowed: another parse
    plans = to_core(load_config_data(document), read_file=files.read)
    ike = [plan.ike for plan in plans if plan.ike is not None]
    assert ike[0].proposals[0] is ike[1].proposals[0]
    assert ike[0].children[0].proposals[0] is ike[1].children[0].proposals[0]
    assert ike[2].proposals[0] is not ike[0].proposals[0]
    assert ike[2].proposals == tuple(
        parse_ike_proposal(text, legacy_sha1=True) for text in DEFAULT_IKEV1_PROPOSALS
    )
    assert ike[2].children[0].proposals == (parse_child_proposal("chacha20poly1305", "esp"),)


# --- versioning ---------------------------------------------------------------------------


def test_the_api_version_is_checked_before_anything_else() -> None:
    document = minimal()
    document["apiVersion"] = "kipsec.io/v9"
    document["peers"][0]["mode"] = "sideways"
    path, message = only_error(document)
    assert path == "apiVersion"
    assert "kipsec.io/v9" in message and "kipsec.io/v1alpha1" in message


def test_a_missing_api_version_is_reported() -> None:
    document = minimal()
    del document["apiVersion"]
    assert only_error(document)[0] == "apiVersion"


def test_the_kind_must_be_sidecar_config() -> None:
    document = minimal()
    document["kind"] = "Tunnel"
    assert only_error(document) == ("kind", "must be SidecarConfig")


@pytest.mark.parametrize("document", [None, [], "text", 42])
def test_a_document_that_is_not_a_mapping_is_refused(document: object) -> None:
    path, message = only_error(document)
    assert path == "" and "mapping" in message


def test_an_older_version_is_migrated_before_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    def from_v0(old: dict[str, Any]) -> dict[str, Any]:
        new = dict(old, apiVersion="kipsec.io/v1alpha1")
        new["peers"] = [dict(p, address=p.pop("ip")) for p in old["peers"]]
        return new

    monkeypatch.setitem(MIGRATIONS, "kipsec.io/v0", from_v0)
    document = minimal()
    document["apiVersion"] = "kipsec.io/v0"
    document["peers"] = [{"name": "b", "ip": "10.0.0.2"}]
    assert load_config_data(document).peers[0].address == "10.0.0.2"


# --- field errors name the exact path -------------------------------------------------------


def _set(document: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    target: Any = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def _peer(**fields: Any) -> dict[str, Any]:
    return {"name": "c", "address": "10.0.0.3", **fields}


BAD_FIELDS: list[tuple[str, tuple[str | int, ...], Any, str, str]] = [
    (
        "remote selector not a CIDR",
        ("peers", 1),
        _peer(trafficSelectors={"local": ["10.0.0.1"], "remote": ["10.0.0.300/24"]}),
        "peers[1].trafficSelectors.remote[0]",
        "not a CIDR",
    ),
    (
        "selector with host bits set",
        ("peers", 1),
        _peer(trafficSelectors={"local": ["10.0.0.1"], "remote": [{"cidr": "10.9.0.1/16"}]}),
        "peers[1].trafficSelectors.remote[0].cidr",
        "did you mean 10.9.0.0/16",
    ),
    (
        "ports without a port protocol",
        ("peers", 1),
        _peer(
            trafficSelectors={
                "local": ["10.0.0.1"],
                "remote": [{"cidr": "10.9.0.0/16", "ports": 80}],
            }
        ),
        "peers[1].trafficSelectors.remote[0]",
        "ports need protocol",
    ),
    (
        "inverted port range",
        ("peers", 1),
        _peer(
            trafficSelectors={
                "local": ["10.0.0.1"],
                "remote": [{"cidr": "10.9.0.0/16", "protocol": "tcp", "ports": "90-80"}],
            }
        ),
        "peers[1].trafficSelectors.remote[0].ports",
        "port range 90-80",
    ),
    (
        "unknown protocol name",
        ("peers", 1),
        _peer(
            trafficSelectors={
                "local": ["10.0.0.1"],
                "remote": [{"cidr": "10.9.0.0/16", "protocol": "tpc"}],
            }
        ),
        "peers[1].trafficSelectors.remote[0].protocol",
        "unknown protocol 'tpc'",
    ),
    (
        "misspelt key",
        ("peers", 0, "trafficSelector"),
        {},
        "peers[0].trafficSelector",
        "did you mean 'trafficSelectors'?",
    ),
    ("missing peer address", ("peers", 1), {"name": "c"}, "peers[1].address", "required"),
    (
        "bad peer address",
        ("peers", 0, "address"),
        "10.0.0",
        "peers[0].address",
        "not an IP address",
    ),
    ("bad mode", ("peers", 0, "mode"), "tunel", "peers[0].mode", "'tunnel' or 'transport'"),
    ("port zero", ("peers", 0, "port"), 0, "peers[0].port", "greater than or equal to 1"),
    ("peers not a list", ("peers",), {"b": 1}, "peers", "must be a list"),
    ("duplicate name", ("peers", 1), _peer(name="b"), "peers[1].name", "duplicate peer name 'b'"),
    ("duplicate endpoint", ("peers", 1), _peer(address="10.0.0.2"), "peers[1].address", "peers[0]"),
    (
        "IPv6 peer without an IPv6 local address",
        ("peers", 0, "address"),
        "fd00::2",
        "peers[0].address",
        "no IPv6 address",
    ),
    (
        "AH over UDP",
        ("peers", 0, "protocol"),
        "ah",
        "peers[0].protocol",
        "AH cannot be UDP-encapsulated",
    ),
    (
        "transport mode selector beyond the endpoint",
        ("peers", 1),
        _peer(
            mode="transport", trafficSelectors={"local": ["10.0.0.1"], "remote": ["10.0.0.0/24"]}
        ),
        "peers[1].trafficSelectors.remote[0]",
        "transport mode protects only",
    ),
    (
        "two identity kinds",
        ("local", "identity"),
        {"fqdn": "a.test", "email": "a@test"},
        "local.identity",
        "exactly one of fqdn, address, email, dn, keyId",
    ),
    ("bad DN", ("local", "identity"), {"dn": "no equals sign"}, "local.identity.dn", "RFC 4514"),
    ("bad FQDN", ("local", "identity"), {"fqdn": "a..b"}, "local.identity.fqdn", "pattern"),
    (
        "psk with both forms",
        ("local", "auth", "psk", "value"),
        SECRET,
        "local.auth.psk",
        "exactly one",
    ),
    ("auth with neither", ("local", "auth"), {}, "local.auth", "exactly one of psk, certificate"),
    (
        "certificate without CAs",
        ("local", "auth"),
        {"certificate": {"certFile": "c", "keyFile": "k", "caFiles": []}},
        "local.auth.certificate.caFiles",
        "at least 1 item",
    ),
    (
        "unparseable duration",
        ("lifetimes",),
        {"childSa": "1 hour"},
        "lifetimes.childSa",
        "not a duration",
    ),
    ("negative duration", ("liveness",), {"interval": -1}, "liveness.interval", "negative"),
    ("zero timeout", ("liveness",), {"timeout": 0}, "liveness.timeout", "greater than 0"),
    (
        "margin longer than the child lifetime",
        ("lifetimes",),
        {"childSa": "5m"},
        "lifetimes.childSa",
        "rekeyMargin (540 s) must be positive and shorter than childSa (300 s)",
    ),
    (
        "peer margin override too long",
        ("peers", 0, "lifetimes"),
        {"rekeyMargin": "2h"},
        "peers[0].lifetimes.rekeyMargin",
        "shorter than childSa",
    ),
    ("jitter of one", ("lifetimes",), {"jitter": 1}, "lifetimes.jitter", "less than 1"),
    ("bad size", ("lifetimes",), {"bytes": "10 GB"}, "lifetimes.bytes", "quantity"),
    ("bad datapath", ("datapath",), "ebpf", "datapath", "'auto', 'userspace' or 'kernel'"),
    ("bad mtu", ("mtu",), "jumbo", "mtu", "'auto' or a number"),
    ("tiny mtu", ("mtu",), 100, "mtu", "greater than or equal to 576"),
    ("metrics without a port", ("metrics",), {"listen": "0.0.0.0"}, "metrics.listen", "host:port"),
    ("relative control socket", ("control",), {"socket": "ctl.sock"}, "control.socket", "absolute"),
    ("bad log level", ("logging",), {"level": "loud"}, "logging.level", "'debug'"),
    (
        "manual keying without keys",
        ("peers", 0, "keying"),
        "manual",
        "peers[0].manual",
        "required with keying: manual",
    ),
    (
        "manual block with IKE",
        ("peers", 0, "manual"),
        {"spiIn": 4096, "spiOut": 4097, "encryption": "aes256gcm16", "keysFile": "k"},
        "peers[0].manual",
        "only allowed with keying: manual",
    ),
    (
        "reserved SPI",
        ("peers", 1),
        _peer(
            keying="manual",
            manual={"spiIn": 255, "spiOut": 4097, "encryption": "aes256gcm16", "keysFile": "k"},
        ),
        "peers[1].manual.spiIn",
        "greater than or equal to 256",
    ),
    (
        "manual key of the wrong length",
        ("peers", 1),
        _peer(
            keying="manual",
            manual={
                "spiIn": "0x1000",
                "spiOut": "0x1001",
                "encryption": "aes256gcm16",
                "keys": {"encryptionIn": "00" * 36, "encryptionOut": "00" * 32},
            },
        ),
        "peers[1].manual.keys.encryptionOut",
        "must be 36 bytes (72 hex digits), got 32",
    ),
    (
        "manual key not hex",
        ("peers", 1),
        _peer(
            keying="manual",
            manual={
                "spiIn": 4096,
                "spiOut": 4097,
                "encryption": "aes256gcm16",
                "keys": {"encryptionIn": "xyz", "encryptionOut": "00" * 36},
            },
        ),
        "peers[1].manual.keys.encryptionIn",
        "not a hexadecimal key",
    ),
    (
        "manual key YAML read as a number",
        ("peers", 1),
        _peer(
            keying="manual",
            manual={
                "spiIn": 4096,
                "spiOut": 4097,
                "encryption": "aes256gcm16",
                "keys": {"encryptionIn": 1234, "encryptionOut": "00" * 36},
            },
        ),
        "peers[1].manual.keys.encryptionIn",
        "must be a quoted string",
    ),
    (
        "keyId identity with certificates",
        ("local",),
        {
            "identity": {"keyId": "me"},
            "addresses": ["10.0.0.1"],
            "auth": {"certificate": {"certFile": "c", "keyFile": "k", "caFiles": ["ca"]}},
        },
        "local.identity.keyId",
        "only works with PSK",
    ),
    (
        "IKE peer without any auth",
        ("local",),
        {"addresses": ["10.0.0.1"]},
        "local.auth",
        "peers[0] (b) uses IKE",
    ),
]


@pytest.mark.parametrize(
    ("where", "value", "path", "fragment"),
    [case[1:] for case in BAD_FIELDS],
    ids=[case[0] for case in BAD_FIELDS],
)
def test_a_bad_field_is_reported_with_its_exact_path(
    where: tuple[str | int, ...], value: Any, path: str, fragment: str
) -> None:
    document = minimal()
    if where[:2] == ("peers", 1):
        document["peers"].append({})
    _set(document, where, copy.deepcopy(value))
    found_path, message = only_error(document)
    assert found_path == path
    assert fragment in message


def test_every_bad_field_is_reported_at_once() -> None:
    document = minimal()
    document["peers"][0]["mode"] = "sideways"
    document["peers"].append({"name": "c", "address": "nowhere"})
    document["logging"] = {"format": "xml"}
    paths = [path for path, _ in errors_of(document)]
    assert paths == ["peers[0].mode", "peers[1].address", "logging.format"]


def test_the_error_message_lists_every_bad_field_one_per_line() -> None:
    document = minimal()
    document["peers"].append(
        {
            "name": "c",
            "address": "10.0.0.3",
            "trafficSelectors": {"local": ["10.0.0.1"], "remote": ["not-a-network"]},
        }
    )
    document["mtu"] = "jumbo"
    with pytest.raises(ConfigError) as info:
        load_config_data(document, source="pod-a.yaml")
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid sidecar configuration in pod-a.yaml: 2 errors"
    assert lines[1].startswith("  peers[1].trafficSelectors.remote[0]: not a CIDR")
    assert lines[2].startswith("  mtu: ")


# --- refused algorithms ---------------------------------------------------------------------

REFUSED: list[tuple[str, str, str, str]] = [
    ("esp", "des-sha256", "DES", algorithms.SAFE_ENCRYPTION),
    ("esp", "3des-sha256", "3DES", algorithms.SAFE_ENCRYPTION),
    ("esp", "aes128-md5", "HMAC-MD5-96", algorithms.SAFE_INTEGRITY),
    ("esp", "null-sha256", "ENCR_NULL", algorithms.SAFE_ENCRYPTION),
    ("esp", "aes256", "aes-cbc without integrity", algorithms.SAFE_INTEGRITY),
    ("esp", "sha256", "ESP without encryption", algorithms.SAFE_ENCRYPTION),
    ("ah", "md5", "HMAC-MD5-96", algorithms.SAFE_INTEGRITY),
    ("ike", "3des-sha256-modp2048", "3DES", algorithms.SAFE_ENCRYPTION),
    ("ike", "aes256-sha256-prfmd5-x25519", "PRF-HMAC-MD5", "PRF-HMAC-SHA2-256"),
    ("ike", "aes256gcm16-prfsha256-modp1024", "MODP-1024", "curve25519"),
]


@pytest.mark.parametrize(("kind", "text", "refused", "alternative"), REFUSED)
def test_a_refused_algorithm_is_named_with_its_safe_alternative(
    kind: str, text: str, refused: str, alternative: str
) -> None:
    document = minimal()
    document["proposals"] = {kind: ["aes256gcm16" if kind == "esp" else "sha256", text]}
    if kind == "ike":
        document["proposals"] = {"ike": ["aes256gcm16-x25519", text]}
    path, message = only_error(document)
    assert path == f"proposals.{kind}[1]"
    assert refused in message and "refused" in message
    assert f"use {alternative}" in message


def test_a_refused_manual_cipher_is_named_with_its_safe_alternative() -> None:
    document = minimal()
    document["peers"][0].update(
        keying="manual",
        manual={
            "spiIn": 4096,
            "spiOut": 4097,
            "encryption": "3des",
            "integrity": "sha256",
            "keysFile": "k",
        },
    )
    path, message = only_error(document)
    assert path == "peers[0].manual.encryption"
    assert "3DES is refused" in message and algorithms.SAFE_ENCRYPTION in message


def test_manual_esp_without_integrity_is_refused() -> None:
    document = minimal()
    document["peers"][0].update(
        keying="manual",
        manual={"spiIn": 4096, "spiOut": 4097, "encryption": "aes256", "keysFile": "k"},
    )
    path, message = only_error(document)
    assert path == "peers[0].manual.integrity"
    assert "without integrity is refused" in message


def test_an_unknown_algorithm_lists_what_kipsec_supports() -> None:
    document = minimal()
    document["proposals"] = {"esp": ["aes256gcm16", "blowfish-sha256"]}
    path, message = only_error(document)
    assert path == "proposals.esp[1]"
    assert "unknown algorithm 'blowfish'" in message and "chacha20poly1305" in message


def test_an_aead_cipher_with_integrity_says_to_split_the_proposal() -> None:
    document = minimal()
    document["proposals"] = {"esp": ["aes256gcm16-sha256"]}
    path, message = only_error(document)
    assert path == "proposals.esp[0]" and "separate proposal" in message


# --- secrets ---------------------------------------------------------------------------------


def _with_inline_secrets() -> dict[str, Any]:
    document = minimal()
    document["local"]["auth"] = {"psk": {"value": SECRET}}
    document["peers"].append(
        {
            "name": "m",
            "address": "10.0.0.9",
            "keying": "manual",
            "manual": {
                "spiIn": 4096,
                "spiOut": 4097,
                "encryption": "aes128",
                "integrity": "sha256",
                "keys": {
                    "encryptionIn": "a1" * 16,
                    "encryptionOut": "b2" * 16,
                    "integrityIn": "c3" * 32,
                    "integrityOut": "d4" * 32,
                },
            },
        }
    )
    return document


SECRETS = (SECRET, "a1" * 16, "b2" * 16, "c3" * 32, "d4" * 32)


def test_secrets_are_never_in_repr_str_or_json_of_the_model() -> None:
    config = load_config_data(_with_inline_secrets())
    shown = "\n".join(
        [repr(config), str(config), config.model_dump_json(), str(config.model_dump())]
    )
    for secret in SECRETS:
        assert secret not in shown
    assert config.local.auth is not None and config.local.auth.psk is not None
    assert config.local.auth.psk.value is not None
    assert config.local.auth.psk.value.get_secret_value() == SECRET


def test_secrets_are_never_in_the_core_objects_reprs() -> None:
    config = load_config_data(_with_inline_secrets())
    plans = to_core(config, read_file=ExampleFiles().read)
    shown = repr(plans)
    for secret in (SECRET, *(bytes.fromhex(s).hex() for s in SECRETS[1:])):
        assert secret not in shown
    for key in (b"\xa1" * 16, b"\xd4" * 32):
        assert repr(key) not in shown


def test_a_rejected_secret_is_not_echoed_in_the_error() -> None:
    document = _with_inline_secrets()
    document["local"]["auth"]["psk"]["value"] = "s3cr3t!"  # too short
    document["peers"][1]["manual"]["keys"]["integrityOut"] = "zz" + "d4" * 31
    with pytest.raises(ConfigError) as info:
        load_config_data(document)
    assert info.value.paths == (
        "local.auth.psk.value",
        "peers[1].manual.keys.integrityOut",
    )
    assert "s3cr3t!" not in str(info.value)
    assert "d4d4" not in str(info.value)


# --- mapping onto the cores -----------------------------------------------------------------


def test_a_psk_peer_maps_to_an_ike_config(files: ExampleFiles) -> None:
    config = load_config_data(minimal())
    (plan,) = to_core(config, read_file=files.read, wall_clock_epoch=1.7e9)
    ike = plan.ike
    assert ike is not None
    assert ike.auth.method == "psk"
    assert ike.auth.psk == PSK  # one trailing newline of the file dropped
    assert ike.auth.local_id is not None and ike.auth.local_id.id_type == IdType.ID_IPV4_ADDR
    assert ike.auth.remote_id is None
    assert ike.local_addr == ("10.0.0.1", 500)
    assert ike.wall_clock_epoch == 1.7e9
    (proposal,) = ike.proposals
    assert [(e.encr_id, e.key_bits) for e in proposal.encryption] == [(EncrId.AES_GCM_16, 256)]
    assert proposal.prf == (PrfId.HMAC_SHA2_256,) and proposal.dh == (DhGroup.CURVE25519,)
    assert (ike.lifetime.rekey_after, ike.lifetime.expire_after) == (14400 - 540, 14400)
    assert ike.liveness_interval == 30.0
    (child,) = ike.children
    assert (child.name, child.mode, child.start) == ("b", "tunnel", True)
    assert (child.lifetime.rekey_after, child.lifetime.expire_after) == (3600 - 540, 3600)
    assert child.proposals[0].protocol == ProtocolId.ESP
    assert child.local_ts == (TrafficSelector.host("10.0.0.1"),)
    assert child.remote_ts == (TrafficSelector.host("10.0.0.2"),)
    assert (plan.start, plan.encapsulation, plan.address, plan.port) == (
        "onStart",
        "udp",
        "10.0.0.2",
        500,
    )


def test_selectors_with_protocol_and_ports_map_to_core_selectors(files: ExampleFiles) -> None:
    document = minimal()
    document["peers"][0]["trafficSelectors"] = {
        "local": ["10.0.0.0/24"],
        "remote": [{"cidr": "10.1.0.0/16", "protocol": "tcp", "ports": "8000-8080"}],
    }
    (plan,) = to_core(load_config_data(document), read_file=files.read)
    assert plan.local_ts == (TrafficSelector.from_network("10.0.0.0/24"),)
    assert plan.remote_ts == (TrafficSelector.from_network("10.1.0.0/16", 6, 8000, 8080),)


def test_liveness_timeout_becomes_the_retransmission_budget() -> None:
    for timeout in (1.0, 10.0, 120.0, 600.0):
        schedule = retransmission_for(timeout)
        waits = [schedule.timeout(n) for n in range(schedule.max_tries + 1)]
        assert sum(waits) >= timeout
        assert sum(waits[:-1]) < timeout


def test_byte_and_packet_limits_rekey_at_ninety_percent(files: ExampleFiles) -> None:
    document = minimal()
    document["lifetimes"] = {"bytes": "1Gi", "packets": 1000}
    (plan,) = to_core(load_config_data(document), read_file=files.read)
    assert (plan.sa_lifetime.hard_bytes, plan.sa_lifetime.soft_bytes) == (2**30, int(2**30 * 0.9))
    assert (plan.sa_lifetime.hard_packets, plan.sa_lifetime.soft_packets) == (1000, 900)


def test_ah_proposals_map_to_ah_child_proposals(files: ExampleFiles) -> None:
    (plan,) = to_core(load_config(EXAMPLES / "transport-ah.yaml"), read_file=files.read)
    assert plan.ike is not None
    child = plan.ike.children[0]
    assert child.mode == "transport"
    assert [(p.protocol, p.encryption, p.integrity) for p in child.proposals] == [
        (ProtocolId.AH, (), (IntegId.HMAC_SHA2_256_128,)),
        (ProtocolId.AH, (), (IntegId.HMAC_SHA2_384_192,)),
    ]


def test_certificates_map_to_signature_auth(files: ExampleFiles) -> None:
    plans = to_core(load_config(EXAMPLES / "ecdsa-certificates.yaml"), read_file=files.read)
    ike = plans[0].ike
    assert ike is not None
    assert ike.auth.method == "signature"
    assert ike.auth.local_id is None  # the core sends the subject DN
    assert ike.auth.certificates == (files.leaf.der,)
    assert ike.auth.trust_anchors == (files.ca.der,)
    assert ike.auth.remote_id is not None and ike.auth.remote_id.id_type == IdType.ID_FQDN
    assert plans[1].local_address == "fd00:10:244:1::a"


def _certificate_document() -> dict[str, Any]:
    document = yaml.safe_load((EXAMPLES / "ecdsa-certificates.yaml").read_text())
    assert isinstance(document, dict)
    return document


def test_a_local_identity_must_name_the_certificate(files: ExampleFiles) -> None:
    document = _certificate_document()
    document["local"]["identity"] = {"fqdn": "someone-else.test"}
    with pytest.raises(ConfigError) as info:
        to_core(load_config_data(document), read_file=files.read)
    assert info.value.paths == ("local.identity",)


def test_a_local_identity_naming_the_certificate_is_sent(files: ExampleFiles) -> None:
    document = _certificate_document()
    document["local"]["identity"] = {"fqdn": "pod-a.mesh.kipsec.test"}
    plans = to_core(load_config_data(document), read_file=files.read)
    assert plans[0].ike is not None and plans[0].ike.auth.local_id is not None
    assert plans[0].ike.auth.local_id.data == b"pod-a.mesh.kipsec.test"


def test_a_key_that_does_not_belong_to_the_certificate_is_refused(files: ExampleFiles) -> None:
    other = ExampleFiles()
    other.files["/etc/kipsec/tls/tls.key"] = (
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(ConfigError) as info:
        to_core(load_config(EXAMPLES / "ecdsa-certificates.yaml"), read_file=other.read)
    assert info.value.paths == ("local.auth.certificate.keyFile",)
    other.files["/etc/kipsec/tls/tls.key"] = files.files["/etc/kipsec/tls/tls.key"]
    other.files["/etc/kipsec/tls/tls.crt"] = files.files["/etc/kipsec/tls/ca.crt"]
    with pytest.raises(ConfigError) as info:
        to_core(load_config(EXAMPLES / "ecdsa-certificates.yaml"), read_file=other.read)
    assert info.value.errors[0].path == "local.auth.certificate.keyFile"
    assert "does not belong to the certificate" in info.value.errors[0].message


def test_an_unreadable_file_is_reported_at_the_field_naming_it() -> None:
    empty = ExampleFiles()
    empty.files.clear()
    with pytest.raises(ConfigError) as info:
        to_core(load_config(EXAMPLES / "ecdsa-certificates.yaml"), read_file=empty.read)
    assert info.value.paths == ("local.auth.certificate.certFile",)
    assert "cannot read /etc/kipsec/tls/tls.crt" in str(info.value)


def test_a_short_psk_file_is_refused() -> None:
    short = ExampleFiles()
    short.files["/etc/kipsec/psk/key"] = b"tiny\n"
    with pytest.raises(ConfigError) as info:
        to_core(load_config_data(minimal()), read_file=short.read)
    assert info.value.paths == ("local.auth.psk.secretFile",)


def _psk_from_file(content: bytes) -> bytes:
    files = ExampleFiles()
    files.files["/etc/kipsec/psk/key"] = content
    (plan,) = to_core(load_config_data(minimal()), read_file=files.read)
    assert plan.ike is not None and plan.ike.auth.psk is not None
    return plan.ike.auth.psk


def _psk_inline(value: str) -> bytes:
    document = minimal()
    document["local"]["auth"]["psk"] = {"value": value}
    (plan,) = to_core(load_config_data(document))
    assert plan.ike is not None and plan.ike.auth.psk is not None
    return plan.ike.auth.psk


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (b"12345678", b"12345678"),
        (b"12345678\n", b"12345678"),
        (b"12345678\r\n", b"12345678"),
        (b"12345678\r", b"12345678\r"),  # a lone CR is a byte of the key
        (b"12345678\n\n", b"12345678\n"),  # only one line ending goes
        (b" 12345678 \n", b" 12345678 "),
        (b"\x00\xff" * 16, b"\x00\xff" * 16),  # raw bytes
    ],
)
def test_a_psk_file_holds_raw_bytes_less_one_line_ending(content: bytes, key: bytes) -> None:
    assert _psk_from_file(content) == key


BINARY_KEY = bytes(range(32))


@pytest.mark.parametrize(
    "text",
    [
        "0x" + BINARY_KEY.hex(),
        "0X" + BINARY_KEY.hex().upper(),
        "0x" + ":".join(f"{b:02x}" for b in BINARY_KEY),
        "0s" + base64.b64encode(BINARY_KEY).decode(),
    ],
)
def test_a_binary_psk_is_written_in_hex_or_base64_in_the_file_and_inline(text: str) -> None:
    assert _psk_from_file(text.encode() + b"\n") == BINARY_KEY
    assert _psk_inline(text) == BINARY_KEY


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0xnot-hex-at-all", "starts with 0x but the rest is not hexadecimal"),
        ("0s!!!not base64!!!", "starts with 0s but the rest is not base64"),
        ("0x0102030405", "is shorter than 8 bytes (after decoding a 0x/0s form)"),
    ],
)
def test_a_bad_hex_or_base64_psk_is_refused_without_its_value(text: str, problem: str) -> None:
    files = ExampleFiles()
    files.files["/etc/kipsec/psk/key"] = text.encode()
    with pytest.raises(ConfigError) as info:
        to_core(load_config_data(minimal()), read_file=files.read)
    assert info.value.paths == ("local.auth.psk.secretFile",)
    assert info.value.errors[0].message.startswith(f"the key in the file {problem}")
    assert problem in str(info.value) and text[2:] not in str(info.value)
    document = minimal()
    document["local"]["auth"]["psk"] = {"value": text}
    path, message = only_error(document)
    assert path == "local.auth.psk.value" and problem in message and text[2:] not in message


def test_manual_keys_map_to_ipsec_sa_arguments(files: ExampleFiles) -> None:
    plans = to_core(load_config(EXAMPLES / "manual-keys.yaml"), read_file=files.read)
    manual = plans[0].manual
    assert manual is not None
    inbound, outbound = manual.inbound, manual.outbound
    assert (inbound.spi, inbound.src, inbound.dst) == (0x1001, "10.244.9.1", "10.244.1.10")
    assert (outbound.spi, outbound.src, outbound.dst) == (0x2001, "10.244.1.10", "10.244.9.1")
    assert inbound.encr_key == b"\x11" * 36 and outbound.encr_key == b"\x22" * 36
    assert inbound.encr_id == EncrId.AES_GCM_16 and inbound.integ_id is None
    assert inbound.udp_encap and inbound.protocol == ProtocolId.ESP
    sa = outbound.build()
    assert sa.key == (0x2001, sa.dst, ProtocolId.ESP)
    monitor = plans[1].manual
    assert monitor is not None and monitor.inbound.integ_key == b"\x33" * 32


def test_raw_encapsulation_gives_manual_sas_without_udp(files: ExampleFiles) -> None:
    document = yaml.safe_load((EXAMPLES / "manual-keys.yaml").read_text())
    document["encapsulation"] = "raw"
    plans = to_core(load_config_data(document), read_file=files.read)
    assert plans[0].manual is not None and not plans[0].manual.outbound.udp_encap


def test_a_keys_file_with_a_short_key_names_the_key(files: ExampleFiles) -> None:
    broken = ExampleFiles()
    broken.files["/etc/kipsec/manual/legacy-gateway.yaml"] = b"encryptionIn: '00'\n"
    with pytest.raises(ConfigError) as info:
        to_core(load_config(EXAMPLES / "manual-keys.yaml"), read_file=broken.read)
    assert info.value.paths == (
        "peers[0].manual.keysFile.encryptionIn",
        "peers[0].manual.keysFile.encryptionOut",
    )


def test_a_keys_file_with_a_key_written_twice_is_refused_not_last_one_wins() -> None:
    twice = ExampleFiles()
    twice.files["/etc/kipsec/manual/legacy-gateway.yaml"] = (
        b"encryptionIn: '" + b"11" * 36 + b"'\nencryptionIn: '" + b"99" * 36 + b"'\n"
    )
    with pytest.raises(ConfigError) as info:
        to_core(load_config(EXAMPLES / "manual-keys.yaml"), read_file=twice.read)
    assert info.value.errors == (
        FieldError(
            "peers[0].manual.keysFile",
            "not a YAML or JSON mapping of keys: line 2: duplicate key 'encryptionIn'",
        ),
    )


def test_relative_paths_are_relative_to_the_document(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "psk").write_bytes(PSK)
    document = minimal()
    document["local"]["auth"]["psk"]["secretFile"] = "secrets/psk"
    (tmp_path / "sidecar.yaml").write_text(yaml.safe_dump(document))
    (plan,) = to_core(load_config(tmp_path / "sidecar.yaml"))
    assert plan.ike is not None and plan.ike.auth.psk == PSK


# --- reading text --------------------------------------------------------------------------


def test_a_json_document_loads() -> None:
    config = load_config_string(json.dumps(minimal()))
    assert isinstance(config, SidecarConfig)


def test_a_duplicate_yaml_key_is_an_error_with_its_line() -> None:
    text = "apiVersion: kipsec.io/v1alpha1\nkind: SidecarConfig\nkind: SidecarConfig\n"
    with pytest.raises(ConfigError) as info:
        load_config_string(text)
    assert info.value.errors[0].message == "line 3: duplicate key 'kind'"


def test_a_yaml_syntax_error_names_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_string("apiVersion: [kipsec.io/v1alpha1\nkind: x\n")
    assert info.value.errors[0].message.startswith("line ")


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    assert "cannot read the file" in str(info.value)
    assert str(tmp_path / "absent.yaml") in str(info.value)


def test_a_document_over_1_mib_is_refused_before_parsing(tmp_path: Path) -> None:
    padding = "# " + "x" * 1000 + "\n"
    text = yaml.safe_dump(minimal()) + padding * 1100
    with pytest.raises(ConfigError) as info:
        load_config_string(text)
    assert info.value.errors[0].message.startswith("larger than 1 MiB")
    (tmp_path / "big.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "big.yaml")
    assert info.value.errors[0].message.startswith("larger than 1 MiB")


@pytest.mark.parametrize(
    "text",
    [
        "apiVersion: " + "[" * 5000 + "]" * 5000,
        "apiVersion: " + "{a: " * 5000 + "}" * 5000,
        "apiVersion:\n" + "".join(" " * i + "- \n" for i in range(1, 200)),
    ],
    ids=["flow-lists", "flow-mappings", "block-lists"],
)
def test_deep_nesting_is_refused_with_a_clear_message(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_string(text)
    assert "nested more than 64 levels deep" in info.value.errors[0].message


def test_yaml_merge_keys_are_refused_clearly_but_aliases_work() -> None:
    text = (
        "apiVersion: kipsec.io/v1alpha1\nkind: SidecarConfig\n"
        "local: {addresses: [10.0.0.1], auth: {psk: {value: '12345678'}}}\n"
        "peers:\n- &first {name: b, address: 10.0.0.2}\n- <<: *first\n  name: c\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_string(text)
    assert info.value.errors[0].message.startswith("line 6: YAML merge keys (<<) are not")
    aliased = text.replace("- <<: *first\n  name: c\n", "")
    aliased += "lifetimes: &l {ikeSa: 2h}\n"
    assert load_config_string(aliased).lifetimes.ike_sa == 7200.0


# --- units --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("30m", 1800.0),
        ("4h", 14400.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        (45, 45.0),
        ("45", 45.0),
        (0.5, 0.5),
    ],
)
def test_durations_are_read_in_go_style_or_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["4 hours", "h", "-5s", True, None, [], 10**400, float("nan")])
def test_malformed_durations_raise_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
@pytest.mark.parametrize("field", ["ikeSa", "childSa", "rekeyMargin"])
def test_nan_and_infinite_lifetimes_must_be_finite(value: str, field: str) -> None:
    text = yaml.safe_dump(minimal()) + f"lifetimes: {{{field}: {value}}}\n"
    with pytest.raises(ConfigError) as info:
        load_config_string(text)
    assert info.value.errors == (
        FieldError(f"lifetimes.{field}", "must be a finite number of seconds (not .nan or .inf)"),
    )


def test_a_nan_jitter_must_be_finite() -> None:
    text = yaml.safe_dump(minimal()) + "lifetimes: {jitter: .nan}\n"
    with pytest.raises(ConfigError) as info:
        load_config_string(text)
    assert info.value.errors == (FieldError("lifetimes.jitter", "must be a finite number"),)


@pytest.mark.parametrize("seconds", [0.0, 1.0, 90.0, 5400.0, 86400.0 + 61, 0.25])
def test_formatted_durations_read_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [(1000, 1000), ("1k", 1000), ("500M", 500 * 10**6), ("4Gi", 4 * 2**30)]
)
def test_sizes_are_read_as_kubernetes_quantities(text: object, size: int) -> None:
    assert parse_size(text) == size


# --- the prose page -------------------------------------------------------------------------

DOC_PAGE = SCHEMA_FILE.parent / "sidecar-config.md"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_the_prose_page_shows_every_example_verbatim(path: Path) -> None:
    assert path.read_text().rstrip("\n") in DOC_PAGE.read_text()


def test_the_prose_page_documents_every_field() -> None:
    from kipsec_sidecar.config import model
    from kipsec_sidecar.config.fields import Model

    page = DOC_PAGE.read_text()
    models = [
        value
        for value in vars(model).values()
        if isinstance(value, type) and issubclass(value, Model) and value is not Model
    ]
    assert len(models) > 20
    missing = [
        f"{m.__name__}.{field.alias}"
        for m in models
        for field in m.model_fields.values()
        if f"`{field.alias}" not in page and f".{field.alias}`" not in page
    ]
    assert not missing, f"fields not documented in {DOC_PAGE.name}: {missing}"


def test_one_datapath_process_is_the_default_and_auto_follows_the_cores() -> None:
    assert userspace_workers(load_config_data(minimal())) == 1
    auto = load_config_data({**minimal(), "datapathWorkers": "auto"})
    assert userspace_workers(auto, cores=2) == 2
    assert userspace_workers(auto, cores=1) == 1
    assert userspace_workers(load_config_data({**minimal(), "datapathWorkers": 2})) == 2


def test_two_datapath_workers_refuse_raw_esp_and_several_addresses_naming_the_field() -> None:
    assert only_error({**minimal(), "datapathWorkers": 2, "encapsulation": "raw"}) == (
        "datapathWorkers",
        "2 carries ESP in UDP only; peers[0] uses encapsulation raw",
    )
    two = {**minimal(), "datapathWorkers": 2}
    two["local"]["addresses"] = ["10.0.0.1", "fd00::1"]
    assert only_error(two) == ("datapathWorkers", "2 needs exactly one local address")
    assert only_error({**minimal(), "datapathWorkers": 3})[0] == "datapathWorkers"


# --- ikeVersion ----------------------------------------------------------------------


def v1_document(**peer: Any) -> dict[str, Any]:
    doc = minimal()
    doc["peers"][0].update(peer)
    return doc


def v1_ike_of(doc: dict[str, Any], files: ExampleFiles | None = None) -> IkeConfig:
    (plan,) = to_core(load_config_data(doc), read_file=(files or ExampleFiles()).read)
    assert plan.ike is not None
    return plan.ike


def test_ike_version_defaults_to_2_and_1_is_carried_to_the_core() -> None:
    assert v1_ike_of(v1_document()).version == 2
    assert v1_ike_of(v1_document(ikeVersion=1)).version == 1


def test_an_unknown_ike_version_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_data(v1_document(ikeVersion=3))
    assert info.value.paths == ("peers[0].ikeVersion",)


def test_an_ikev1_peer_without_written_ike_proposals_offers_cbc_suites() -> None:
    ike = v1_ike_of(v1_document(ikeVersion=1))
    assert len(ike.proposals) == len(DEFAULT_IKEV1_PROPOSALS)
    assert all(not e.aead for p in ike.proposals for e in p.encryption)
    assert [p.dh for p in ike.proposals] == [(DhGroup.MODP_2048,), (DhGroup.ECP_256,)]
    # An IKEv2 peer of the same document keeps the IKEv2 default (AES-GCM).
    assert v1_ike_of(v1_document()).proposals[0].encryption[0].encr_id == EncrId.AES_GCM_16


def test_written_ike_proposals_are_used_for_ikev1() -> None:
    doc = v1_document(ikeVersion=1, proposals={"ike": ["aes128-sha256-ecp256"]})
    (proposal,) = v1_ike_of(doc).proposals
    assert proposal.encryption[0].key_bits == 128 and proposal.dh == (DhGroup.ECP_256,)


def test_an_aead_ike_proposal_is_refused_for_ikev1() -> None:
    doc = v1_document(ikeVersion=1, proposals={"ike": ["aes256gcm16-prfsha256-ecp256"]})
    with pytest.raises(ConfigError) as info:
        v1_ike_of(doc)
    (error,) = info.value.errors
    assert error.path == "peers[0]"
    assert "ike.proposals[0].encryption" in error.message and "AEAD" in error.message


def test_eddsa_certificates_are_refused_for_ikev1() -> None:
    files = ExampleFiles()
    root = CertificateAuthority.root("ed CA")
    leaf = root.issue("pod-a", key_kind="ed25519", ips=["10.0.0.1"])
    files.files["/c/tls.crt"] = leaf.cert.public_bytes(Encoding.PEM)
    files.files["/c/tls.key"] = leaf.key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    files.files["/c/ca.crt"] = root.cert.public_bytes(Encoding.PEM)

    def with_certificate(version: int) -> dict[str, Any]:
        doc = v1_document(ikeVersion=version)
        doc["local"]["auth"] = {
            "certificate": {
                "certFile": "/c/tls.crt",
                "keyFile": "/c/tls.key",
                "caFiles": ["/c/ca.crt"],
            }
        }
        return doc

    assert v1_ike_of(with_certificate(2), files).version == 2  # the same key serves IKEv2
    with pytest.raises(ConfigError) as info:
        v1_ike_of(with_certificate(1), files)
    (error,) = info.value.errors
    assert "EdDSA" in error.message and "auth.private_key" in error.message


def test_the_core_config_refuses_version_0() -> None:
    base = v1_ike_of(v1_document())
    with pytest.raises(LocalProtocolError, match=r"ike\.version"):
        IkeConfig(auth=base.auth, children=base.children, version=0)  # type: ignore[arg-type]
