"""Validate each *shape* of sidecar document once, not each document.

Every rendered document goes through the sidecar's own loader
(:func:`~kipsec_sidecar.config.load_config_data`), so that what the operator writes is
exactly what the sidecar accepts. That loader (the model plus the cross-field checks)
cost about 4 ms per pod, most of a pass at 1,000 pods. But the pods of one Tunnel get
documents that differ only in names and addresses, and the loader's verdict does not
depend on *which* address a pod has, only on its IP version and on which addresses and
names are equal to which (duplicate peers, selectors inside the endpoints). So a
document is reduced to its shape — every pod IP and peer name renamed to a placeholder
by order of first appearance, keeping the IP version — and a shape the loader accepted
once is not validated again.

Only what the renderer derives from pods and Tunnels is renamed: `local.addresses`,
identities of type `address`, peer `name` and `address`, host-length traffic-selector
CIDRs (`/32`, `/128`; a wider prefix keeps its literal value, since containment is not
preserved by renaming), and the Tunnel's tag in the file names under a peer's `auth`
(`psk-<tag>`, `ca-<tag>.crt`: 12 hex digits from the Tunnel's key, renamed to 12 hex
digits, so the name keeps its form; without this every Tunnel had shapes of its own and
the loader ran about ten times per Tunnel, seconds at 5,000 pods). Everything else
(proposals, other file names, manual SPIs, fields other renderers add) is part of the
shape as it is, so an unknown field can only make two documents differ, never make an
invalid one pass.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from kipsec_sidecar.config import load_config_data

from .cluster import ip_version

MAX_SHAPES = 8192
"""Shapes remembered (least recently used dropped): about one per Tunnel and role."""

_HOST_BITS = {4: 32, 6: 128}

_TAGGED_FILE = re.compile(r"(?P<head>[a-z]+-)(?P<tag>[0-9a-f]{12})(?P<tail>\.[a-z]+)?")
"""A file name the renderer tags with its Tunnel (`render._digest`)."""


class _Renamer:
    """Placeholders by order of first appearance: equal inputs, equal placeholders."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._tags: dict[str, str] = {}

    def name(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return self._names.setdefault(value, f"#name{len(self._names)}")

    def address(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            version = ip_version(value)
        except ValueError:
            return value
        return self._names.setdefault(value, f"#v{version}-{len(self._names)}")

    def cidr(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        address, _, bits = value.partition("/")
        try:
            host = bits.isdigit() and int(bits) == _HOST_BITS[ip_version(address)]
        except ValueError:
            return value
        return f"{self.address(address)}/{bits}" if host else value

    def files(self, value: Any) -> Any:
        """`value` (a peer's `auth`) with each Tunnel tag in a file name renamed."""
        if isinstance(value, Mapping):
            return {key: self.files(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.files(item) for item in value]
        if not isinstance(value, str):
            return value
        found = _TAGGED_FILE.fullmatch(value)
        if found is None:
            return value
        tag = self._tags.setdefault(found["tag"], f"{len(self._tags):012x}")
        return f"{found['head']}{tag}{found['tail'] or ''}"


def _identity(identity: Any, rename: _Renamer) -> Any:
    if isinstance(identity, Mapping) and set(identity) == {"address"}:
        return {"address": rename.address(identity["address"])}
    return identity


def _selectors(selectors: Any, rename: _Renamer) -> Any:
    if not isinstance(selectors, Mapping):
        return selectors
    shaped: dict[str, Any] = dict(selectors)
    for side in ("local", "remote"):
        entries = selectors.get(side)
        if not isinstance(entries, list):
            continue
        shaped[side] = [
            {**entry, "cidr": rename.cidr(entry.get("cidr"))}
            if isinstance(entry, Mapping)
            else rename.cidr(entry)
            for entry in entries
        ]
    return shaped


def shape(document: Mapping[str, Any]) -> str:
    """The document with pod names and addresses renamed, as canonical JSON."""
    rename = _Renamer()
    shaped: dict[str, Any] = dict(document)
    local = document.get("local")
    if isinstance(local, Mapping):
        addresses = local.get("addresses")
        shaped["local"] = {
            **local,
            "addresses": [rename.address(a) for a in addresses]
            if isinstance(addresses, list)
            else addresses,
        }
        if "identity" in local:
            shaped["local"]["identity"] = _identity(local["identity"], rename)
    peers = document.get("peers")
    if isinstance(peers, list):
        shaped["peers"] = [_peer(peer, rename) for peer in peers]
    return json.dumps(shaped, sort_keys=True, separators=(",", ":"))


def _peer(peer: Any, rename: _Renamer) -> Any:
    if not isinstance(peer, Mapping):
        return peer
    shaped = dict(peer)
    for key, how in (
        ("name", rename.name),
        ("address", rename.address),
        ("identity", lambda v: _identity(v, rename)),
        ("trafficSelectors", lambda v: _selectors(v, rename)),
        ("auth", rename.files),
    ):
        if key in peer:
            shaped[key] = how(peer[key])
    return shaped


_accepted: OrderedDict[str, None] = OrderedDict()


def validate_document(document: Mapping[str, Any], *, source: str) -> None:
    """Raise :class:`~kipsec_sidecar.config.ConfigError` unless the sidecar accepts
    `document`; the loader runs once per shape (see the module's docstring)."""
    key = shape(document)
    if key in _accepted:
        _accepted.move_to_end(key)
        return
    load_config_data(dict(document), source=source)
    _accepted[key] = None
    if len(_accepted) > MAX_SHAPES:
        _accepted.popitem(last=False)


__all__ = ["MAX_SHAPES", "shape", "validate_document"]
