"""An in-memory IKEv2 (IKEv1 with ``version=1``) initiator/responder pair with a fake clock.

The initiator is an :class:`IkeSa`; the responder side is an :class:`Endpoint` (so
cookies and SA creation are exercised too). :meth:`IkePair.run` passes datagrams both
ways and, when nothing is in flight, jumps the clock to the next timer — so a
retransmission at t=4 s costs no wall time. A ``tap`` sees every datagram on its way
and decides what arrives: drop it (return ``[]``), duplicate it, tamper with it, or
hold it back to reorder. ``nat`` makes the responder see the initiator at a translated
address.

    pair = IkePair(psk_config("a"), psk_config("b"))
    pair.run()
    assert pair.initiator.established and pair.responder.established
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kipsec_sidecar.core.ike.config import (
    Address,
    AuthConfig,
    ChildConfig,
    ChildProposal,
    Encryption,
    Identity,
    IkeConfig,
    IkeProposal,
    Lifetime,
    Retransmission,
)
from kipsec_sidecar.core.ike.constants import NON_ESP_MARKER, DhGroup, EncrId, IntegId, PrfId
from kipsec_sidecar.core.ike.endpoint import Endpoint
from kipsec_sidecar.core.ike.engine import IkeSa
from kipsec_sidecar.core.ike.events import Event
from kipsec_sidecar.core.ikev1.endpoint import IsakmpEndpoint
from kipsec_sidecar.core.ikev1.engine import IsakmpSa
from kipsec_sidecar.core.traffic_selectors import TrafficSelector

I2R = "i2r"
R2I = "r2i"

INITIATOR_ADDR: Address = ("10.0.0.1", 500)
RESPONDER_ADDR: Address = ("10.0.0.2", 500)
NAT_ADDR: Address = ("203.0.113.7", 40500)

Tap = Callable[[str, int, bytes], list[bytes]]
"""(direction, index of the datagram in that direction, data) -> datagrams delivered."""


class SeededRng:
    """A deterministic ``rng(n) -> bytes`` for reproducible handshakes."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def __call__(self, n: int) -> bytes:
        return self._random.randbytes(n)


FAST_RETRANSMISSION = Retransmission(initial_timeout=0.5, factor=2.0, max_tries=3)
DEFAULT_LIFETIME = Lifetime()


def child_config(
    name: str = "pods",
    local: str = "10.1.0.0/24",
    remote: str = "10.2.0.0/24",
    *,
    proposals: tuple[ChildProposal, ...] = (ChildProposal(),),
    mode: str = "tunnel",
    lifetime: Lifetime = DEFAULT_LIFETIME,
    start: bool = True,
) -> ChildConfig:
    """A child whose local and remote selectors are the given networks."""
    return ChildConfig(
        name,
        (TrafficSelector.from_network(local),),
        (TrafficSelector.from_network(remote),),
        proposals,
        mode,  # type: ignore[arg-type]
        lifetime,
        start,
    )


def psk_config(
    local_name: str,
    remote_name: str | None,
    *,
    psk: bytes = b"correct horse battery staple",
    children: tuple[ChildConfig, ...] | None = None,
    local_addr: Address = INITIATOR_ADDR,
    **overrides: Any,
) -> IkeConfig:
    """A PSK configuration with FQDN identities and fast retransmissions."""
    auth = AuthConfig(
        "psk",
        local_id=Identity.fqdn(local_name),
        remote_id=Identity.fqdn(remote_name) if remote_name else None,
        psk=psk,
    )
    options: dict[str, Any] = {
        "retransmission": FAST_RETRANSMISSION,
        "proposals": (IkeProposal(),),
    }
    options.update(overrides)
    return IkeConfig(
        auth=auth,
        children=children if children is not None else (child_config(),),
        local_addr=local_addr,
        **options,
    )


#: What an IKEv1 pair negotiates: IKEv1 has no AEAD for phase 1 (AES-CBC + HMAC-SHA2).
V1_IKE_PROPOSALS = (
    IkeProposal(
        encryption=(Encryption(EncrId.AES_CBC, 256),),
        integrity=(IntegId.HMAC_SHA2_256_128,),
        prf=(PrfId.HMAC_SHA2_256,),
        dh=(DhGroup.MODP_2048,),
    ),
)
ESP_CBC = ChildProposal(
    encryption=(Encryption(EncrId.AES_CBC, 128),), integrity=(IntegId.HMAC_SHA2_256_128,)
)


def pair_configs(
    *,
    version: int = 2,
    child: ChildProposal | None = None,
    r_child: ChildProposal | None = None,
    **overrides: Any,
) -> tuple[IkeConfig, IkeConfig]:
    """Initiator and responder PSK configurations that agree (a.example / b.example).

    ``i_<field>`` / ``r_<field>`` override one side's IkeConfig field; ``version`` 1
    uses :data:`V1_IKE_PROPOSALS` and :data:`ESP_CBC` unless told otherwise.
    """
    common: dict[str, Any] = {"version": version}
    if version == 1:
        common["proposals"] = V1_IKE_PROPOSALS
        child = child or ESP_CBC
    child = child or ChildProposal()
    i_options = common | {k[2:]: v for k, v in overrides.items() if k.startswith("i_")}
    r_options = common | {k[2:]: v for k, v in overrides.items() if k.startswith("r_")}
    i = psk_config(
        "a.example", "b.example", children=(child_config(proposals=(child,)),), **i_options
    )
    r = psk_config(
        "b.example",
        "a.example",
        children=(mirrored(child_config(proposals=(r_child or child,))),),
        local_addr=RESPONDER_ADDR,
        **r_options,
    )
    return i, r


