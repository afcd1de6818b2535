"""The sidecar configuration document (`apiVersion: kipsec.io/v1alpha1`, `kind: SidecarConfig`).

One document per pod, written by the operator (or by hand for a standalone sidecar) and
read by `kipsec-sidecar run --config FILE`. These models are the single source of the
document's shape: validation, the committed JSON Schema (`docs/sidecar-config.schema.json`,
from :mod:`kipsec_sidecar.config.schema`) and the prose page (`docs/sidecar-config.md`)
all follow them.

Conventions a reader of the code must know:

* The models are written on :mod:`.fields`, the project's own small layer, not pydantic:
  importing pydantic and building its models cost every sidecar start ~0.28 s of CPU
  and ~13 MiB (``bench/sidecar_startup.py``). The layer keeps pydantic's lax coercions and its
  messages (an int field takes `"12"` and `2.0`, a bool field `yes`), so a document
  means what it meant; :mod:`.fields` lists them.
* Keys are camelCase in the document (`trafficSelectors`), snake_case in Python.
  Unknown keys are errors, so a typo never silently falls back to a default.
* Durations are stored as float seconds, sizes as int; the document may write
  `"4h"`/`"1Gi"` (:mod:`.units`).
* Secrets (inline PSKs and manual keys) are :class:`.fields.SecretStr`: never shown by
  `repr`, `str` or `model_dump_json`, and validation errors never echo input.
* Checks that need more than one field (unique peer names, AH with UDP
  encapsulation, merged per-peer lifetimes, ...) live in :mod:`.checks` and run in
  :func:`kipsec_sidecar.config.load.load_config_data`; always load documents through
  :mod:`.load`, not with `SidecarConfig.model_validate` alone.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Any, Literal, TypeVar

from .fields import (
    After,
    Before,
    Field,
    JsonSchema,
    Model,
    Private,
    SecretStr,
    Serializer,
    model_check,
    to_camel,
)
from .proposals import parse_child_proposal, parse_ike_proposal
from .psk import MIN_PSK_LENGTH, psk_bytes
from .units import DURATION_PATTERN, SIZE_PATTERN, format_duration, parse_duration, parse_size

API_VERSION = "kipsec.io/v1alpha1"
KIND = "SidecarConfig"

#: With `start: auto` a document with at most this many peers initiates to all of them
#: at start; a larger one initiates on demand (when traffic for the peer first arrives).
AUTO_START_MAX_PEERS = 16

IKE_PORT = 500
DEFAULT_CONTROL_SOCKET = "/run/kipsec/control.sock"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9585"
MAX_UNIX_SOCKET_PATH = 107  # sun_path is 108 bytes including the NUL
#: File names of an operator-issued identity (`certificate.source: operator`).
IDENTITY_CERT_FILE = "tls.crt"
IDENTITY_KEY_FILE = "tls.key"


# --- scalar types ---------------------------------------------------------------------


def _duration(value: object) -> float:
    return parse_duration(value)


def _size(value: object) -> int:
    return parse_size(value)


Duration = Annotated[
    float,
    Before(_duration),
    Serializer(format_duration, json_only=True),
    JsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "seconds, or a duration such as '90s', '30m', '4h', '1h30m'",
        }
    ),
]
"""Seconds (float) in Python; a number of seconds or a duration string in the document."""

Size = Annotated[
    int,
    Before(_size),
    JsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": "a positive count, or a quantity such as '500M' or '4Gi'",
        }
    ),
]


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"not an IP address: {value[:60]!r}") from None


IpAddress = Annotated[
    str,
    After(_ip),
    JsonSchema(
        {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]}
    ),
]

Path = Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")]
"""A file path; a relative path is relative to the directory holding the document."""

PortNumber = Annotated[int, Field(ge=1, le=65535)]


def _hex_key(value: SecretStr) -> SecretStr:
    text = value.get_secret_value().strip().lower().removeprefix("0x").replace(":", "")
    try:
        bytes.fromhex(text)
    except ValueError:
        raise ValueError("not a hexadecimal key (the value is not shown)") from None
    return SecretStr(text)


def _key_not_number(value: object) -> object:
    if isinstance(value, int | float):
        raise ValueError(
            "must be a quoted string: YAML read this key as a number (the value is not shown)"
        )
    return value


HexKey = Annotated[SecretStr, Before(_key_not_number), After(_hex_key)]
"""A secret key in hexadecimal (`0x` prefix and `:` separators allowed)."""


def _spi(value: object) -> object:
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return int(text, 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            raise ValueError(f"not an SPI: {value[:20]!r}; write e.g. 0x1000 or 4096") from None
    return value


Spi = Annotated[
    int,
    Before(_spi),
    Field(ge=256, le=0xFFFFFFFF),
    JsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 256, "maximum": 0xFFFFFFFF},
                {"type": "string", "pattern": "^(0[xX][0-9a-fA-F]{1,8}|[0-9]{3,10})$"},
            ],
            "description": "256-0xffffffff (1-255 are reserved), decimal or 0x-hex",
        }
    ),
]


def _ike_proposal(value: str) -> str:
    # SHA-1 passes here and is refused for IKEv2 peers by checks (it needs the peer).
    parse_ike_proposal(value, legacy_sha1=True)
    return value


def _esp_proposal(value: str) -> str:
    parse_child_proposal(value, "esp")
    return value


def _ah_proposal(value: str) -> str:
    parse_child_proposal(value, "ah")
    return value


IkeProposalText = Annotated[str, After(_ike_proposal)]
EspProposalText = Annotated[str, After(_esp_proposal)]
AhProposalText = Annotated[str, After(_ah_proposal)]


def _exactly_one(model: Model, names: tuple[str, ...], what: str) -> None:
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) != 1:
        aliases = ", ".join(to_camel(n) for n in names)
        found = f" (found {', '.join(to_camel(n) for n in given)})" if given else ""
        raise ValueError(f"give exactly one of {aliases}{found}")


# --- identity and authentication --------------------------------------------------------

_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_FQDN = rf"^{_LABEL}(\.{_LABEL})*\.?$"
_EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,253}$"


def _dn(value: str) -> str:
    # Here, not at the top: cryptography.x509 (~2 MiB) loads only for a DN identity.
    from cryptography import x509

    try:
        x509.Name.from_rfc4514_string(value).public_bytes()
    except Exception:  # cryptography raises several types for bad DNs
        raise ValueError(
            f"not an RFC 4514 distinguished name: {value[:60]!r}; write e.g. 'CN=pod-a,O=kipsec'"
        ) from None
    return value


class Identity(Model):
    """An IKE identity: exactly one of the fields.

    With certificates the identity must name the certificate (a dNSName, rfc822Name or
    iPAddress SAN, or the subject DN).
    """

    fqdn: Annotated[str, Field(max_length=253, pattern=_FQDN)] | None = None
    """A DNS name (ID_FQDN)."""
    address: IpAddress | None = None
    """An IPv4 or IPv6 address (ID_IPV4_ADDR / ID_IPV6_ADDR)."""
    email: Annotated[str, Field(pattern=_EMAIL)] | None = None
    """An email-style name, user@domain (ID_RFC822_ADDR)."""
    dn: Annotated[str, After(_dn)] | None = None
    """An X.500 distinguished name in RFC 4514 form, e.g. 'CN=pod-a,O=kipsec' (ID_DER_ASN1_DN)."""
    key_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    """An opaque key identifier, for PSK authentication only (ID_KEY_ID)."""

    @model_check
    def _one(self) -> Identity:
        _exactly_one(self, ("fqdn", "address", "email", "dn", "key_id"), "identity")
        return self


def _psk_value(value: SecretStr) -> SecretStr:
    try:
        psk_bytes(value.get_secret_value().encode("utf-8"))
    except ValueError as exc:
        raise ValueError(f"the key {exc}") from None
    return value


class Psk(Model):
    """A pre-shared key: a file holding it (production) or the value itself (tests only)."""

    secret_file: Path | None = None
    """File holding the key (e.g. a mounted Kubernetes Secret): raw bytes, or `0x` +
    hex or `0s` + base64 for a binary key (as strongSwan's swanctl.conf). Exactly one
    trailing newline (`\\n` or `\\r\\n`) is ignored; nothing else is stripped. A regular
    file of at most 1 MiB; at least 8 bytes of key."""
    value: Annotated[SecretStr, After(_psk_value)] | None = None
    """The key itself, UTF-8, with the same `0x`/`0s` forms. For tests only: it sits
    in the document in clear."""

    @model_check
    def _one(self) -> Psk:
        _exactly_one(self, ("secret_file", "value"), "psk")
        return self


class Certificate(Model):
    """X.509 authentication: our certificate and key, the CAs we trust for the peers."""

    cert_file: Path
    """PEM file with our end-entity certificate (further certificates in it are sent as
    intermediates)."""
    key_file: Path
    """PEM file with our unencrypted private key (RSA, ECDSA, Ed25519, Ed448 or DSA)."""
    ca_files: Annotated[list[Path], Field(min_length=1)]
    """PEM files with the trust anchors that peers' certificates must chain to."""
    intermediate_files: list[Path] = []
    """PEM files with intermediate CA certificates sent after ours."""
    source: Literal["files", "operator"] = "files"
    """Who provides `certFile` and `keyFile`. files: they are given (e.g. a mounted
    Secret). operator: the sidecar generates the private key in the pod, gets the
    certificate from the kipsec operator's CSR endpoint ($KIPSEC_OPERATOR_URL, with the
    pod's token from $KIPSEC_TOKEN_FILE) before IKE starts, writes both files itself
    (they must be `tls.crt` and `tls.key` of one directory) and renews them before they
    expire without disturbing established SAs (docs/identities.md)."""
    peer_trust: Literal["caFiles", "own"] = "caFiles"
    """Whom the peer trusts for our certificate. caFiles: the same anchors as we do (kipsec
    pods of one TunnelCertificate), so with source operator a new certificate is used
    only once it chains to `caFiles`, as the peer will check it. own: the peer has its
    own trust store (an external gateway that trusts the operator's CA while `caFiles`
    holds the gateway's CA), so `caFiles` says nothing about our certificate."""
    public_key_encryption: Literal["rsa", "revised"] | None = None
    """IKEv1 only: authenticate by public-key encryption instead of signatures (RFC 2409
    5.2 `rsa`, method 4; 5.3 `revised`, method 5): each side encrypts its nonce and
    identity to the other's RSA key, so `peerCertFile` must be given and both keys must
    be RSA. No strongSwan speaks it; see docs/ikev1.md."""
    peer_cert_file: Path | None = None
    """PEM file with the peer's certificate (RSA), known in advance: required with
    `publicKeyEncryption`, and it must still chain to `caFiles`."""

    @model_check
    def _peer_certificate(self) -> Certificate:
        if self.public_key_encryption is not None and self.peer_cert_file is None:
            raise ValueError("peerCertFile: required with publicKeyEncryption")
        if self.peer_cert_file is not None and self.public_key_encryption is None:
            raise ValueError("peerCertFile: only used with publicKeyEncryption")
        return self

    @model_check
    def _operator_files(self) -> Certificate:
        if self.source == "operator":
            directory, name = os.path.split(self.cert_file)
            if name != IDENTITY_CERT_FILE:
                raise ValueError(
                    f"certFile: with source operator it must be <dir>/{IDENTITY_CERT_FILE}"
                )
            if self.key_file != os.path.join(directory, IDENTITY_KEY_FILE):
                raise ValueError(
                    f"keyFile: with source operator it must be {IDENTITY_KEY_FILE} in the "
                    f"directory of certFile ({os.path.join(directory, IDENTITY_KEY_FILE)})"
                )
        return self


class Auth(Model):
    """How this side authenticates: exactly one of `psk` or `certificate`."""

    psk: Psk | None = None
    certificate: Certificate | None = None

    @model_check
    def _one(self) -> Auth:
        _exactly_one(self, ("psk", "certificate"), "auth")
        return self

    @property
    def method(self) -> Literal["psk", "certificate"]:
        return "psk" if self.psk is not None else "certificate"


class Local(Model):
    """This side: who it is, its addresses and its authentication material."""

    identity: Identity | None = None
    """Our IKE identity. Default: the subject DN of our certificate, or, with a PSK, the
    local address of the peer's IP version."""
    addresses: Annotated[list[IpAddress], Field(min_length=1)]
    """Our addresses (the pod IPs): IKE and the SAs use the one of the peer's IP version."""
    auth: Auth | None = None
    """Our authentication for IKE peers (a peer's own `auth` replaces it). Not needed when
    every peer is manually keyed."""


# --- traffic selectors -------------------------------------------------------------------

PROTOCOL_NAMES: dict[str, int] = {
    "any": 0,
    "icmp": 1,
    "tcp": 6,
    "udp": 17,
    "ipv6-icmp": 58,
    "icmpv6": 58,
    "sctp": 132,
    "udplite": 136,
}
PORT_PROTOCOLS = frozenset({6, 17, 132, 136})


def _protocol(value: object) -> object:
    if isinstance(value, str):
        number = PROTOCOL_NAMES.get(value.strip().lower())
        if number is None:
            raise ValueError(
                f"unknown protocol {value[:20]!r}; use {', '.join(PROTOCOL_NAMES)} or 0-255"
            )
        return number
    return value


def _ports(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("must be a port or a range such as 8000-8080")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        low, sep, high = value.strip().partition("-")
        try:
            start = int(low)
            end = int(high) if sep else start
        except ValueError:
            raise ValueError(
                f"not a port range: {value[:20]!r}; write e.g. 443 or 8000-8080"
            ) from None
        return (start, end)
    return value


def _port_range(value: tuple[int, int]) -> tuple[int, int]:
    start, end = value
    if not 0 <= start <= end <= 65535:
        raise ValueError(f"port range {start}-{end} is not within 0-65535 in ascending order")
    return value


def _format_ports(value: tuple[int, int]) -> str | int:
    return value[0] if value[0] == value[1] else f"{value[0]}-{value[1]}"


PortRange = Annotated[
    tuple[int, int],
    Before(_ports),
    After(_port_range),
    Serializer(_format_ports),
    JsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": 65535},
                {"type": "string", "pattern": "^[0-9]{1,5}(-[0-9]{1,5})?$"},
            ],
            "description": "a port (443) or an inclusive range (8000-8080)",
        }
    ),
]


