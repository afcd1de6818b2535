"""From the cores' IpsecSa and the daemon's PeerPolicy to XFRM state and policy values."""

from __future__ import annotations

import ipaddress

import pytest

from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Lifetime, Mode
from kipsec_sidecar.core.traffic_selectors import TrafficSelector
from kipsec_sidecar.datapath.base import PeerPolicy
from kipsec_sidecar.datapath.xfrm_sa import (
    REQID_RANGE,
    SaKeys,
    XfrmDir,
    XfrmEncap,
    XfrmMappingError,
    XfrmMode,
    XfrmProto,
    XfrmSelector,
    XfrmStateFlag,
    owner_mark,
    peer_policies,
    port_masks,
    ranges_to_networks,
    safety_net_seconds,
    selectors,
    state_selector,
    state_spec,
)

A = ipaddress.ip_address("192.0.2.11")
B = ipaddress.ip_address("192.0.2.12")
A6 = ipaddress.ip_address("2001:db8::11")
B6 = ipaddress.ip_address("2001:db8::12")
REQID = REQID_RANGE[1]
MARK = owner_mark()


def sa(**kw: object) -> IpsecSa:
    values: dict[str, object] = {
        "spi": 0x1001,
        "src": A,
        "dst": B,
        "protocol": ProtocolId.ESP,
        "mode": Mode.TUNNEL,
    }
    values.update(kw)
    return IpsecSa(**values)  # type: ignore[arg-type]


def test_aes_gcm_maps_to_rfc4106_with_key_and_salt_and_a_128_bit_icv() -> None:
    key = bytes(range(36))
    spec = state_spec(
        sa(encr_id=EncrId.AES_GCM_16, encr_key=key), SaKeys(key), reqid=REQID, mark=MARK
    )
    assert spec.aead is not None and spec.crypt is None and spec.auth is None
    assert (spec.aead.name, spec.aead.key, spec.aead.key_bits, spec.aead.icv_bits) == (
        "rfc4106(gcm(aes))",
        key,
        288,
        128,
    )
    assert (spec.proto, spec.mode, spec.reqid, spec.mark) == (
        XfrmProto.ESP,
        XfrmMode.TUNNEL,
        REQID,
        MARK,
    )
    assert spec.selector == XfrmSelector.any(4)


def test_chacha20_poly1305_maps_to_rfc7539esp() -> None:
    key = bytes(36)
    spec = state_spec(
        sa(encr_id=EncrId.CHACHA20_POLY1305, encr_key=key), SaKeys(key), reqid=REQID, mark=MARK
    )
    assert spec.aead is not None
    assert (spec.aead.name, spec.aead.key_bits) == ("rfc7539esp(chacha20,poly1305)", 288)


@pytest.mark.parametrize(
    ("integ", "key_len", "name", "trunc"),
    [
        (IntegId.HMAC_SHA2_256_128, 32, "hmac(sha256)", 128),
        (IntegId.HMAC_SHA2_384_192, 48, "hmac(sha384)", 192),
        (IntegId.HMAC_SHA2_512_256, 64, "hmac(sha512)", 256),
    ],
)
def test_aes_cbc_maps_to_cbc_aes_plus_truncated_hmac(
    integ: IntegId, key_len: int, name: str, trunc: int
) -> None:
    keys = SaKeys(bytes(32), bytes(key_len))
    ipsec_sa = sa(
        encr_id=EncrId.AES_CBC, encr_key=keys.encr_key, integ_id=integ, integ_key=keys.integ_key
    )
    spec = state_spec(ipsec_sa, keys, reqid=REQID, mark=MARK)
    assert spec.crypt is not None and spec.auth is not None and spec.aead is None
    assert (spec.crypt.name, spec.crypt.key_bits) == ("cbc(aes)", 256)
    assert (spec.auth.name, spec.auth.icv_bits, spec.auth.key_bits) == (name, trunc, key_len * 8)