def mirrored(child: ChildConfig) -> ChildConfig:
    """The peer's view of ``child``: local and remote selectors swapped."""
    return ChildConfig(
        child.name,
        child.remote_ts,
        child.local_ts,
        child.proposals,
        child.mode,
        child.lifetime,
        child.start,
    )


@dataclass
class Side:
    """Events one side reported, in order."""

    events: list[Event] = field(default_factory=list)

    def of(self, cls: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, cls)]


class IkePair:
    """An initiator IkeSa and a responder Endpoint joined by an in-memory wire."""

    def __init__(
        self,
        initiator_config: IkeConfig,
        responder_config: IkeConfig,
        *,
        seed: int = 1,
        tap: Tap | None = None,
        nat: Address | None = None,
        cookie_threshold: int = 32,
        start: bool = True,
        version: int = 2,
    ) -> None:
        self.now = 0.0
        self.tap = tap
        self.nat = nat
        self.counts = {I2R: 0, R2I: 0}
        self.held: list[tuple[str, bytes]] = []
        self.initiator_rng = SeededRng(seed)
        self.version = version
        self.endpoint: Endpoint | IsakmpEndpoint
        if version == 1:
            self.endpoint = IsakmpEndpoint(responder_config, rng=SeededRng(seed + 1000))
        else:
            self.endpoint = Endpoint(
                responder_config, rng=SeededRng(seed + 1000), cookie_threshold=cookie_threshold
            )
        self.i = Side()
        self.r = Side()
        self.wire: list[tuple[str, bytes]] = []
        self.initiator_config = initiator_config
        self._initiator: Any = None
        if start:
            self.start()

    def start(self) -> Any:
        """Start the initiator: an IkeSa, or an IKEv1 IsakmpSa when ``version`` is 1."""
        kind = IsakmpSa if self.version == 1 else IkeSa
        self._initiator = kind.initiator(
            self.initiator_config, RESPONDER_ADDR, rng=self.initiator_rng, now=self.now
        )
        self._collect()
        return self._initiator

    @property
    def initiator(self) -> Any:
        assert self._initiator is not None
        return self._initiator

    @property
    def responder(self) -> Any:
        """The most recent responder IkeSa the endpoint holds (or held)."""
        sas = {id(sa): sa for sa in self.endpoint.sas.values()}
        if sas:
            return list(sas.values())[-1]
        assert self._last_responder is not None, "no responder IKE SA exists"
        return self._last_responder

    _last_responder: Any = None

    # ------------------------------------------------------------------ wire

    def _collect(self) -> None:
        if self._initiator is not None:
            for data, _addr in self._initiator.datagrams_to_send(self.now):
                self.wire.append((I2R, data))
            while (ev := self._initiator.next_event()) is not None:
                self.i.events.append(ev)
        for data, _addr in self.endpoint.datagrams_to_send(self.now):
            self.wire.append((R2I, data))
        while (pair := self.endpoint.next_event()) is not None:
            self._last_responder = pair[0]
            self.r.events.append(pair[1])
        for sa in self.endpoint.sas.values():
            self._last_responder = sa

    def _source(self, direction: str, data: bytes) -> Address:
        natt = data[:4] == NON_ESP_MARKER
        if direction == I2R:
            if self.nat is not None:
                return (self.nat[0], self.nat[1] + (1 if natt else 0))
            return (INITIATOR_ADDR[0], 4500 if natt else 500)
        return (RESPONDER_ADDR[0], 4500 if natt else 500)

    def deliver(self, direction: str, data: bytes) -> None:
        """Hand one datagram to its receiver now (bypassing the tap)."""
        src = self._source(direction, data)
        if direction == I2R:
            self.endpoint.receive_datagram(data, src, self.now)
        else:
            self.initiator.receive_datagram(data, src, self.now)
        self._collect()

    def flush(self) -> int:
        """Deliver everything in flight (through the tap) until the wire is empty."""
        moved = 0
        while self.wire:
            direction, data = self.wire.pop(0)
            index = self.counts[direction]
            self.counts[direction] += 1
            out = self.tap(direction, index, data) if self.tap else [data]
            for d in out:
                moved += 1
                self.deliver(direction, d)
        return moved

    def release_held(self) -> None:
        """Deliver datagrams a tap put in ``held`` (for reordering), oldest first."""
        held, self.held = self.held, []
        for direction, data in held:
            self.deliver(direction, data)

    # ------------------------------------------------------------------ clock

    def next_timer(self) -> float | None:
        times = [t for t in (self._initiator.get_timer() if self._initiator else None,) if t]
        t = self.endpoint.get_timer()
        if t is not None:
            times.append(t)
        return min(times) if times else None

    def advance(self, to: float) -> None:
        """Move the clock to ``to`` and fire every timer due."""
        self.now = max(self.now, to)
        if self._initiator is not None:
            timer = self._initiator.get_timer()
            if timer is not None and timer <= self.now:
                self._initiator.handle_timer(self.now)
        self.endpoint.handle_timer(self.now)
        self._collect()

    def run(self, duration: float = 30.0, until: Callable[[], bool] | None = None) -> None:
        """Exchange datagrams and follow timers for at most ``duration`` seconds of fake time."""
        end = self.now + duration
        while True:
            self._collect()
            self.flush()
            if until is not None and until():
                return
            t = self.next_timer()
            if t is None or t > end:
                return  # the clock stays at the last thing that happened
            self.advance(t)

    def settle(self) -> None:
        """Deliver what is in flight without moving the clock."""
        self._collect()
        while self.flush():
            pass


def is_ipv4(addr: str) -> bool:
    return ipaddress.ip_address(addr).version == 4