def _cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"not a CIDR: {value[:60]!r}; write e.g. 10.0.1.0/24 or 10.0.1.7"
        ) from None
    if str(network.network_address) != value.strip().split("/")[0] and "/" in value:
        raise ValueError(f"{value[:60]!r} has host bits set; did you mean {network}?")
    return str(network)


Cidr = Annotated[str, After(_cidr)]


class TrafficSelector(Model):
    """Which traffic: a CIDR block, optionally one IP protocol and a port range."""

    cidr: Cidr
    """Addresses: a CIDR block (10.0.1.0/24) or a single address (10.0.1.7)."""
    protocol: Annotated[
        int,
        Before(_protocol),
        Field(ge=0, le=255),
        JsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": 0, "maximum": 255},
                    {"type": "string", "enum": list(PROTOCOL_NAMES)},
                ]
            }
        ),
    ] = 0
    """IP protocol by name (tcp, udp, icmp, ...) or number; any (0) by default."""
    ports: PortRange | None = None
    """Port or port range; only with protocol tcp, udp, sctp or udplite. All by default."""

    @model_check
    def _ports_need_protocol(self) -> TrafficSelector:
        if self.ports is not None and self.protocol not in PORT_PROTOCOLS:
            raise ValueError("ports need protocol tcp, udp, sctp or udplite")
        return self


