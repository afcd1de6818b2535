"""The engine's record of one child SA (a pair of ESP/AH SAs) and its lifecycle.

The engine owns these records; the daemon sees only the events built from them. A child
is INSTALLED from creation until a rekey or a delete starts, REKEYING while its
successor is negotiated, REKEYED once the successor exists (it waits for the Delete
exchange), DELETING while our Delete is outstanding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ..traffic_selectors import TrafficSelector
from .config import ChildConfig, Mode
from .keys import ChildKeys
from .proposals import Selection


class ChildState(Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"
    REKEYED = "rekeyed"
    DELETING = "deleting"


@dataclass(slots=True)
class RekeyCollision:
    """The peer's rekey of this child, answered while ours was outstanding (RFC 7296 2.8.1).

    ``successor`` is the inbound SPI of the child that exchange created; ``nonces`` its
    Ni and Nr, compared with ours to find the redundant one.
    """

    successor: bytes
    nonces: tuple[bytes, bytes]


@dataclass(slots=True, repr=False)
class ChildSa:
    """One negotiated child SA. ``keys`` is split initiator/responder as RFC 7296 2.17 does;
    ``initiator`` tells which half is outbound. repr never shows keys."""

    config: ChildConfig
    protocol: int
    mode: Mode
    spi_in: bytes
    spi_out: bytes
    selection: Selection
    keys: ChildKeys
    initiator: bool
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    rekey_at: float | None
    expire_at: float | None
    state: ChildState = ChildState.INSTALLED
    replaces: bytes | None = None
    collision: RekeyCollision | None = None
    successor: bytes | None = field(default=None)
    redundant: bool = False  #: created by the losing exchange of a rekey collision

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def encr_key_in(self) -> bytes:
        return self.keys.encr_r if self.initiator else self.keys.encr_i

    @property
    def integ_key_in(self) -> bytes:
        return self.keys.integ_r if self.initiator else self.keys.integ_i

    @property
    def encr_key_out(self) -> bytes:
        return self.keys.encr_i if self.initiator else self.keys.encr_r

    @property
    def integ_key_out(self) -> bytes:
        return self.keys.integ_i if self.initiator else self.keys.integ_r

    def __repr__(self) -> str:
        return (
            f"ChildSa(name={self.name!r}, spi_in={self.spi_in.hex()}, "
            f"spi_out={self.spi_out.hex()}, state={self.state.value})"
        )
