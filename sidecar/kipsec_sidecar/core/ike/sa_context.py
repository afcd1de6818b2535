"""One IKE SA's cryptographic and message-ID state: SPIs, keys, windows, retransmission.

An :class:`~.engine.IkeSa` holds a current context and, during an IKE SA rekey, old or
redundant ones that still answer their peer until deleted. The message-ID window is 1
in both directions (RFC 7296 section 2.3; SET_WINDOW_SIZE is never sent): one request
of ours outstanding at a time, and only the peer's next request ID is processed — the
previous one is answered from the stored response, anything else is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .keys import IkeKeys
from .message import Message
from .proposals import Selection
from .sk import FragmentReassembler, SkKeys

ResponseHandler = Callable[[Message, float], None]
TimeoutHandler = Callable[[float], None]


@dataclass(slots=True)
class Outstanding:
    """A request of ours waiting for its response; ``datagrams`` are resent unchanged."""

    message_id: int
    exchange: int
    datagrams: list[bytes]
    on_response: ResponseHandler
    next_at: float
    tries: int = 1
    on_timeout: TimeoutHandler | None = None
    kind: str = ""  #: what the request does ("child", "rekey-ike", "delete", ...)


@dataclass(slots=True, repr=False)
class SaContext:
    """SPIs, negotiated algorithms, keys and both message-ID windows of one IKE SA."""

    spi_i: bytes
    spi_r: bytes
    original_initiator: bool
    selection: Selection | None = None
    keys: IkeKeys | None = None
    sk_in: SkKeys | None = None
    sk_out: SkKeys | None = None
    next_mid: int = 0
    peer_mid: int = 0
    last_response: tuple[int, list[bytes]] | None = None
    pending: Outstanding | None = None
    reassembler: FragmentReassembler = field(default_factory=FragmentReassembler)
    deleted: bool = False  #: the Delete for this SA was exchanged; answer only from cache
    drain_until: float | None = None  #: a draining context is dropped after this time

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.original_initiator else self.spi_r

    @property
    def prf_id(self) -> int:
        assert self.selection is not None and self.selection.prf_id is not None
        return self.selection.prf_id

    def matches(self, spi_i: bytes, spi_r: bytes) -> bool:
        return self.spi_i == spi_i and self.spi_r == spi_r

    def __repr__(self) -> str:
        return f"SaContext(spi_i={self.spi_i.hex()}, spi_r={self.spi_r.hex()})"
