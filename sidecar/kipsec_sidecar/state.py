"""A read-only snapshot of what a running sidecar holds, and the actions it offers.

One shape serves three readers, so they cannot disagree: the control interface
(``kipsec-sidecar sas --json``), the Prometheus collector and the readiness probe. The
daemon builds a :class:`SidecarSnapshot` on demand; nothing here holds a key, a PSK or a
nonce — only SPIs, algorithm names, selectors, states and counters.

``to_json()`` is the stable ``--json`` output for scripts: fields are only ever added.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

JSON_VERSION = 1

PeerState = Literal["idle", "connecting", "established", "down"]
RekeyKind = Literal["child", "ike"]


@dataclass(frozen=True, slots=True)
class ChildSaView:
    """One child SA (a pair of ESP/AH SAs) as installed in the datapath."""

    name: str  #: the child configuration's name
    state: Literal["installed", "rekeyed", "deleting"]  #: rekeyed: replaced, kept for in-flight
    mode: Literal["tunnel", "transport"]
    protocol: Literal["esp", "ah"]
    spi_in: str  #: hex, 8 digits
    spi_out: str  #: hex, 8 digits
    encryption: str | None  #: e.g. "aes-gcm-16-256"; None for AH
    integrity: str | None  #: e.g. "hmac-sha2-256-128"; None with an AEAD cipher
    esn: bool
    encapsulation: Literal["udp", "raw"]
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    installed_at: float = 0.0  #: wall clock, seconds since 1970
    rekey_at: float | None = None  #: wall clock
    expire_at: float | None = None  #: wall clock


@dataclass(frozen=True, slots=True)
class IkeSaView:
    """One IKE SA with a peer."""

    state: str  #: the engine's IkeState value, e.g. "established"
    initiator: bool
    local_addr: str  #: "address:port"
    remote_addr: str  #: "address:port"
    local_id: str
    remote_id: str
    spi_i: str  #: hex, 16 digits
    spi_r: str  #: hex, 16 digits
    encryption: str
    prf: str
    dh_group: str
    nat_detected: bool
    established_at: float | None = None  #: wall clock
    ike_version: int = 2  #: 2 (IKEv2) or 1 (IKEv1, ISAKMP main mode)
    auth_method: int | None = None
    """IKEv1: the phase 1 authentication method negotiated (RFC 2409 appendix A: 1 PSK,
    3 RSA signatures, 4 and 5 RSA public-key encryption, 9-11 ECDSA); None for IKEv2."""


@dataclass(frozen=True, slots=True)
class PeerView:
    """A configured peer and what exists for it now."""

    name: str
    address: str
    keying: Literal["ike", "manual"]
    start: Literal["onStart", "onDemand", "none"]
    state: PeerState
    ike_sa: IkeSaView | None = None
    children: tuple[ChildSaView, ...] = ()
    last_error: str | None = None  #: the latest failure (no secrets), e.g. "AUTHENTICATION_FAILED"
    last_failure: str | None = None
    """``last_error`` as a closed reason (:data:`~.handshake_failures.REASONS`), for machines."""
    #: live IKE SAs (more than one briefly during a rekey or a collision); a detached
    #: IKEv1 SA (ISAKMP SA gone, IPsec SAs living on) is not one
    ike_sas: int = 0
    close_action: str = "none"  #: the effective closeAction (unset: what start implies)
    dpd_action: str = "none"  #: the effective dpdAction
    reconnect: str = "none"
    """What the peer does while it has no SA now: restart, onDemand or none (see
    ``daemon.actions``)."""
    terminated: bool = False  #: held down by ``terminate`` until ``initiate`` or a reload
    warnings: tuple[str, ...] = ()
    """What the operator should know about a working link (SHA-1 named for an IKEv1
    peer), from the configuration: the same lines the daemon logged at load."""


@dataclass(frozen=True, slots=True)
class SidecarSnapshot:
    """Everything the control interface, metrics and probes report, at one instant."""

    version: str
    datapath: str  #: "userspace" or "kernel"
    datapath_reason: str  #: why this datapath was chosen (capability probe or configuration)
    started_at: float  #: wall clock
    peers: tuple[PeerView, ...]
    handshakes: dict[str, int] = field(default_factory=dict)  #: by result: success, failure...
    handshake_failures: dict[str, int] = field(default_factory=dict)  #: by failure reason
    rekeys: dict[str, int] = field(default_factory=dict)  #: by kind: child, ike
    auth_failures: int = 0
    drops: dict[str, int] = field(default_factory=dict)  #: by reason: replay, integrity, ...
    datapath_errors: dict[str, int] = field(default_factory=dict)  #: by kind
    config_generation: int = 0  #: configurations applied since start (1: the first)
    config_digest: str = ""  #: SHA-256 hex of the applied document's bytes
    ike_half_open: int = 0  #: responder IKE SAs that answered IKE_SA_INIT, waiting for IKE_AUTH
    ike_cookies_sent: int = 0  #: IKE_SA_INIT requests answered with a COOKIE instead of state
    ike_refused: dict[str, int] = field(default_factory=dict)
    """IKE_SA_INIT requests refused before any state, by reason (``endpoint.REFUSALS``)."""
    log_suppressed: int = 0  #: log lines the rate limiter held back (``logs.LIMITER``)
    #: the datapath cannot carry traffic (an outbound worker that kept dying, see
    #: ``datapath.split``): not ready whatever the peers' SAs
    datapath_failed: bool = False

    @property
    def ready(self) -> bool:
        """Ready when every configured peer has an installed child SA and the datapath
        carries traffic (the /readyz rule)."""
        if self.datapath_failed:
            return False
        return all(any(c.state == "installed" for c in peer.children) for peer in self.peers)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["jsonVersion"] = JSON_VERSION
        data["ready"] = self.ready
        return data


class ControlError(Exception):
    """A control request could not be carried out; the message is shown to the operator."""


class ControlTimeout(ControlError):
    """A waited-for exchange had no outcome within the time given (``--wait``)."""


class Controller(Protocol):
    """What the daemon offers the control interface. Unknown peers raise ControlError.

    With ``wait`` (seconds) the peer commands return when the exchange completed, raise
    ControlError with the reason when it failed and ControlTimeout when it had no
    outcome in time; without it they return once the request is sent.
    """

    def snapshot(self) -> SidecarSnapshot: ...

    async def initiate(self, peer: str, wait: float | None = None) -> None:
        """Start the IKE SA (and its children) with ``peer`` now, if it has none, and
        end a ``terminate``."""

    async def rekey(self, peer: str, kind: RekeyKind, wait: float | None = None) -> None:
        """Rekey the peer's child SAs (``child``) or its IKE SA (``ike``) now."""

    async def terminate(self, peer: str, wait: float | None = None) -> None:
        """Delete the peer's SAs (sending DELETE) and hold it down (no initiation of
        ours, its traffic dropped) until ``initiate`` or a reload."""

    async def reload(self) -> list[str]:
        """Re-read the configuration file; return one line per peer added/removed/changed."""