def test_ah_maps_to_a_truncated_hmac_only() -> None:
    keys = SaKeys(integ_key=bytes(32))
    spec = state_spec(
        sa(
            protocol=ProtocolId.AH,
            mode=Mode.TRANSPORT,
            integ_id=IntegId.HMAC_SHA2_256_128,
            integ_key=keys.integ_key,
        ),
        keys,
        reqid=REQID,
        mark=MARK,
    )
    assert (spec.proto, spec.mode) == (XfrmProto.AH, XfrmMode.TRANSPORT)
    assert spec.aead is None and spec.crypt is None
    assert spec.auth is not None and spec.auth.name == "hmac(sha256)"


@pytest.mark.parametrize(
    ("protocol", "src", "dst", "esn", "flags"),
    [
        (ProtocolId.AH, A, B, False, XfrmStateFlag.ALIGN4),
        (ProtocolId.AH, A, B, True, XfrmStateFlag.ALIGN4 | XfrmStateFlag.ESN),
        (ProtocolId.AH, A6, B6, False, 0),
        (ProtocolId.ESP, A, B, False, 0),
    ],
    ids=["ah-ipv4", "ah-ipv4-esn", "ah-ipv6", "esp-ipv4"],
)
def test_ipv4_ah_states_pad_the_icv_to_32_bits_as_rfc_4302_says(
    protocol: ProtocolId, src: object, dst: object, esn: bool, flags: int
) -> None:
    """Without XFRM_STATE_ALIGN4 Linux pads IPv4 AH to 64 bits and drops the 32-bit
    aligned AH of strongSwan and of kipsec's userspace datapath (issue 12)."""
    options: dict[str, object] = (
        {"integ_id": IntegId.HMAC_SHA2_256_128, "integ_key": bytes(32)}
        if protocol == ProtocolId.AH
        else {"encr_id": EncrId.AES_GCM_16, "encr_key": bytes(20)}
    )
    ipsec_sa = sa(protocol=protocol, src=src, dst=dst, esn=esn, **options)
    assert state_spec(ipsec_sa, reqid=REQID, mark=MARK).flags == flags


def test_replay_window_esn_and_byte_and_packet_lifetimes_carry_over() -> None:
    key = bytes(20)
    ipsec_sa = sa(
        encr_id=EncrId.AES_GCM_16,
        encr_key=key,
        esn=True,
        replay_window=2048,
        lifetime=Lifetime(soft_bytes=10, hard_bytes=20, soft_packets=3, hard_packets=4),
    )
    spec = state_spec(ipsec_sa, SaKeys(key), reqid=REQID, mark=MARK, lifetime_seconds=(50, 60))
    assert (spec.replay_window, spec.esn, spec.flags) == (2048, True, 128)
    lt = spec.lifetime
    assert (lt.soft_bytes, lt.hard_bytes, lt.soft_packets, lt.hard_packets) == (10, 20, 3, 4)
    assert (lt.soft_add_seconds, lt.hard_add_seconds) == (50, 60)


def test_udp_encapsulated_sa_needs_the_daemons_ports() -> None:
    key = bytes(36)
    udp_sa = sa(encr_id=EncrId.AES_GCM_16, encr_key=key, udp_encap=True)
    with pytest.raises(XfrmMappingError, match="encap ports are unset"):
        state_spec(udp_sa, SaKeys(key), reqid=REQID, mark=MARK)
    spec = state_spec(udp_sa, SaKeys(key), reqid=REQID, mark=MARK, encap=XfrmEncap(4500, 4500))
    assert spec.encap == XfrmEncap(4500, 4500, 2)


def test_keys_that_do_not_fit_the_sa_are_refused_naming_the_field() -> None:
    ipsec_sa = sa(encr_id=EncrId.AES_GCM_16, encr_key=bytes(36))
    with pytest.raises(XfrmMappingError, match=r"encr_key is 160 bits .* needs 288"):
        state_spec(ipsec_sa, SaKeys(bytes(20)), reqid=REQID, mark=MARK)


