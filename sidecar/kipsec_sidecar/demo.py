"""The README's main job for now: two IKEv2 peers in one process, then a packet through ESP.

Nothing here touches the network: the initiator (an :class:`IkeSa`) and the responder
(an :class:`Endpoint`) hand each other datagrams through a list, exactly as the sockets
of the daemon will. It shows, end to end, what the protocol cores do: IKE_SA_INIT and
IKE_AUTH (once with a pre-shared key, once with ECDSA certificates from a throwaway CA),
the child SAs both sides install, and an IPv4 packet encapsulated in ESP tunnel mode by
one side and decapsulated by the other with the negotiated keys.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .core import esp
from .core.ike.config import AuthConfig, ChildConfig, Identity, IkeConfig
from .core.ike.constants import EncrId, IntegId, PrfId
from .core.ike.endpoint import Endpoint
from .core.ike.engine import IkeSa
from .core.ike.events import ChildSaEstablished, Event, IkeSaEstablished
from .core.ip import build_ipv4
from .core.negotiated import sa_pair
from .core.traffic_selectors import TrafficSelector

ALICE = ("192.0.2.1", 500)
BOB = ("192.0.2.2", 500)
ALICE_PODS = "10.1.0.0/24"
BOB_PODS = "10.2.0.0/24"

Print = Callable[[str], None]


@dataclass
class Handshake:
    """What one handshake produced: each side's events and the datagrams exchanged."""

    alice: list[Event] = field(default_factory=list)
    bob: list[Event] = field(default_factory=list)
    datagrams: list[tuple[str, int]] = field(default_factory=list)

    def child(self, side: list[Event]) -> ChildSaEstablished:
        return next(e for e in side if isinstance(e, ChildSaEstablished))

    def ike(self, side: list[Event]) -> IkeSaEstablished:
        return next(e for e in side if isinstance(e, IkeSaEstablished))


def _children(local: str, remote: str) -> tuple[ChildConfig, ...]:
    return (
        ChildConfig(
            "pods",
            (TrafficSelector.from_network(local),),
            (TrafficSelector.from_network(remote),),
        ),
    )


def handshake(alice_auth: AuthConfig, bob_auth: AuthConfig, *, epoch: float = 0.0) -> Handshake:
    """Run IKE_SA_INIT + IKE_AUTH between alice (initiator) and bob (responder) in memory."""
    alice_cfg = IkeConfig(
        auth=alice_auth,
        children=_children(ALICE_PODS, BOB_PODS),
        local_addr=ALICE,
        wall_clock_epoch=epoch,
    )
    bob_cfg = IkeConfig(
        auth=bob_auth,
        children=_children(BOB_PODS, ALICE_PODS),
        local_addr=BOB,
        wall_clock_epoch=epoch,
    )
    result = Handshake()
    now = 0.0
    alice = IkeSa.initiator(alice_cfg, BOB, rng=os.urandom, now=now)
    bob = Endpoint(bob_cfg, rng=os.urandom, now=now)
    for _ in range(20):  # two exchanges need four datagrams; the bound stops a runaway loop
        moved = False
        for data, _addr in alice.datagrams_to_send(now):
            result.datagrams.append(("alice -> bob", len(data)))
            bob.receive_datagram(data, ALICE, now)
            moved = True
        for data, _addr in bob.datagrams_to_send(now):
            result.datagrams.append(("bob -> alice", len(data)))
            alice.receive_datagram(data, BOB, now)
            moved = True
        while (event := alice.next_event()) is not None:
            result.alice.append(event)
        while (pair := bob.next_event()) is not None:
            result.bob.append(pair[1])
        if not moved:
            break
        now += 0.001
    return result


def _name(enum: type, value: int | None) -> str:
    if value is None:
        return "-"
    try:
        return str(enum(value).name)
    except ValueError:
        return str(value)


