"""The validated document → the cores' configuration objects, one plan per peer.

For an IKE-keyed peer that is an :class:`~kipsec_sidecar.core.ike.config.IkeConfig`
(auth material read from its files, proposals parsed, lifetimes and liveness merged
with the peer's overrides); for a manually keyed peer the keyword arguments of the two
:class:`~kipsec_sidecar.core.ipsec_sa.IpsecSa` (inbound and outbound). Everything the
daemon needs besides (start policy, encapsulation, selectors for the policy database)
is in the same :class:`PeerPlan`.

This is where files are read (PSKs, certificates, keys, manual key files): through the
injectable `read_file` so that tests need no files. Every problem — unreadable file,
bad PEM, key not matching its certificate, a manual key of the wrong length — is a
:class:`~kipsec_sidecar.config.errors.ConfigError` naming the field of the document,
all peers' problems together. Secrets are never put in a message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..core import ipsec_sa
from ..core.errors import KipsecError
from ..core.ike.config import (
    AuthConfig,
    ChildConfig,
    ChildProposal,
    IkeConfig,
    IkeProposal,
    Lifetime,
    Retransmission,
)
from ..core.ike.config import Identity as CoreIdentity
from ..core.ike.constants import EncrId, IdType, IntegId, ProtocolId
from ..core.ipsec_sa import IpsecSa
from ..core.traffic_selectors import TrafficSelector as CoreSelector
from ..regular_files import read_regular_file, why_unreadable
from .checks import key_length_problems
from .errors import ConfigError, FieldError, join_path
from .fields import ModelError
from .load import parse_text
from .model import (
    IKE_PORT,
    Action,
    Auth,
    Identity,
    Lifetimes,
    Liveness,
    ManualKeys,
    Peer,
    SidecarConfig,
    TrafficSelector,
)
from .proposals import (
    ChildProtocol,
    legacy_sha1_warning,
    parse_child_proposal,
    parse_ike_proposal,
    parse_manual_algorithms,
)
from .psk import psk_bytes, strip_line_ending

if TYPE_CHECKING:
    from cryptography import x509

ReadFile = Callable[[str], bytes]

#: First retransmission timeout and growth factor (the core's strongSwan-like defaults).
RETRANSMIT_INITIAL = 4.0
RETRANSMIT_FACTOR = 1.8
MAX_RETRANSMIT_TRIES = 30
#: Per-SA byte/packet limits: rekeying starts when this fraction of the hard limit is used.
SOFT_LIMIT_FRACTION = 0.9
#: IKE datagram size budget below the MTU: IPv6 header (40) + UDP (8) + non-ESP marker (4).
IKE_HEADER_ROOM = 52
MIN_MTU = 576


def read_file(path: str) -> bytes:
    """The bytes of `path` (the default reader): a regular file of at most 1 MiB.

    Raises OSError or :class:`~kipsec_sidecar.regular_files.FileRefused` (a FIFO,
    device, directory or oversized file); see :mod:`kipsec_sidecar.regular_files`.
    """
    return read_regular_file(path)


@dataclass(frozen=True, slots=True)
class IpsecSaArgs:
    """The keyword arguments of :class:`IpsecSa` for one direction (keys hidden in repr)."""

    spi: int
    src: str
    dst: str
    protocol: ProtocolId
    mode: ipsec_sa.Mode
    encr_id: EncrId | None
    encr_key_bits: int | None
    integ_id: IntegId | None
    esn: bool
    replay_window: int
    lifetime: ipsec_sa.Lifetime
    udp_encap: bool
    encr_key: bytes = field(default=b"", repr=False)
    integ_key: bytes = field(default=b"", repr=False)

    def kwargs(self) -> dict[str, Any]:
        """The arguments as a dict, for `IpsecSa(**args.kwargs())`."""
        return {name: getattr(self, name) for name in self.__slots__}

    def build(self) -> IpsecSa:
        """A fresh SA (sequence counter at 1, empty replay window)."""
        return IpsecSa(**self.kwargs())


@dataclass(frozen=True, slots=True)
class ManualSas:
    """The SA pair of a manually keyed peer: from the peer (inbound) and to it (outbound)."""

    inbound: IpsecSaArgs
    outbound: IpsecSaArgs


@dataclass(frozen=True, slots=True)
class PeerPlan:
    """Everything the daemon needs to run one peer link.

    `ike` is set for `keying: ike` and `manual` for `keying: manual`.
    `start` is resolved (`auto` is never left). `local_ts`/`remote_ts` are the
    selectors for the policy database (the same ones the child configuration
    proposes). `sa_lifetime` holds the byte/packet limits of every child SA.
    `warnings` are what the operator should know about a link that works (SHA-1 named
    for an IKEv1 peer): logged once when the peer is added, shown in its status.
    """

    name: str
    address: str
    port: int
    local_address: str
    mode: Literal["tunnel", "transport"]
    protocol: Literal["esp", "ah"]
    keying: Literal["ike", "manual"]
    start: Literal["onStart", "onDemand", "none"]
    close_action: Action
    dpd_action: Action
    encapsulation: Literal["udp", "raw", "auto"]
    nat_traversal: bool
    local_ts: tuple[CoreSelector, ...]
    remote_ts: tuple[CoreSelector, ...]
    sa_lifetime: ipsec_sa.Lifetime
    ike: IkeConfig | None = None
    manual: ManualSas | None = None
    warnings: tuple[str, ...] = ()


def _warnings(name: str, ike: IkeConfig | None) -> tuple[str, ...]:
    if ike is not None and any(p.legacy_sha1 for p in ike.proposals):
        return (legacy_sha1_warning(name),)
    return ()


def to_core(
    config: SidecarConfig, *, read_file: ReadFile = read_file, wall_clock_epoch: float = 0.0
) -> tuple[PeerPlan, ...]:
    """One :class:`PeerPlan` per peer, in document order.

    `wall_clock_epoch` maps the engine's monotonic `now` to wall time (see
    :class:`IkeConfig`). Raises ConfigError listing every problem of every peer.
    """
    builder = _Builder(config, read_file, wall_clock_epoch)
    plans: list[PeerPlan] = []
    for index, peer in enumerate(config.peers):
        try:
            plans.append(builder.peer(index, peer))
        except ConfigError as exc:
            builder.errors.extend(e for e in exc.errors if e not in builder.errors)
    if builder.errors:
        raise ConfigError(builder.errors)
    return tuple(plans)


def ike_configs(
    config: SidecarConfig, *, read_file: ReadFile = read_file, wall_clock_epoch: float = 0.0
) -> dict[str, IkeConfig]:
    """Peer name → IkeConfig for every IKE-keyed peer (ConfigError as :func:`to_core`)."""
    plans = to_core(config, read_file=read_file, wall_clock_epoch=wall_clock_epoch)
    return {p.name: p.ike for p in plans if p.ike is not None}


def manual_sa_arguments(
    config: SidecarConfig, *, read_file: ReadFile = read_file
) -> dict[str, ManualSas]:
    """Peer name → inbound/outbound IpsecSa arguments for every manually keyed peer."""
    plans = to_core(config, read_file=read_file)
    return {p.name: p.manual for p in plans if p.manual is not None}


def retransmission_for(timeout: float) -> Retransmission:
    """Retransmissions at 4 s, then 1.8x longer each, until the waits add up to `timeout`."""
    initial = min(RETRANSMIT_INITIAL, timeout)
    total, tries = initial, 0
    while total < timeout and tries < MAX_RETRANSMIT_TRIES:
        tries += 1
        total += initial * RETRANSMIT_FACTOR**tries
    return Retransmission(initial_timeout=initial, factor=RETRANSMIT_FACTOR, max_tries=tries)


def _soft(hard: int | None) -> int | None:
    return None if hard is None else max(1, int(hard * SOFT_LIMIT_FRACTION))


def sa_lifetime_for(lifetimes: Lifetimes) -> ipsec_sa.Lifetime:
    """Byte/packet limits of a child SA; the soft limit (rekey) at 90 % of the hard one."""
    return ipsec_sa.Lifetime(
        soft_bytes=_soft(lifetimes.bytes),
        hard_bytes=lifetimes.bytes,
        soft_packets=_soft(lifetimes.packets),
        hard_packets=lifetimes.packets,
    )


def with_byte_limit(lifetime: ipsec_sa.Lifetime, hard_bytes: int | None) -> ipsec_sa.Lifetime:
    """``lifetime`` (a plan's ``sa_lifetime``) with the byte limit a negotiated child SA
    reports (``ChildSaEstablished.max_bytes``: IKEv1 may agree a shorter one than the
    document's, or take the peer's), the soft limit again at 90 %."""
    return replace(lifetime, soft_bytes=_soft(hard_bytes), hard_bytes=hard_bytes)


def core_identity(identity: Identity) -> CoreIdentity:
    """The IKE identity (type and data) a document identity stands for."""
    if identity.fqdn is not None:
        return CoreIdentity.fqdn(identity.fqdn)
    if identity.address is not None:
        return CoreIdentity.address(identity.address)
    if identity.email is not None:
        return CoreIdentity(IdType.ID_RFC822_ADDR, identity.email.encode("utf-8"))
    if identity.dn is not None:
        from cryptography import x509  # not at the top: see ike_auth's _certificate

        der = x509.Name.from_rfc4514_string(identity.dn).public_bytes()
        return CoreIdentity(IdType.ID_DER_ASN1_DN, der)
    assert identity.key_id is not None
    return CoreIdentity(IdType.ID_KEY_ID, identity.key_id.encode("utf-8"))


def core_selector(selector: TrafficSelector) -> CoreSelector:
    start, end = selector.ports if selector.ports is not None else (0, 0xFFFF)
    return CoreSelector.from_network(selector.cidr, selector.protocol, start, end)


@dataclass(slots=True)
class _Material:
    """Auth material read from files once per document (shared by the peers using it)."""

    psk: bytes = field(default=b"", repr=False)
    private_key: Any = field(default=None, repr=False)
    certificates: tuple[bytes, ...] = ()
    trust_anchors: tuple[bytes, ...] = ()
    certificate: x509.Certificate | None = None


class _Builder:
    def __init__(self, config: SidecarConfig, reader: ReadFile, epoch: float) -> None:
        self.config = config
        self.reader = reader
        self.epoch = epoch
        self.errors: list[FieldError] = []
        self._material: dict[int, _Material] = {}
        # Proposal text -> parsed proposal (frozen), once per document: every peer
        # usually has the same defaults, parsed 100 times at a 100-peer start otherwise.
        self._ike_proposals: dict[tuple[str, bool], IkeProposal] = {}
        self._child_proposals: dict[tuple[str, str], ChildProposal] = {}

    # --- files ---------------------------------------------------------------------

    def read(self, path: str, where: str) -> bytes:
        resolved = self.config.resolve_path(path)
        try:
            return self.reader(resolved)
        except (OSError, ValueError) as exc:
            problem = f"cannot read {path}: {why_unreadable(exc)}"
            raise ConfigError([FieldError(where, problem)]) from None

    def material(self, auth: Auth, where: str) -> _Material:
        found = self._material.get(id(auth))
        if found is None:
            found = self._load_psk(auth, where) if auth.psk else self._load_cert(auth, where)
            self._material[id(auth)] = found
        return found

    def _load_psk(self, auth: Auth, where: str) -> _Material:
        psk = auth.psk
        assert psk is not None
        if psk.value is not None:  # checked by the model
            return _Material(psk=psk_bytes(psk.value.get_secret_value().encode("utf-8")))
        assert psk.secret_file is not None
        path = join_path(where, "psk", "secretFile")
        data = strip_line_ending(self.read(psk.secret_file, path))
        try:
            return _Material(psk=psk_bytes(data))
        except ValueError as exc:
            raise ConfigError([FieldError(path, f"the key in the file {exc}")]) from None

    def _load_cert(self, auth: Auth, where: str) -> _Material:
        spec = auth.certificate
        assert spec is not None
        base = join_path(where, "certificate")
        own = self._pem_certificates(spec.cert_file, join_path(base, "certFile"))
        intermediates = [
            cert
            for i, path in enumerate(spec.intermediate_files)
            for cert in self._pem_certificates(path, join_path(base, "intermediateFiles", i))
        ]
        anchors = [
            cert
            for i, path in enumerate(spec.ca_files)
            for cert in self._pem_certificates(path, join_path(base, "caFiles", i))
        ]
        key_path = join_path(base, "keyFile")
        try:
            key = serialization.load_pem_private_key(
                self.read(spec.key_file, key_path), password=None
            )
        except (ValueError, TypeError, KipsecError) as exc:
            kind = "encrypted" if isinstance(exc, TypeError) else "not a PEM private key"
            raise ConfigError(
                [FieldError(key_path, f"{kind}: kipsec needs an unencrypted PEM key")]
            ) from None
        except Exception:  # cryptography raises several types for bad keys
            raise ConfigError([FieldError(key_path, "not a usable PEM private key")]) from None
        if _spki(key.public_key()) != _spki(own[0].public_key()):
            raise ConfigError(
                [FieldError(key_path, "this private key does not belong to the certificate")]
            )
        return _Material(
            private_key=key,
            certificates=tuple(_der(c) for c in (*own, *intermediates)),
            trust_anchors=tuple(_der(c) for c in anchors),
            certificate=own[0],
        )

    def _pem_certificates(self, path: str, where: str) -> list[x509.Certificate]:
        from cryptography import x509

        data = self.read(path, where)
        try:
            found = x509.load_pem_x509_certificates(data)
        except Exception:  # cryptography raises several types for bad PEM
            found = []
        if not found:
            raise ConfigError([FieldError(where, "no PEM certificate in the file")])
        return found

    # --- peers ---------------------------------------------------------------------

    def peer(self, index: int, peer: Peer) -> PeerPlan:
        config = self.config
        base = join_path("peers", index)
        local_address = config.local_address_for(peer)
        if local_address is None:  # refused by the checks; kept for callers without them
            raise ConfigError([FieldError(join_path(base, "address"), "no local address")])
        local_ts, remote_ts = self.selectors(peer, local_address)
        lifetimes = config.lifetimes_for(peer)
        encapsulation = config.encapsulation_for(peer)
        sa_lifetime = sa_lifetime_for(lifetimes)
        ike: IkeConfig | None = None
        manual: ManualSas | None = None
        try:
            if peer.keying == "ike":
                ike = self.ike(index, peer, local_address, local_ts, remote_ts)
            else:
                manual = self.manual(index, peer, local_address, sa_lifetime, encapsulation)
        except KipsecError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError([FieldError(base, str(exc))]) from None
        return PeerPlan(
            name=peer.name,
            address=peer.address,
            port=peer.port,
            local_address=local_address,
            mode=peer.mode,
            protocol=peer.protocol,
            keying=peer.keying,
            start=config.start_for(peer),
            close_action=config.close_action_for(peer),
            dpd_action=config.dpd_action_for(peer),
            encapsulation=encapsulation,
            nat_traversal=config.nat_traversal.enabled,
            local_ts=local_ts,
            remote_ts=remote_ts,
            sa_lifetime=sa_lifetime,
            ike=ike,
            manual=manual,
            warnings=_warnings(peer.name, ike),
        )

    def selectors(
        self, peer: Peer, local_address: str
    ) -> tuple[tuple[CoreSelector, ...], tuple[CoreSelector, ...]]:
        if peer.traffic_selectors is None:
            return (CoreSelector.host(local_address),), (CoreSelector.host(peer.address),)
        return (
            tuple(core_selector(s) for s in peer.traffic_selectors.local),
            tuple(core_selector(s) for s in peer.traffic_selectors.remote),
        )

    def ike(
        self,
        index: int,
        peer: Peer,
        local_address: str,
        local_ts: tuple[CoreSelector, ...],
        remote_ts: tuple[CoreSelector, ...],
    ) -> IkeConfig:
        config = self.config
        auth = config.auth_for(peer)
        if auth is None:  # refused by the checks; kept for callers without them
            raise ConfigError([FieldError("local.auth", f"required by peer {peer.name!r}")])
        auth_where = join_path("peers", index, "auth") if peer.auth is not None else "local.auth"
        material = self.material(auth, auth_where)
        local_id = self.local_identity(auth, material, local_address)
        remote_id = core_identity(peer.identity) if peer.identity is not None else None
        if auth.psk is not None:
            auth_config = AuthConfig(
                method="psk", local_id=local_id, remote_id=remote_id, psk=material.psk
            )
        else:
            auth_config = AuthConfig(
                method="signature",
                local_id=local_id,
                remote_id=remote_id,
                private_key=material.private_key,
                certificates=material.certificates,
                trust_anchors=material.trust_anchors,
                **self.public_key_encryption(auth, auth_where),
            )
        proposals = config.proposals_for(peer)
        lifetimes = config.lifetimes_for(peer)
        liveness: Liveness = config.liveness_for(peer)
        texts = proposals.esp if peer.protocol == "esp" else proposals.ah
        child_proposals = tuple(self.child_proposal(text, peer.protocol) for text in texts)
        child = ChildConfig(
            name=peer.name,
            local_ts=local_ts,
            remote_ts=remote_ts,
            proposals=child_proposals,
            mode=peer.mode,
            lifetime=_lifetime(lifetimes.child_sa, lifetimes, max_bytes=lifetimes.bytes),
            start=True,
        )
        ike_proposals = tuple(
            self.ike_proposal(text, legacy_sha1=peer.ike_version == 1) for text in proposals.ike
        )
        return IkeConfig(
            auth=auth_config,
            children=(child,),
            local_addr=(local_address, IKE_PORT),
            proposals=ike_proposals,
            lifetime=_lifetime(lifetimes.ike_sa, lifetimes),
            retransmission=retransmission_for(liveness.timeout),
            max_datagram=_max_datagram(config.mtu),
            wall_clock_epoch=self.epoch,
            liveness_interval=liveness.interval,
            version=peer.ike_version,
        )

    def ike_proposal(self, text: str, *, legacy_sha1: bool) -> IkeProposal:
        """:func:`parse_ike_proposal`, once per text (a refused one raises every time)."""
        key = (text, legacy_sha1)
        found = self._ike_proposals.get(key)
        if found is None:
            found = self._ike_proposals[key] = parse_ike_proposal(text, legacy_sha1=legacy_sha1)
        return found

    def child_proposal(self, text: str, protocol: ChildProtocol) -> ChildProposal:
        """:func:`parse_child_proposal`, once per text and protocol."""
        key = (text, protocol)
        found = self._child_proposals.get(key)
        if found is None:
            found = self._child_proposals[key] = parse_child_proposal(text, protocol)
        return found

    def public_key_encryption(self, auth: Auth, where: str) -> dict[str, Any]:
        """AuthConfig's public_key_encryption / peer_certificate (RSA keys on both
        sides, else an error naming the field)."""
        spec = auth.certificate
        if spec is None or spec.public_key_encryption is None or spec.peer_cert_file is None:
            return {}
        base = join_path(where, "certificate")
        if not isinstance(self.material(auth, where).private_key, rsa.RSAPrivateKey):
            raise ConfigError(
                [FieldError(join_path(base, "keyFile"), "public-key encryption needs an RSA key")]
            )
        path = join_path(base, "peerCertFile")
        peer_cert = self._pem_certificates(spec.peer_cert_file, path)[0]
        if not isinstance(peer_cert.public_key(), rsa.RSAPublicKey):
            raise ConfigError([FieldError(path, "public-key encryption needs the peer's RSA key")])
        method = 4 if spec.public_key_encryption == "rsa" else 5
        return {"public_key_encryption": method, "peer_certificate": _der(peer_cert)}

    def local_identity(
        self, auth: Auth, material: _Material, local_address: str
    ) -> CoreIdentity | None:
        identity = self.config.local.identity
        if identity is None:
            return CoreIdentity.address(local_address) if auth.psk is not None else None
        core = core_identity(identity)
        cert = material.certificate
        if cert is None:  # PSK: no certificate to match, and no x509 import (~40 modules)
            return core
        from ..core.ike import certs

        if not certs.identity_matches(cert, core.id_type, core.data):
            raise ConfigError(
                [
                    FieldError(
                        "local.identity",
                        "does not name our certificate (it must equal a SAN or the subject DN "
                        f"of {cert.subject.rfc4514_string()[:100]!r})",
                    )
                ]
            )
        return core

    def manual(
        self,
        index: int,
        peer: Peer,
        local_address: str,
        lifetime: ipsec_sa.Lifetime,
        encapsulation: str,
    ) -> ManualSas:
        spec = peer.manual
        base = join_path("peers", index, "manual")
        if spec is None:
            raise ConfigError([FieldError(base, "required with keying: manual")])
        algorithms = parse_manual_algorithms(spec.encryption, spec.integrity, peer.protocol)
        keys = spec.keys if spec.keys is not None else self.keys_file(spec.keys_file or "", base)
        values = {
            "encryptionIn": keys.encryption_in,
            "encryptionOut": keys.encryption_out,
            "integrityIn": keys.integrity_in,
            "integrityOut": keys.integrity_out,
        }
        raw = {
            k: b"" if v is None else bytes.fromhex(v.get_secret_value()) for k, v in values.items()
        }
        lengths = {k: None if v is None else len(raw[k]) for k, v in values.items()}
        where = join_path(base, "keys" if spec.keys is not None else "keysFile")
        problems = key_length_problems(algorithms, lengths)
        if problems:
            raise ConfigError([FieldError(join_path(where, p.path), p.message) for p in problems])
        protocol = ProtocolId.ESP if peer.protocol == "esp" else ProtocolId.AH
        mode = ipsec_sa.Mode(peer.mode)
        common: dict[str, Any] = {
            "protocol": protocol,
            "mode": mode,
            "encr_id": None if algorithms.encr_id is None else EncrId(algorithms.encr_id),
            "encr_key_bits": algorithms.encr_key_bits,
            "integ_id": None if algorithms.integ_id is None else IntegId(algorithms.integ_id),
            "esn": spec.esn,
            "replay_window": spec.replay_window,
            "lifetime": lifetime,
            "udp_encap": encapsulation == "udp",
        }
        inbound = IpsecSaArgs(
            spi=spec.spi_in,
            src=peer.address,
            dst=local_address,
            encr_key=raw["encryptionIn"],
            integ_key=raw["integrityIn"],
            **common,
        )
        outbound = IpsecSaArgs(
            spi=spec.spi_out,
            src=local_address,
            dst=peer.address,
            encr_key=raw["encryptionOut"],
            integ_key=raw["integrityOut"],
            **common,
        )
        inbound.build()  # the core validates algorithms and key lengths once, here
        outbound.build()
        return ManualSas(inbound=inbound, outbound=outbound)

    def keys_file(self, path: str, base: str) -> ManualKeys:
        where = join_path(base, "keysFile")
        data = self.read(path, where)
        try:  # the document's own parser: duplicate keys, merge keys, depth refused alike
            document = parse_text(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError([FieldError(where, "not UTF-8 text")]) from None
        except ConfigError as exc:  # its messages name lines and keys, never values
            problem = exc.errors[0].message
            raise ConfigError(
                [FieldError(where, f"not a YAML or JSON mapping of keys: {problem}")]
            ) from None
        try:
            return ManualKeys.model_validate(document)
        except ModelError as exc:
            raise ConfigError(
                [FieldError(join_path(where, p.path), p.message) for p in exc.errors]
            ) from None


def _lifetime(hard: float, lifetimes: Lifetimes, *, max_bytes: int | None = None) -> Lifetime:
    return Lifetime(
        rekey_after=hard - lifetimes.rekey_margin,
        expire_after=hard,
        jitter=lifetimes.jitter,
        max_bytes=max_bytes,
    )


def _max_datagram(mtu: int | None) -> int:
    if mtu is None:
        return 1280
    return max(MIN_MTU, mtu - IKE_HEADER_ROOM)


def _spki(public_key: Any) -> bytes:
    data: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


__all__ = [
    "IpsecSaArgs",
    "ManualSas",
    "PeerPlan",
    "ReadFile",
    "core_identity",
    "core_selector",
    "ike_configs",
    "manual_sa_arguments",
    "read_file",
    "retransmission_for",
    "sa_lifetime_for",
    "to_core",
    "with_byte_limit",
]