def test_reqids_outside_kipsecs_range_are_refused() -> None:
    ipsec_sa = sa(encr_id=EncrId.AES_GCM_16, encr_key=bytes(36))
    with pytest.raises(XfrmMappingError, match="reqid 0x5 is outside"):
        state_spec(ipsec_sa, SaKeys(bytes(36)), reqid=5, mark=MARK)


def test_owner_mark_has_value_zero_so_it_matches_unmarked_packets() -> None:
    assert (MARK.value, MARK.mask) == (0, 0x00800000)
    with pytest.raises(XfrmMappingError, match="owner_mask"):
        owner_mark(0)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 0xFFFF, [(0, 0)]),
        (443, 443, [(443, 0xFFFF)]),
        (1000, 1003, [(1000, 0xFFFC)]),
        (1000, 1004, [(1000, 0xFFFC), (1004, 0xFFFF)]),
        (1, 3, [(1, 0xFFFF), (2, 0xFFFE)]),
        (0, 1023, [(0, 0xFC00)]),
    ],
)
def test_port_ranges_become_port_mask_blocks(
    start: int, end: int, expected: list[tuple[int, int]]
) -> None:
    blocks = port_masks(start, end)
    assert blocks == expected
    covered = {p for p in range(0x10000) for port, mask in blocks if p & mask == port}
    assert covered == set(range(start, end + 1))


def test_address_ranges_become_prefixes() -> None:
    nets = ranges_to_networks(ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.6"))
    assert [str(n) for n in nets] == ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]


def test_selectors_refuse_mixed_families_and_conflicting_protocols() -> None:
    v4 = TrafficSelector.from_network("10.0.0.0/8")
    v6 = TrafficSelector.from_network("2001:db8::/32")
    with pytest.raises(XfrmMappingError, match="mix IPv4 and IPv6"):
        list(selectors(v4, v6))
    with pytest.raises(XfrmMappingError, match="protocols differ"):
        list(
            selectors(
                TrafficSelector.from_network("10.0.0.0/8", 6),
                TrafficSelector.from_network("10.0.0.0/8", 17),
            )
        )


def policy(**kw: object) -> PeerPolicy:
    values: dict[str, object] = {
        "peer": "b",
        "remote_addr": B,
        "local_ts": (TrafficSelector.from_network("10.10.1.0/24"),),
        "remote_ts": (TrafficSelector.from_network("10.10.2.0/24"),),
        "mode": "tunnel",
        "protocol": ProtocolId.ESP,
        "encapsulation": "raw",
    }
    values.update(kw)
    return PeerPolicy(**values)  # type: ignore[arg-type]


def test_tunnel_peer_gets_out_and_in_policies_with_mirrored_templates() -> None:
    out, inbound = peer_policies(policy(), local_addr=A, reqid=REQID, mark=MARK)
    assert out.direction == XfrmDir.OUT and inbound.direction == XfrmDir.IN
    assert (str(out.selector.src), str(out.selector.dst)) == ("10.10.1.0/24", "10.10.2.0/24")
    assert (str(inbound.selector.src), str(inbound.selector.dst)) == (
        "10.10.2.0/24",
        "10.10.1.0/24",
    )
    (t_out,) = out.templates
    (t_in,) = inbound.templates
    assert (t_out.src, t_out.dst, t_in.src, t_in.dst) == (A, B, B, A)
    assert t_out.mode == XfrmMode.TUNNEL and t_out.reqid == t_in.reqid == REQID
    assert out.mark == inbound.mark == MARK


def test_gateway_peer_also_gets_a_forward_policy() -> None:
    specs = peer_policies(policy(), local_addr=A, reqid=REQID, mark=MARK, forward=True)
    assert [s.direction for s in specs] == [XfrmDir.OUT, XfrmDir.IN, XfrmDir.FWD]


def test_every_selector_pair_gets_policies() -> None:
    two = (
        TrafficSelector.from_network("10.10.1.0/24"),
        TrafficSelector.from_network("10.10.9.0/24"),
    )
    specs = peer_policies(policy(local_ts=two), local_addr=A, reqid=REQID, mark=MARK)
    assert len(specs) == 4