def _selector(value: object) -> object:
    if isinstance(value, str):
        return {"cidr": _cidr(value)}
    return value


SelectorEntry = Annotated[
    TrafficSelector,
    Before(_selector, json_input=Cidr | TrafficSelector),
]
"""A selector written as a CIDR string or as a {cidr, protocol, ports} mapping."""


class TrafficSelectors(Model):
    """The traffic the peer link protects: ours (local) and the peer's (remote)."""

    local: Annotated[list[SelectorEntry], Field(min_length=1)]
    remote: Annotated[list[SelectorEntry], Field(min_length=1)]


# --- manual keying -----------------------------------------------------------------------


class ManualKeys(Model):
    """Hex keys of a manually keyed SA pair; `In` protects traffic from the peer.

    AEAD ciphers (aes*gcm16, chacha20poly1305) take key plus 4-byte salt: 36 bytes for
    aes256gcm16. `integrity*` only with a non-AEAD cipher or AH.
    """

    encryption_in: HexKey | None = None
    encryption_out: HexKey | None = None
    integrity_in: HexKey | None = None
    integrity_out: HexKey | None = None


class Manual(Model):
    """Keys and SPIs of a manually keyed peer (no IKE): both sides must mirror each other.

    Our `spiIn` is the peer's `spiOut` and our `keys.encryptionIn` its
    `encryptionOut`.
    """

    spi_in: Spi
    """SPI of the SA that carries traffic from the peer to us."""
    spi_out: Spi
    """SPI of the SA that carries traffic from us to the peer."""
    encryption: str | None = None
    """One cipher (ESP only), e.g. aes256gcm16; same names as proposals."""
    integrity: str | None = None
    """One integrity algorithm: for AH, or with a non-AEAD cipher (aes256 + sha256)."""
    esn: bool = False
    """Extended (64-bit) sequence numbers."""
    replay_window: Annotated[int, Field(ge=0, le=65536)] = 1024
    """Anti-replay window in packets (0 disables replay protection)."""
    keys_file: Path | None = None
    """YAML or JSON file holding the `keys` mapping (e.g. a mounted Kubernetes Secret)."""
    keys: ManualKeys | None = None
    """The keys inline. For tests only: they sit in the document in clear."""

    @model_check
    def _one(self) -> Manual:
        _exactly_one(self, ("keys_file", "keys"), "manual")
        return self


