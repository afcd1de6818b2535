"""Configuration reload: which peers to add, remove or replace, and nothing else.

A reload must not disturb a peer whose configuration did not change: its IKE SA, its
child SAs and their SPIs stay exactly as they are. So the daemon compares, peer by peer,
a *fingerprint* of everything that decides how the link is negotiated or installed (the
resolved :class:`~kipsec_sidecar.config.to_core.PeerPlan`: addresses, selectors,
proposals, lifetimes, liveness, identities, and the authentication material read from
its files). Comparing fingerprints rather than the plans themselves matters twice:
private-key objects have no value equality, and a fingerprint holds only digests, so
the daemon never keeps a second copy of a PSK or key just to compare it.

A peer whose only change is its certificate credentials (our key and certificate
renewed for the same identity, the peer's certificate renewed for the same identity
under IKEv1 public-key encryption, or the trust bundle growing or shrinking during a CA
rotation while old and new share a CA) is *refreshed* rather than replaced
(:func:`credentials_only`): future IKE_AUTH exchanges (and IKEv1 re-authentications of
the live SAs) use the new material, while the established IKE SA (and its rekeys,
which do not authenticate again) and its child SAs stay. A changed identity, or trust
anchors with nothing in common, replace the peer.
Under IKEv1 public-key encryption a refresh that replaced our private key also keeps
the old key, to decrypt only, for :data:`RETIRED_KEY_GRACE` (:func:`retire_key`): the
peers encrypt to the key their documents name until the new certificate reaches them.

Settings that are not per peer (local addresses, datapath, metrics, control socket,
logging) need a restart; :func:`restart_needed` names the ones that changed.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization

from ..config.fields import Model
from ..config.model import SidecarConfig
from ..config.to_core import PeerPlan
from ..core.ike.config import IkeConfig, RetiredKey

#: Document fields whose change a reload cannot apply (the daemon must be restarted).
GLOBAL_FIELDS = ("local.addresses", "datapath", "metrics", "control", "logging")
"""Document fields used only at start (``local.addresses``: the sockets bound). The rest
of ``local``, its identity and auth, is every peer's default and reaches the peers' plans,
so a reload applies it through them."""

#: Plan fields that differ between two loads of the same document and mean nothing for
#: the link (the monotonic-to-wall-clock offset is recomputed at every load; a retired
#: key is the daemon's, never the document's).
IGNORED_FIELDS = frozenset({"wall_clock_epoch", "retired_key"})

#: Seconds a private key replaced by a renewal still decrypts IKEv1 main mode messages 3
#: and 4 (public-key encryption). The peers learn the new certificate from their next
#: document: through ``/v1/config`` within seconds of the operator rendering it, at
#: worst from the mounted Secret on the kubelet's next sync (about a minute, plus its
#: cache TTL). Ten minutes is several times that and short against a certificate's
#: lifetime (renewal comes ``renewBefore``, 8 h by default, before expiry). It never
#: outlasts the replaced certificate: until it expires the peers accept whoever holds
#: that key anyway, after it they refuse it whatever we decrypt.
RETIRED_KEY_GRACE = 600.0


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does, by peer name; every peer not named is left untouched."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    refresh: tuple[str, ...] = ()
    """Peers whose credentials changed and nothing else: updated in place."""

    @property
    def empty(self) -> bool:
        return not (self.add or self.remove or self.replace or self.refresh)

    def lines(self) -> list[str]:
        """One human-readable line per change (the control interface's reload answer)."""
        return (
            [f"added peer {name}" for name in self.add]
            + [f"removed peer {name}" for name in self.remove]
            + [f"replaced peer {name} (configuration changed)" for name in self.replace]
            + [f"renewed credentials of peer {name} (SAs kept)" for name in self.refresh]
        )

    def refreshing(self, old: Mapping[str, PeerPlan], new: Mapping[str, PeerPlan]) -> ReloadPlan:
        """This plan with the replaced peers whose change is :func:`credentials_only`
        moved to :attr:`refresh`."""
        moved = tuple(n for n in self.replace if credentials_only(old[n], new[n]))
        return dataclasses.replace(
            self,
            replace=tuple(n for n in self.replace if n not in moved),
            refresh=moved,
        )


def fingerprint(plan: PeerPlan) -> str:
    """A SHA-256 hex digest of everything in ``plan`` that shapes the peer's link.

    Secrets (PSKs, manual keys) and private keys enter only as digests / public keys,
    so two plans with the same key material give the same fingerprint and the
    fingerprint reveals nothing about the keys.
    """
    digest = hashlib.sha256()
    _feed(digest, plan)
    return digest.hexdigest()


def diff(old: Mapping[str, str], new: Mapping[str, str]) -> ReloadPlan:
    """Compare peer name → fingerprint maps of the running and the new configuration.

    Names keep the order of ``new`` (then ``old`` for removals), so the log and the
    control answer list peers in document order.
    """
    add = tuple(name for name in new if name not in old)
    remove = tuple(name for name in old if name not in new)
    replace = tuple(name for name in new if name in old and old[name] != new[name])
    unchanged = tuple(name for name in new if name in old and old[name] == new[name])
    return ReloadPlan(add=add, remove=remove, replace=replace, unchanged=unchanged)


def fingerprints(plans: Iterable[PeerPlan]) -> dict[str, str]:
    """Peer name → :func:`fingerprint`, in the plans' order."""
    return {plan.name: fingerprint(plan) for plan in plans}


#: AuthConfig fields that hold renewable credentials rather than the link's terms (the
#: peer's certificate: IKEv1 public-key encryption knows it in advance).
CREDENTIAL_FIELDS = frozenset(
    {"psk", "private_key", "certificates", "trust_anchors", "peer_certificate"}
)


def credentials_only(old: PeerPlan, new: PeerPlan) -> bool:
    """Whether ``new`` differs from ``old`` in credentials alone, so the peer can keep its
    SAs: the same link (everything :func:`fingerprint` covers except the PSK, our key,
    our chain, the trust anchors and the peer's certificate) and the same
    authentication method; for certificates also our certificate naming the same
    identity (subject and subjectAltName), under IKEv1 public-key encryption the peer's
    certificate too (the peer renewed), and old and new trust anchors sharing at least
    one CA (a CA rotation adds the new CA before it drops the old one).

    A new PSK keeps the SAs too: established IKE SAs rekey without authenticating again,
    so only the next IKE_AUTH uses (and needs the peer to have) the new key. A rotation
    thus interrupts nothing unless a link must be set up anew while the two ends hold
    different keys.
    """
    if old.ike is None or new.ike is None:
        return False
    if old.ike.auth.method != new.ike.auth.method:
        return False
    if _link_digest(old) != _link_digest(new):
        return False
    if new.ike.auth.method == "psk":
        return True
    return bool(set(old.ike.auth.trust_anchors) & set(new.ike.auth.trust_anchors))


def negotiated_under(plan: PeerPlan, config: IkeConfig) -> bool:
    """Whether an IKE SA set up with ``config`` belongs to the peer that ``plan`` now
    describes: ``config`` is the plan's, or differs from it only in the credentials a
    reload would have refreshed in place (:func:`credentials_only`).

    A responder's IKE SA takes the peer's configuration at its IKE_SA_INIT. If a reload
    replaces the peer before the IKE_AUTH that completes it, the SA finishes under the
    replaced terms: its first child is refused or negotiated under the old ones. The
    daemon deletes such an SA instead of adopting it (the peer's new IKE SA stands),
    otherwise it wins the duplicate resolution over that new SA and the pair settles
    on an IKE SA without the child the new configuration asks for.
    """
    if plan.ike is None:
        return False
    if config is plan.ike:
        return True
    return credentials_only(dataclasses.replace(plan, ike=config), plan)


def retire_key(old: IkeConfig, new: IkeConfig, now: float) -> IkeConfig:
    """``new`` (a :func:`credentials_only` refresh of ``old``) keeping the private key it
    replaced as a :class:`~kipsec_sidecar.core.ike.config.RetiredKey` until ``now`` +
    :data:`RETIRED_KEY_GRACE` (``now`` on the engine's clock), or until the replaced
    certificate expires if that is sooner, when it authenticates by public-key
    encryption; if the key did not change (a CA rotation), the key ``old`` retired, if
    any, stays with the end of its grace. Only the latest replaced key is kept; the
    caller drops the one this supersedes (:func:`retired_key`)."""
    auth = new.auth
    if auth.public_key_encryption is None or old.auth.private_key is None:
        return new
    if _public_der(old.auth.private_key) == _public_der(auth.private_key):
        retired = old.auth.retired_key
    else:
        until = min(now + RETIRED_KEY_GRACE, _expiry(old))
        retired = RetiredKey(old.auth.private_key, until) if until > now else None
    return dataclasses.replace(new, auth=dataclasses.replace(auth, retired_key=retired))


def _expiry(config: IkeConfig) -> float:
    """When our certificate in ``config`` expires, on the engine's clock."""
    from cryptography import x509  # only certificate peers: see core.ike.ike_auth

    cert = x509.load_der_x509_certificate(config.auth.certificates[0])
    return cert.not_valid_after_utc.timestamp() - config.wall_clock_epoch


def retired_key(plan: PeerPlan) -> RetiredKey | None:
    """The key ``plan`` still decrypts with after a renewal, if any."""
    return plan.ike.auth.retired_key if plan.ike is not None else None


def _public_der(private_key: Any) -> bytes:
    return bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _link_digest(plan: PeerPlan) -> str:
    """:func:`fingerprint` without the credentials, with the names of our certificate
    (and of the peer's, under public-key encryption) instead."""
    digest = hashlib.sha256()
    ike = plan.ike
    assert ike is not None
    _feed(digest, dataclasses.replace(plan, ike=None))
    for item in dataclasses.fields(ike):
        if item.name not in IGNORED_FIELDS and item.name != "auth":
            _feed(digest, item.name)
            _feed(digest, getattr(ike, item.name))
    for item in dataclasses.fields(ike.auth):
        if item.name not in CREDENTIAL_FIELDS | IGNORED_FIELDS:
            _feed(digest, item.name)
            _feed(digest, getattr(ike.auth, item.name))
    _feed(digest, _names(ike.auth.certificates[0]) if ike.auth.certificates else None)
    _feed(digest, _names(ike.auth.peer_certificate) if ike.auth.peer_certificate else None)
    return digest.hexdigest()


def _names(der: bytes) -> tuple[bytes, bytes]:
    """The identity a certificate carries: its subject and its subjectAltName (DER)."""
    from cryptography import x509  # only certificate peers: see core.ike.ike_auth

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        san_der = san.value.public_bytes()
    except x509.ExtensionNotFound:
        san_der = b""
    return cert.subject.public_bytes(), san_der


def restart_needed(old: SidecarConfig, new: SidecarConfig) -> list[str]:
    """The document fields outside ``peers`` that changed but only apply on restart."""
    return [name for name in GLOBAL_FIELDS if _dump(_field(old, name)) != _dump(_field(new, name))]


def _field(config: SidecarConfig, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _dump(value: object) -> object:
    return value.model_dump(mode="json") if isinstance(value, Model) else value


# --- the canonical walk -------------------------------------------------------------------


def _feed(digest: Any, value: object) -> None:
    """Write a type-tagged, unambiguous encoding of ``value`` into ``digest``."""
    if value is None or isinstance(value, bool | int | float | str):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, bytes | bytearray | memoryview):
        digest.update(b"bytes:" + hashlib.sha256(bytes(value)).digest() + b";")
    elif isinstance(value, enum.Enum):
        digest.update(f"enum:{type(value).__name__}.{value.name};".encode())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(f"dc:{type(value).__name__}(".encode())
        for item in dataclasses.fields(value):
            if item.name in IGNORED_FIELDS:
                continue
            digest.update(item.name.encode() + b"=")
            _feed(digest, getattr(value, item.name))
        digest.update(b");")
    elif isinstance(value, tuple | list):
        digest.update(f"seq:{len(value)}[".encode())
        for element in value:
            _feed(digest, element)
        digest.update(b"];")
    elif isinstance(value, dict):
        digest.update(f"map:{len(value)}{{".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
        digest.update(b"};")
    elif hasattr(value, "public_key"):  # a private key object: its public half names it
        digest.update(b"key:" + hashlib.sha256(_public_der(value)).digest() + b";")
    else:  # selectors, lifetimes and other value objects with a stable repr
        digest.update(f"obj:{type(value).__name__}:{value!r};".encode())


__all__ = [
    "CREDENTIAL_FIELDS",
    "GLOBAL_FIELDS",
    "RETIRED_KEY_GRACE",
    "ReloadPlan",
    "credentials_only",
    "diff",
    "fingerprint",
    "fingerprints",
    "negotiated_under",
    "restart_needed",
    "retire_key",
    "retired_key",
]
