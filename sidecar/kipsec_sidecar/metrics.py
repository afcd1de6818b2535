"""Prometheus metrics of a sidecar, read from the controller's snapshot at scrape time.

Nothing in the daemon increments a metric: the collector asks ``controller.snapshot()``
on every scrape and turns it into metric families, so ``/metrics``, ``sas --json`` and
``/readyz`` always agree. The registry is our own :class:`~.exposition.Registry`, never
process-global, so two sidecars in one test process do not collide; the text exposition
is :mod:`kipsec_sidecar.exposition`'s (not prometheus-client's: see why there).

Label sets are bounded by configuration: states, modes, protocols, directions, reasons
(closed sets, e.g. :data:`~.handshake_failures.REASONS`) and peer names. An SPI, a pod
IP or an identity is never a label (each rekey would make a new series).

Per-peer traffic counters come from the child SAs, which vanish on rekey or delete. The
collector keeps what it last saw of each child and, when the child disappears, adds that
to a per-peer retired total, so ``kipsec_packets_total``/``kipsec_bytes_total`` never go
backwards (a spurious counter reset would make ``rate()`` report a huge spike). Traffic
a child carried after the last scrape before it vanished is not counted.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from . import __version__
from .core.ike.endpoint import REFUSALS
from .core.ike.engine import IkeState
from .exposition import CounterFamily, Family, GaugeFamily, ProcessCollector, Registry
from .handshake_failures import REASONS as FAILURE_REASONS
from .state import ChildSaView, Controller, SidecarSnapshot

PEER_STATES = ("idle", "connecting", "established", "down")
CHILD_STATES = ("installed", "rekeyed", "deleting")
MODES = ("tunnel", "transport")
PROTOCOLS = ("esp", "ah")
HANDSHAKE_RESULTS = ("success", "failure")
REKEY_KINDS = ("child", "ike")
DROP_REASONS = ("replay", "integrity", "no_sa", "policy", "malformed")
IKE_STATES = tuple(state.value for state in IkeState)


@dataclass(slots=True)
class _Traffic:
    """Packets and bytes of one peer in both directions."""

    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def add(self, other: _Traffic) -> None:
        self.packets_in += other.packets_in
        self.packets_out += other.packets_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out

    @classmethod
    def of(cls, child: ChildSaView) -> _Traffic:
        return cls(child.packets_in, child.packets_out, child.bytes_in, child.bytes_out)


_ChildKey = tuple[str, str, str, str]  # peer, child name, spi_in, spi_out


class TrafficTotals:
    """Monotonic per-peer packet and byte totals over child SAs that come and go.

    Feed it every snapshot (``update``); ``totals`` then holds, per peer present in the
    last snapshot, the live children's counters plus those of children seen earlier and
    since deleted or replaced. Peers that disappear (removed by a reload) are forgotten.
    """

    def __init__(self) -> None:
        self._live: dict[_ChildKey, _Traffic] = {}
        self._retired: dict[str, _Traffic] = {}
        self._lock = threading.Lock()

    def update(self, snapshot: SidecarSnapshot) -> dict[str, _Traffic]:
        """Account for ``snapshot`` and return the totals per peer, in snapshot order."""
        with self._lock:
            live: dict[_ChildKey, _Traffic] = {}
            for peer in snapshot.peers:
                for child in peer.children:
                    key = (peer.name, child.name, child.spi_in, child.spi_out)
                    live[key] = _Traffic.of(child)
            for key, seen in self._live.items():
                if key not in live:
                    self._retired.setdefault(key[0], _Traffic()).add(seen)
            self._live = live
            names = [peer.name for peer in snapshot.peers]
            self._retired = {name: t for name, t in self._retired.items() if name in names}
            totals = {name: _Traffic() for name in names}
            for name, retired in self._retired.items():
                totals[name].add(retired)
            for key, traffic in live.items():
                totals[key[0]].add(traffic)
            return totals


def _by_key(
    family: CounterFamily | GaugeFamily,
    values: dict[str, int],
    known: Iterable[str],
) -> CounterFamily | GaugeFamily:
    """One sample per known key (0 when absent) plus any key the daemon reported."""
    for key in dict.fromkeys([*known, *values]):
        family.add_metric([key], values.get(key, 0))
    return family


class SnapshotCollector:
    """A collector of metric families over a :class:`Controller`.

    ``collect`` calls ``controller.snapshot()`` once per scrape; whatever it raises
    reaches the caller of :func:`~.exposition.render` (the HTTP server answers 500).
    """

    def __init__(self, controller: Controller) -> None:
        self._controller = controller
        self._traffic = TrafficTotals()

    def describe(self) -> list[Family]:
        """The families without samples, so the registry can refuse duplicate names."""
        return list(self._families(None))

    def collect(self) -> Iterator[Family]:
        yield from self._families(self._controller.snapshot())

    def _families(self, snap: SidecarSnapshot | None) -> Iterator[Family]:
        ike = GaugeFamily(
            "kipsec_ike_sas",
            "IKE SAs currently held, by the engine's state (init-sent, established, ...) and "
            "IKE version (2, or 1 for IKEv1 peers).",
            labels=["state", "ike_version"],
        )
        child = GaugeFamily(
            "kipsec_child_sas",
            "Child SAs (ESP/AH SA pairs) currently in the datapath, by state, mode and "
            "protocol; 'rekeyed' ones are kept briefly for in-flight packets.",
            labels=["state", "mode", "protocol"],
        )
        peers = GaugeFamily(
            "kipsec_peers",
            "Configured peers by state (idle, connecting, established, down).",
            labels=["state"],
        )
        packets = CounterFamily(
            "kipsec_packets",
            "IPsec packets carried per peer: 'in' decapsulated and accepted, 'out' "
            "encapsulated and sent.",
            labels=["direction", "peer"],
        )
        octets = CounterFamily(
            "kipsec_bytes",
            "Bytes of the protected (inner) packets carried per peer and direction.",
            labels=["direction", "peer"],
        )
        handshakes = CounterFamily(
            "kipsec_handshakes",
            "IKE SA establishments attempted, by result (success, failure).",
            labels=["result"],
        )
        failures = CounterFamily(
            "kipsec_handshake_failures",
            "IKE SAs that failed before they were established, by reason: "
            "no_proposal_chosen, authentication_failed, ts_unacceptable, invalid_ke, "
            "peer_dead (no answer), other.",
            labels=["reason"],
        )
        rekeys = CounterFamily(
            "kipsec_rekeys",
            "Completed rekeys, by kind: child SA or IKE SA.",
            labels=["kind"],
        )
        auth = CounterFamily(
            "kipsec_auth_failures",
            "IKE authentications that failed (wrong PSK, untrusted or invalid certificate, "
            "bad signature), either side.",
        )
        drops = CounterFamily(
            "kipsec_dropped_packets",
            "Packets dropped by the datapath, by reason: replay (outside or seen in the "
            "replay window), integrity (ICV check failed), no_sa (unknown SPI or no "
            "outbound SA), policy (not allowed by the SPD), malformed (unparseable, or an "
            "IKE datagram for no IKE SA).",
            labels=["reason"],
        )
        errors = CounterFamily(
            "kipsec_datapath_errors",
            "Errors of the datapath itself (device, socket, install failures), by kind.",
            labels=["kind"],
        )
        half_open = GaugeFamily(
            "kipsec_ike_half_open_sas",
            "Responder IKE SAs that answered IKE_SA_INIT and wait for IKE_AUTH; from 10 on, "
            "new requests must echo a COOKIE.",
        )
        cookies = CounterFamily(
            "kipsec_ike_cookies_sent",
            "IKE_SA_INIT requests answered statelessly with a COOKIE (too many half-open SAs).",
        )
        refused = CounterFamily(
            "kipsec_ike_requests_refused",
            "IKE_SA_INIT requests refused before any state was made, by reason: unknown_peer "
            "(no peer has the source address), malformed, unsupported_critical.",
            labels=["reason"],
        )
        suppressed = CounterFamily(
            "kipsec_log_lines_suppressed",
            "Log lines held back by the rate limiter (per event, the first 10 per 10 s are "
            "written, then one summary).",
        )
        info = GaugeFamily(
            "kipsec_datapath_info",
            "The datapath in use (userspace or kernel) and why it was chosen; always 1.",
            labels=["datapath", "reason"],
        )
        ready = GaugeFamily(
            "kipsec_ready",
            "1 when every configured peer has an installed child SA (the /readyz rule), else 0.",
        )
        started = GaugeFamily(
            "kipsec_sidecar_start_time_seconds",
            "When the sidecar started, in seconds since 1970 (Unix time).",
        )
        build = GaugeFamily(
            "kipsec_build_info",
            "The kipsec version and Python version of this sidecar; always 1.",
            labels=["version", "python"],
        )
        if snap is not None:
            self._fill(snap, ike, child, peers, packets, octets)
            _by_key(handshakes, snap.handshakes, HANDSHAKE_RESULTS)
            _by_key(failures, snap.handshake_failures, FAILURE_REASONS)
            _by_key(rekeys, snap.rekeys, REKEY_KINDS)
            auth.add_metric([], snap.auth_failures)
            _by_key(drops, snap.drops, DROP_REASONS)
            _by_key(errors, snap.datapath_errors, ())
            half_open.add_metric([], snap.ike_half_open)
            cookies.add_metric([], snap.ike_cookies_sent)
            _by_key(refused, snap.ike_refused, REFUSALS)
            suppressed.add_metric([], snap.log_suppressed)
            info.add_metric([snap.datapath, snap.datapath_reason], 1)
            ready.add_metric([], 1 if snap.ready else 0)
            started.add_metric([], snap.started_at)
            build.add_metric([snap.version or __version__, platform.python_version()], 1)
        yield from (ike, child, peers, packets, octets, handshakes, failures, rekeys, auth, drops)
        yield from (errors, half_open, cookies, refused, suppressed, info, ready, started, build)

    def _fill(
        self,
        snap: SidecarSnapshot,
        ike: GaugeFamily,
        child: GaugeFamily,
        peers: GaugeFamily,
        packets: CounterFamily,
        octets: CounterFamily,
    ) -> None:
        ike_counts: dict[tuple[str, str], int] = {(state, "2"): 0 for state in IKE_STATES}
        peer_counts: dict[str, int] = {}
        child_counts: dict[tuple[str, str, str], int] = {
            (s, m, p): 0 for s in CHILD_STATES for m in MODES for p in PROTOCOLS
        }
        for peer in snap.peers:
            peer_counts[peer.state] = peer_counts.get(peer.state, 0) + 1
            if peer.ike_sa is not None:
                ike_key = (peer.ike_sa.state, str(peer.ike_sa.ike_version))
                ike_counts[ike_key] = ike_counts.get(ike_key, 0) + 1
            for sa in peer.children:
                key = (sa.state, sa.mode, sa.protocol)
                child_counts[key] = child_counts.get(key, 0) + 1
        for (state, version), count in ike_counts.items():
            ike.add_metric([state, version], count)
        _by_key(peers, peer_counts, PEER_STATES)
        for (state, mode, protocol), count in child_counts.items():
            child.add_metric([state, mode, protocol], count)
        for name, traffic in self._traffic.update(snap).items():
            packets.add_metric(["in", name], traffic.packets_in)
            packets.add_metric(["out", name], traffic.packets_out)
            octets.add_metric(["in", name], traffic.bytes_in)
            octets.add_metric(["out", name], traffic.bytes_out)


def build_registry(controller: Controller, *, process_metrics: bool = True) -> Registry:
    """A fresh registry with the sidecar's collector.

    ``process_metrics`` adds the standard ``process_*`` families (resident memory, CPU
    seconds, open file descriptors), read from /proc of this process.
    """
    registry = Registry()
    registry.register(SnapshotCollector(controller))
    if process_metrics:
        registry.register(ProcessCollector())
    return registry