# --- proposals, lifetimes, liveness --------------------------------------------------------

DEFAULT_IKE_PROPOSALS = ("aes256gcm16-prfsha256-x25519",)
#: What an `ikeVersion: 1` peer offers when no `proposals.ike` is written anywhere: IKEv1
#: has no AEAD cipher for the ISAKMP SA (RFC 2409), so the IKEv2 default cannot serve.
DEFAULT_IKEV1_PROPOSALS = ("aes256-sha256-modp2048", "aes256-sha256-ecp256")
DEFAULT_ESP_PROPOSALS = ("aes256gcm16",)
DEFAULT_AH_PROPOSALS = ("sha256",)


class Proposals(Model):
    """Algorithms offered and accepted, most preferred first, strongSwan syntax.

    In a peer's `proposals` only the lists written there replace the document's.
    """

    ike: Annotated[list[IkeProposalText], Field(min_length=1)] = list(DEFAULT_IKE_PROPOSALS)
    """IKE SA proposals: cipher[-integrity][-prf]-dhgroup, e.g. aes256gcm16-prfsha256-x25519."""
    esp: Annotated[list[EspProposalText], Field(min_length=1)] = list(DEFAULT_ESP_PROPOSALS)
    """ESP proposals: an AEAD cipher, or a cipher with integrity; a DH group adds PFS."""
    ah: Annotated[list[AhProposalText], Field(min_length=1)] = list(DEFAULT_AH_PROPOSALS)
    """AH proposals: an integrity algorithm; a DH group adds PFS."""