def print_sas(name: str, events: list[Event], out: Print) -> None:
    for event in events:
        if isinstance(event, IkeSaEstablished):
            out(
                f"  {name}: IKE SA {event.spi_i.hex()}_i {event.spi_r.hex()}_r "
                f"{event.local_id} <-> {event.remote_id}"
            )
            out(
                f"      {_name(EncrId, event.encr_id)}-{event.encr_key_bits} "
                f"{_name(PrfId, event.prf_id)} DH group {event.dh_group}"
            )
        elif isinstance(event, ChildSaEstablished):
            local = ", ".join(str(ts) for ts in event.local_ts)
            remote = ", ".join(str(ts) for ts in event.remote_ts)
            out(
                f"  {name}: CHILD SA {event.name!r} ESP {event.mode} "
                f"in {event.spi_in.hex()} out {event.spi_out.hex()}"
            )
            out(
                f"      {_name(EncrId, event.encr_id)}-{event.encr_key_bits} "
                f"integrity {_name(IntegId, event.integ_id)}  {local} === {remote}"
            )
        else:
            out(f"  {name}: {type(event).__name__}")


def carry_packet(result: Handshake, out: Print) -> bool:
    """Alice encapsulates a pod packet with her outbound SA; Bob opens it with his inbound SA."""
    alice = sa_pair(result.child(result.alice), ALICE[0], BOB[0])
    bob = sa_pair(result.child(result.bob), BOB[0], ALICE[0])
    payload = b"hello from pod 10.1.0.5 to pod 10.2.0.7"
    udp = struct.pack("!HHHH", 40000, 7, 8 + len(payload), 0) + payload  # checksum 0: none
    inner = build_ipv4(IPv4Address("10.1.0.5"), IPv4Address("10.2.0.7"), 17, len(udp)) + udp
    wire = esp.encapsulate(alice.outbound, inner, os.urandom)
    back = esp.decapsulate(bob.inbound, wire)
    ok = back == inner and payload not in wire
    out(
        f"  packet: {len(inner)} bytes inner -> {len(wire)} bytes ESP "
        f"(SPI {alice.outbound.spi:08x}) -> {len(back)} bytes decrypted: "
        + ("identical, plaintext absent from the wire" if ok else "MISMATCH")
    )
    return ok


def _ca_and_leaf(
    names: list[str], now: dt.datetime
) -> tuple[x509.Certificate, list[tuple[ec.EllipticCurvePrivateKey, x509.Certificate]]]:
    """A throwaway ECDSA P-256 CA and one leaf per name (FQDN SAN), valid for a day."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kipsec demo CA")])
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=1)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaves = []
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        leaves.append((key, cert))
    return ca, leaves


def main(out: Print = print) -> int:
    """Run both handshakes and the packet round trip; 0 when everything checked out."""
    ok = True
    out("kipsec demo: IKEv2 between two in-memory peers, then a packet through ESP\n")

    out("1. Pre-shared key (IKE_SA_INIT + IKE_AUTH)")
    psk = os.urandom(32)
    result = handshake(
        AuthConfig("psk", Identity.fqdn("alice.demo"), Identity.fqdn("bob.demo"), psk=psk),
        AuthConfig("psk", Identity.fqdn("bob.demo"), Identity.fqdn("alice.demo"), psk=psk),
    )
    out("  datagrams: " + ", ".join(f"{d} {n}B" for d, n in result.datagrams))
    print_sas("alice", result.alice, out)
    print_sas("bob  ", result.bob, out)
    ok &= carry_packet(result, out)

    out("\n2. ECDSA P-256 certificates from a throwaway CA (RFC 7427 signatures)")
    wall = time.time()
    ca, ((alice_key, alice_cert), (bob_key, bob_cert)) = _ca_and_leaf(
        ["alice.demo", "bob.demo"], dt.datetime.fromtimestamp(wall, dt.UTC)
    )
    der = serialization.Encoding.DER
    anchors = (ca.public_bytes(der),)
    result = handshake(
        AuthConfig(
            "signature",
            Identity.fqdn("alice.demo"),
            Identity.fqdn("bob.demo"),
            private_key=alice_key,
            certificates=(alice_cert.public_bytes(der),),
            trust_anchors=anchors,
        ),
        AuthConfig(
            "signature",
            Identity.fqdn("bob.demo"),
            Identity.fqdn("alice.demo"),
            private_key=bob_key,
            certificates=(bob_cert.public_bytes(der),),
            trust_anchors=anchors,
        ),
        epoch=wall,
    )
    out("  datagrams: " + ", ".join(f"{d} {n}B" for d, n in result.datagrams))
    print_sas("alice", result.alice, out)
    print_sas("bob  ", result.bob, out)
    ok &= carry_packet(result, out)

    out("\n" + ("OK: both handshakes completed and ESP round-tripped" if ok else "FAILED"))
    return 0 if ok else 1