def test_transport_mode_needs_the_local_address() -> None:
    with pytest.raises(XfrmMappingError, match="transport mode needs local_addr"):
        peer_policies(policy(mode="transport"), local_addr=None, reqid=REQID, mark=MARK)


def test_tunnel_mode_lets_the_kernel_pick_the_source() -> None:
    out, _ = peer_policies(policy(), local_addr=None, reqid=REQID, mark=MARK)
    assert out.templates[0].src == ipaddress.ip_address("0.0.0.0")


def test_ah_with_udp_encapsulation_is_refused() -> None:
    with pytest.raises(XfrmMappingError, match="AH cannot be UDP-encapsulated"):
        peer_policies(
            policy(protocol=ProtocolId.AH, encapsulation="udp"),
            local_addr=A,
            reqid=REQID,
            mark=MARK,
        )


@pytest.mark.parametrize(
    ("child_lifetime", "kernel"),
    [(3600.0, 3960), (30.0, 35), (10.5, 16), (None, 0)],
)
def test_the_kernels_safety_net_outlives_the_engines_child_lifetime(
    child_lifetime: float | None, kernel: int
) -> None:
    # The engine deletes first while the daemon runs (10 %, at least 5 s later); 0 is
    # "no limit" for manually keyed SAs, which have no time lifetime.
    assert safety_net_seconds(child_lifetime) == kernel


def test_the_safety_net_is_a_hard_add_time_limit_only() -> None:
    spec = state_spec(
        sa(encr_id=EncrId.AES_GCM_16, encr_key=bytes(36)),
        reqid=REQID,
        mark=MARK,
        lifetime_seconds=(0, safety_net_seconds(30.0)),
    )
    assert (spec.lifetime.soft_add_seconds, spec.lifetime.hard_add_seconds) == (0, 35)


def gcm(**kw: object) -> IpsecSa:
    return sa(encr_id=EncrId.AES_GCM_16, encr_key=bytes(36), **kw)


def test_a_state_carries_the_negotiated_selectors_in_its_own_direction() -> None:
    negotiated = gcm(
        local_ts=(TrafficSelector.host("10.10.1.2"),),
        remote_ts=(TrafficSelector.from_network("10.10.2.2/32"),),
    )
    configured = policy()  # 10.10.1.0/24 <-> 10.10.2.0/24: the peer narrowed it

    out = state_selector(negotiated, configured, inbound=False)
    inbound = state_selector(negotiated, configured, inbound=True)

    assert out is not None and inbound is not None
    assert (str(out.src), str(out.dst)) == ("10.10.1.2/32", "10.10.2.2/32")
    assert (str(inbound.src), str(inbound.dst)) == ("10.10.2.2/32", "10.10.1.2/32")


def test_a_negotiated_port_range_in_one_block_keeps_its_protocol_and_ports() -> None:
    web = TrafficSelector.from_network("10.10.2.0/24", protocol=6, start_port=443, end_port=443)
    negotiated = gcm(
        local_ts=(TrafficSelector.from_network("10.10.1.0/24", protocol=6),), remote_ts=(web,)
    )

    inbound = state_selector(negotiated, policy(), inbound=True)

    assert inbound is not None
    assert (inbound.proto, inbound.sport, inbound.sport_mask) == (6, 443, 0xFFFF)
    assert (inbound.dport, inbound.dport_mask) == (0, 0)


def test_selectors_that_take_several_xfrm_selectors_leave_the_state_any_of_its_family() -> None:
    split = TrafficSelector.from_network("10.10.2.0/24", protocol=6, start_port=8000, end_port=8080)
    several = gcm(local_ts=(TrafficSelector.host("10.10.1.2"),), remote_ts=(split,))
    two = gcm(
        local_ts=(TrafficSelector.host("10.10.1.2"),),
        remote_ts=(
            TrafficSelector.host("10.10.2.2"),
            TrafficSelector.host("10.10.2.3"),
        ),
    )
    manual_without_ts = gcm()

    for ipsec_sa in (several, two, manual_without_ts):
        assert state_selector(ipsec_sa, policy(), inbound=True) == XfrmSelector.any(4)