class Lifetimes(Model):
    """How long SAs live: each is rekeyed `rekeyMargin` (minus jitter) before it expires.

    In a peer's `lifetimes` only the fields written there replace the document's.
    """

    ike_sa: Annotated[Duration, Field(gt=0)] = 4 * 3600.0
    """Hard lifetime of the IKE SA."""
    child_sa: Annotated[Duration, Field(gt=0)] = 3600.0
    """Hard lifetime of each child (ESP/AH) SA."""
    rekey_margin: Duration = 540.0
    """Rekeying starts this long before the hard lifetime ends (make-before-break)."""
    jitter: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Random fraction (0 to <1) by which the rekey time is brought forward, so that two
    peers do not rekey at the same moment."""
    bytes: Size | None = None
    """Hard limit of bytes per child SA; rekeyed at 90 %. Unlimited by default."""
    packets: Size | None = None
    """Hard limit of packets per child SA; rekeyed at 90 %. Unlimited by default."""


class Liveness(Model):
    """Dead peer detection.

    In a peer's `liveness` only the fields written there replace the document's.
    """

    interval: Duration = 30.0
    """Idle time after which the peer is probed (0 disables probes)."""
    timeout: Annotated[Duration, Field(gt=0)] = 120.0
    """How long a request may go unanswered (retransmitted at 4 s, then 1.8 times longer
    each time) before the peer is declared dead."""


class NatTraversal(Model):
    """NAT detection (RFC 7296 section 2.23) and UDP encapsulation when a NAT is found."""

    enabled: bool = True
    keepalive: Duration = 20.0
    """Interval of NAT keepalives (RFC 3948: one 0xFF byte from port 4500 to each peer
    of an IKE SA that found this side behind a NAT), so the NAT keeps its mapping while
    no traffic flows; 0 disables them. Reloadable."""


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"not host:port: {value[:60]!r}; write e.g. 127.0.0.1:9585")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError(
            f"not an address:port: {value[:60]!r}; write e.g. 127.0.0.1:9585 or [::]:9585"
        ) from None
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is not within 1-65535")
    return value


class Metrics(Model):
    """The Prometheus endpoint (/metrics, /healthz, /readyz)."""

    enabled: bool = True
    listen: Annotated[str, After(_listen)] = DEFAULT_METRICS_LISTEN
    """address:port to serve on ([::]:9585 for IPv6)."""


def _socket_path(value: str) -> str:
    if not os.path.isabs(value):
        raise ValueError(f"must be an absolute path: {value[:60]!r}")
    if len(value.encode()) > MAX_UNIX_SOCKET_PATH:
        raise ValueError(f"a Unix socket path holds at most {MAX_UNIX_SOCKET_PATH} bytes")
    return value


class Control(Model):
    """The local control socket used by `kipsec-sidecar sas|initiate|rekey|...`."""

    socket: Annotated[str, After(_socket_path)] = DEFAULT_CONTROL_SOCKET


class Logging(Model):
    """Structured logs on stderr, one line per event; never a key, PSK or nonce."""

    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


# --- peers and the document ----------------------------------------------------------------

Mode = Literal["tunnel", "transport"]
Protocol = Literal["esp", "ah"]
Keying = Literal["ike", "manual"]
IkeVersion = Literal[1, 2]
Start = Literal["auto", "onStart", "onDemand", "none"]
Action = Literal["none", "onDemand", "restart"]
"""What to do when a peer's SAs are lost (deleted by the peer, or the peer found dead):
none, re-establish on the next packet (onDemand), or re-establish without waiting for
traffic (restart: after about 1 s, then with backoff while it fails)."""
Encapsulation = Literal["udp", "raw", "auto"]
Datapath = Literal["auto", "userspace", "kernel"]

_M = TypeVar("_M", bound=Model)

_PEER_NAME = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$"


class Peer(Model):
    """One peer this pod talks to, and how the link to it is protected."""

    name: Annotated[str, Field(pattern=_PEER_NAME)]
    """Unique name (the operator uses namespace/pod); names the child SA and metrics."""
    address: IpAddress
    """The peer's address (its pod IP): where IKE and the SAs go."""
    port: PortNumber = IKE_PORT
    """The peer's IKE port."""
    identity: Identity | None = None
    """The identity the peer must prove. Unset: any identity that authenticates (with
    certificates, any certificate from the trusted CAs)."""
    auth: Auth | None = None
    """This side's authentication towards this peer, replacing `local.auth`."""
    traffic_selectors: TrafficSelectors | None = None
    """Protected traffic. Default: our address to the peer's address, all protocols."""
    mode: Mode = "tunnel"
    protocol: Protocol = "esp"
    keying: Keying = "ike"
    ike_version: IkeVersion = 2
    """2 (IKEv2) or 1 (IKEv1: ISAKMP main mode and quick mode, for legacy peers that speak
    nothing else). IKEv1 is deprecated (RFC 9395): opt in per peer, see docs/ikev1.md.
    With 1, a `proposals.ike` naming sha1 (e.g. aes128-sha1-modp2048) is accepted, with a
    warning in the log and the peer status; refused for IKEv2."""
    manual: Manual | None = None
    """Keys and SPIs, required with `keying: manual`."""
    start: Start = "auto"
    """When to initiate: onStart, onDemand (on the first packet for the peer, queued
    meanwhile), none (never: only answer the peer's IKE; traffic for the peer without
    an SA is dropped) or auto (onStart up to 16 peers, onDemand above). strongSwan's
    start_action start / trap / none."""
    close_action: Action | None = None
    """What to do when the peer deletes the IKE SA or the child SA: none (stay down
    until the peer or `kipsec-sidecar initiate` brings it back), onDemand (re-establish
    on the next packet) or restart (re-establish without waiting for traffic, after about
    1 s). strongSwan's close_action none / trap / start. Unset: what `start` implies,
    restart for onStart, onDemand for onDemand, none for none."""
    dpd_action: Action | None = None
    """What to do when liveness declares the peer of an established IKE SA dead (a request
    unanswered for `liveness.timeout`): none, onDemand or restart, as for `closeAction`.
    An initiation that gets no answer is not covered: `start` decides its retries.
    strongSwan's dpd_action clear / trap / restart. Unset: what `start` implies, as for
    `closeAction`."""
    encapsulation: Encapsulation | None = None
    """Replaces the document's `encapsulation` for this peer."""
    proposals: Proposals | None = None
    lifetimes: Lifetimes | None = None
    liveness: Liveness | None = None


