"""Configuration reload: which peers to add, remove or replace, and nothing else.

A reload must not disturb a peer whose configuration did not change: its IKE SA, its
child SAs and their SPIs stay exactly as they are. So the daemon compares, peer by peer,
a *fingerprint* of everything that decides how the link is negotiated or installed (the
resolved :class:`~kipsec_sidecar.config.to_core.PeerPlan`: addresses, selectors,
proposals, lifetimes, liveness, identities, and the authentication material read from
its files). Comparing fingerprints rather than the plans themselves matters twice:
private-key objects have no value equality, and a fingerprint holds only digests, so
the daemon never keeps a second copy of a PSK or key just to compare it.

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
from pydantic import BaseModel

from ..config.model import SidecarConfig
from ..config.to_core import PeerPlan

#: Document fields whose change a reload cannot apply (the daemon must be restarted).
GLOBAL_FIELDS = ("local", "datapath", "metrics", "control", "logging")

#: Plan fields that differ between two loads of the same document and mean nothing for
#: the link (the monotonic-to-wall-clock offset is recomputed at every load).
IGNORED_FIELDS = frozenset({"wall_clock_epoch"})


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does, by peer name; every peer not named is left untouched."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.add or self.remove or self.replace)

    def lines(self) -> list[str]:
        """One human-readable line per change (the control interface's reload answer)."""
        return (
            [f"added peer {name}" for name in self.add]
            + [f"removed peer {name}" for name in self.remove]
            + [f"replaced peer {name} (configuration changed)" for name in self.replace]
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


def restart_needed(old: SidecarConfig, new: SidecarConfig) -> list[str]:
    """The document fields outside ``peers`` that changed but only apply on restart."""
    return [
        name for name in GLOBAL_FIELDS if _dump(getattr(old, name)) != _dump(getattr(new, name))
    ]


def _dump(value: object) -> object:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


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
        public = value.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest.update(b"key:" + hashlib.sha256(public).digest() + b";")
    else:  # selectors, lifetimes and other value objects with a stable repr
        digest.update(f"obj:{type(value).__name__}:{value!r};".encode())


__all__ = ["GLOBAL_FIELDS", "ReloadPlan", "diff", "fingerprint", "fingerprints", "restart_needed"]
