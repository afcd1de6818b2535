"""Manual keying: per-link SPIs and keys derived from one master key in a Secret.

Pods come and go, so a Secret cannot list keys per pod pair. Instead the Secret holds a
master key (`key`, hex) and the operator derives, for each direction of each link, an
SPI and the keys with HKDF-SHA256 over the Tunnel and the two pods' names and UIDs:
deterministic (an unchanged input writes nothing), distinct per link and direction,
and new for a re-created pod. Both ends derive the same values, mirrored: our `spiIn`
is the peer's `spiOut`.

Rotation: put a new `key` in the Secret and move the old one to `previousKey`. The new
key gives every link a new SPI, so old and new SAs can coexist; :class:`ManualLink`
carries both pairs. The sidecar's document has one manual SA pair per peer today, so
only `current` is rendered; accepting inbound traffic on `previous` during the overlap
needs a `manual.previous` field in the sidecar model (see docs/operator.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kipsec_operator.crds.models import TunnelSpec
from kipsec_sidecar.config.proposals import ManualAlgorithms, parse_manual_algorithms

from .cluster import Cluster, PodRef
from .peers import Link
from .validation import MANUAL_KEY, MANUAL_PREVIOUS_KEY, manual_algorithms, master_key

_SALT = b"kipsec manual keying v1"
_MIN_SPI = 256
_SPI_SPAN = 0xFFFFFFFF - _MIN_SPI + 1


@dataclass(frozen=True)
class DirectionKeys:
    """One direction of a link: the SPI of its SA and its keys (bytes, may be empty)."""

    spi: int
    encryption: bytes
    integrity: bytes


@dataclass(frozen=True)
class ManualSaPair:
    """The SA pair of one link as seen from the local pod."""

    spi_in: int
    spi_out: int
    inbound: DirectionKeys
    outbound: DirectionKeys

    def keys_document(self) -> str:
        """The sidecar's keys file (YAML: encryptionIn, encryptionOut, ...; hex)."""
        keys: dict[str, str] = {}
        for name, direction in (("In", self.inbound), ("Out", self.outbound)):
            if direction.encryption:
                keys[f"encryption{name}"] = direction.encryption.hex()
            if direction.integrity:
                keys[f"integrity{name}"] = direction.integrity.hex()
        return yaml.safe_dump(keys, sort_keys=True)


@dataclass(frozen=True)
class ManualLink:
    """The current SA pair of a link and, during a rotation, the previous one."""

    current: ManualSaPair
    previous: ManualSaPair | None


def _direction(
    master: bytes,
    tunnel: tuple[str, str],
    source: PodRef,
    destination: PodRef,
    algorithms: ManualAlgorithms,
) -> DirectionKeys:
    info = "\x00".join(
        [*tunnel, source.peer_name, source.uid, destination.peer_name, destination.uid]
    ).encode()
    length = 4 + algorithms.encryption_key_len + algorithms.integrity_key_len
    material = HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=info).derive(master)
    spi = _MIN_SPI + int.from_bytes(material[:4], "big") % _SPI_SPAN
    encryption_end = 4 + algorithms.encryption_key_len
    return DirectionKeys(spi, material[4:encryption_end], material[encryption_end:])


def derive_pair(master: bytes, link: Link, algorithms: ManualAlgorithms) -> ManualSaPair:
    """The SA pair of `link` from `master`; the peer's pair is the mirror image."""
    outbound = _direction(master, link.tunnel, link.local, link.remote, algorithms)
    inbound = _direction(master, link.tunnel, link.remote, link.local, algorithms)
    return ManualSaPair(inbound.spi, outbound.spi, inbound, outbound)


def manual_link(link: Link, spec: TunnelSpec, cluster: Cluster) -> ManualLink | None:
    """Current and previous SA pairs of `link`; None when the Secret is missing or bad.

    `spec` must have passed :func:`~.validation.validate_tunnel`.
    """
    assert spec.manual is not None
    data = cluster.secret_data(link.tunnel[0], spec.manual.secret_ref.name)
    if data is None:
        return None
    current = master_key(data, MANUAL_KEY)
    if current is None:
        return None
    encryption, integrity = manual_algorithms(spec)
    algorithms = parse_manual_algorithms(encryption, integrity, spec.protocol)
    previous = master_key(data, MANUAL_PREVIOUS_KEY) if MANUAL_PREVIOUS_KEY in data else None
    return ManualLink(
        current=derive_pair(current, link, algorithms),
        previous=derive_pair(previous, link, algorithms) if previous is not None else None,
    )


__all__ = ["DirectionKeys", "ManualLink", "ManualSaPair", "derive_pair", "manual_link"]