# --- Services (ClusterIP → protected endpoints, translated in the pod) --------------------


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


class ServiceEndpoint(Model):
    """One backend of a Service port: a protected peer's address and the port it serves on."""

    address: IpAddress
    """The endpoint's pod address: a peer's address, so the translated traffic goes through
    that peer's SA."""
    target_port: PortNumber
    """The port the endpoint listens on (the Service's targetPort, resolved per endpoint
    as its EndpointSlice lists it)."""


class ServicePort(Model):
    """One port of a Service and the endpoints that serve it."""

    port: PortNumber
    """The port clients connect to on the ClusterIP."""
    protocol: Annotated[Literal["tcp", "udp", "sctp"], Before(_lower)] = "tcp"
    """tcp, udp or sctp (Kubernetes' TCP/UDP/SCTP, any case)."""
    endpoints: list[ServiceEndpoint] = []
    """Where new connections go, chosen at random per connection. A ClusterIP whose IP
    version has none of them rejects new connections (as kube-proxy does for a Service
    without endpoints): traffic this pod should protect is never sent in clear."""


_SERVICE_NAME = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$"


class Service(Model):
    """A Service whose ClusterIP the sidecar translates inside the pod (kernel NAT).

    kube-proxy rewrites a ClusterIP to a pod address only after the packet has left the
    pod, past the point where the sidecar protects traffic by pod address; translating
    in the pod's own namespace first lets that traffic match the peer's SA.
    """

    name: Annotated[str, Field(pattern=_SERVICE_NAME)]
    """Unique name (the operator uses namespace/name); shown in the NAT rules' comments."""
    cluster_ips: Annotated[list[IpAddress], Field(min_length=1, max_length=2, alias="clusterIPs")]
    """The Service's ClusterIPs: one, or one IPv4 and one IPv6 (dual stack). Each is
    translated to the endpoints of its own IP version."""
    ports: Annotated[list[ServicePort], Field(min_length=1)]


def _mtu(value: object) -> object:
    if isinstance(value, str):
        if value.strip() == "auto":
            return None
        raise ValueError("must be 'auto' or a number of bytes (576-65535)")
    return value


def _format_mtu(value: int | None) -> int | str:
    return "auto" if value is None else value


class SidecarConfig(Model):
    """The whole document; see docs/sidecar-config.md for every field with examples."""

    api_version: Literal["kipsec.io/v1alpha1"]
    """Version of this document format."""
    kind: Literal["SidecarConfig"]
    local: Local
    peers: list[Peer] = []
    proposals: Proposals = Proposals()
    lifetimes: Lifetimes = Lifetimes()
    liveness: Liveness = Liveness()
    datapath: Datapath = "auto"
    """Where ESP/AH is applied: kernel (XFRM), userspace (TUN) or auto (kernel when the
    kernel supports the SAs, else userspace)."""
    datapath_workers: Literal[1, 2, "auto"] = 1
    """Processes of the userspace datapath: 1 (one process does everything), 2 (outbound
    sealing in a worker process, inbound in the sidecar) or auto (2 on a machine with two
    or more cores). 2 needs ESP in UDP and one local address."""
    fail_closed_on_exit: bool = False
    """Keep the peers' traffic blocked after the sidecar exits, also on SIGTERM, until
    it runs again and takes over: the kernel datapath leaves its XFRM policies (without
    SAs the kernel drops the packets), the userspace datapath its blackhole routes and
    inbound filter. Keys are removed either way. On for sidecars in pods (the operator
    sets it: a restarted sidecar container must not let the application's traffic out
    in clear); off by default, so a sidecar on a host leaves nothing behind."""
    encapsulation: Encapsulation = "udp"
    """ESP on the wire: udp (UDP 4500, RFC 3948; crosses NATs), raw (IP protocol 50/51;
    needs NET_RAW; required for AH) or auto (raw unless a NAT is detected)."""
    nat_traversal: NatTraversal = NatTraversal()
    mtu: Annotated[
        Annotated[int, Field(ge=576, le=65535)] | None,
        Before(_mtu),
        Serializer(_format_mtu),
        JsonSchema(
            {
                "anyOf": [
                    {"const": "auto"},
                    {"type": "integer", "minimum": 576, "maximum": 65535},
                ]
            }
        ),
    ] = None
    """Path MTU to plan for: auto (the interface's MTU) or a number of bytes. The tunnel
    MTU is this minus the overhead of the chosen algorithms."""
    services: list[Service] = []
    """Services whose ClusterIP:port this pod's traffic reaches through peers: translated
    to the endpoints inside the pod, so that traffic is protected too. Reloadable; a
    change touches no peer's SAs."""
    metrics: Metrics = Metrics()
    control: Control = Control()
    logging: Logging = Logging()

    _base_dir = Private()
    """The directory of the document's file (set by :mod:`.load`), for relative paths."""

    def to_document(self) -> dict[str, Any]:
        """The document form (camelCase, JSON types) of this configuration, for writing.

        Only fields that were set are written, which keeps a peer's partial overrides
        (`lifetimes`, `proposals`, `liveness`) partial: dumping every field would turn
        the document's defaults into per-peer values. Inline secrets come out masked
        (`**********`); documents meant to be written should use `secretFile` and
        `keysFile`.
        """
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    # --- effective per-peer settings (document values with the peer's overrides) -----

    def resolve_path(self, path: str) -> str:
        """`path` made absolute against the directory of the document it came from."""
        if os.path.isabs(path) or self._base_dir is None:
            return path
        return os.path.join(self._base_dir, path)

    def peer(self, name: str) -> Peer:
        """The peer called `name`; KeyError if there is none."""
        for p in self.peers:
            if p.name == name:
                return p
        raise KeyError(name)

    def auth_for(self, peer: Peer) -> Auth | None:
        """The peer's own `auth`, else `local.auth` (None only for manual peers)."""
        return peer.auth if peer.auth is not None else self.local.auth

    def proposals_for(self, peer: Peer) -> Proposals:
        merged = _merge(self.proposals, peer.proposals)
        if peer.ike_version == 1 and not self._ike_proposals_written(peer):
            return merged.model_copy(update={"ike": list(DEFAULT_IKEV1_PROPOSALS)})
        return merged

    def _ike_proposals_written(self, peer: Peer) -> bool:
        """Whether `proposals.ike` was written for `peer` (its own or the document's)."""
        return any(
            p is not None and "ike" in p.model_fields_set for p in (peer.proposals, self.proposals)
        )

    def lifetimes_for(self, peer: Peer) -> Lifetimes:
        return _merge(self.lifetimes, peer.lifetimes)

    def liveness_for(self, peer: Peer) -> Liveness:
        return _merge(self.liveness, peer.liveness)

    def encapsulation_for(self, peer: Peer) -> Encapsulation:
        return peer.encapsulation if peer.encapsulation is not None else self.encapsulation

    def start_for(self, peer: Peer) -> Literal["onStart", "onDemand", "none"]:
        """`auto` resolved: onStart for up to :data:`AUTO_START_MAX_PEERS` peers."""
        if peer.start != "auto":
            return peer.start
        return "onStart" if len(self.peers) <= AUTO_START_MAX_PEERS else "onDemand"

    def close_action_for(self, peer: Peer) -> Action:
        """`closeAction`, or what the resolved `start` implies when unset."""
        if peer.close_action is not None:
            return peer.close_action
        return implied_action(self.start_for(peer))

    def dpd_action_for(self, peer: Peer) -> Action:
        """`dpdAction`, or what the resolved `start` implies when unset."""
        if peer.dpd_action is not None:
            return peer.dpd_action
        return implied_action(self.start_for(peer))

    def local_address_for(self, peer: Peer) -> str | None:
        """Our first address of the peer's IP version, or None when we have none."""
        version = ipaddress.ip_address(peer.address).version
        for address in self.local.addresses:
            if ipaddress.ip_address(address).version == version:
                return address
        return None


def implied_action(start: Literal["onStart", "onDemand", "none"]) -> Action:
    """The close and dead-peer action a resolved `start` implies: what the sidecar did
    before `closeAction` and `dpdAction` existed (onStart peers re-initiate, onDemand
    peers wait for traffic), and nothing for peers that never initiate."""
    implied: dict[str, Action] = {"onStart": "restart", "onDemand": "onDemand", "none": "none"}
    return implied[start]


def _merge(base: _M, override: _M | None) -> _M:
    """`base` with the fields the document set explicitly in `override`."""
    if override is None:
        return base
    update: dict[str, Any] = {name: getattr(override, name) for name in override.model_fields_set}
    return base.model_copy(update=update)


__all__ = [
    "API_VERSION",
    "AUTO_START_MAX_PEERS",
    "DEFAULT_AH_PROPOSALS",
    "DEFAULT_ESP_PROPOSALS",
    "DEFAULT_IKEV1_PROPOSALS",
    "DEFAULT_IKE_PROPOSALS",
    "KIND",
    "MIN_PSK_LENGTH",
    "PROTOCOL_NAMES",
    "Action",
    "Auth",
    "Certificate",
    "Control",
    "Identity",
    "Lifetimes",
    "Liveness",
    "Local",
    "Logging",
    "Manual",
    "ManualKeys",
    "Metrics",
    "NatTraversal",
    "Peer",
    "Proposals",
    "Psk",
    "Service",
    "ServiceEndpoint",
    "ServicePort",
    "SidecarConfig",
    "TrafficSelector",
    "TrafficSelectors",
    "implied_action",
]
