"""The userspace datapath's inbound filter: the exact nftables script the peers' selectors
become, and that the table is rewritten only when that script changes."""

from __future__ import annotations

import ipaddress
import subprocess

import pytest

from kipsec_sidecar.core.ike.constants import ProtocolId
from kipsec_sidecar.core.traffic_selectors import TrafficSelector
from kipsec_sidecar.datapath import nftables
from kipsec_sidecar.datapath.base import DatapathError, PeerPolicy
from kipsec_sidecar.datapath.inbound_filter import InboundFilter, ruleset

DROP = "table inet kipsec_inbound\ndelete table inet kipsec_inbound\n"
HEAD = (
    "table inet kipsec_inbound {\n"
    "  chain inbound {\n"
    '    ct state invalid counter comment "conntrack reassembles fragments first"\n'
    '    iifname "kipsec0" accept\n'
    '    iif "lo" accept\n'
    "    meta l4proto { esp, ah } accept\n"
    "    udp dport { 500, 4500 } accept\n"
    "    icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit,"
    " nd-neighbor-advert, nd-redirect } accept\n"
)
TAIL = (
    "  }\n"
    "  chain input {\n"
    "    type filter hook input priority filter; policy accept;\n"
    "    jump inbound\n"
    "  }\n"
    "  chain forward {\n"
    "    type filter hook forward priority filter; policy accept;\n"
    "    jump inbound\n"
    "  }\n"
    "}\n"
)


def ts(
    first: str, last: str | None = None, protocol: int = 0, ports: str = "0-65535"
) -> TrafficSelector:
    start_port, _, end_port = ports.partition("-")
    return TrafficSelector(
        ipaddress.ip_address(first),
        ipaddress.ip_address(last or first),
        protocol,
        int(start_port),
        int(end_port or start_port),
    )


def peer(name: str, local: list[TrafficSelector], remote: list[TrafficSelector]) -> PeerPolicy:
    return PeerPolicy(
        peer=name,
        remote_addr=remote[0].start_addr,
        local_ts=tuple(local),
        remote_ts=tuple(remote),
        mode="tunnel",
        protocol=ProtocolId.ESP,
    )


def drops(*lines: str) -> str:
    return DROP + HEAD + "".join(f"    {line}\n" for line in lines) + TAIL


def test_no_peers_only_deletes_the_table() -> None:
    assert ruleset([], device="kipsec0") == DROP


def test_ipv4_host_pair_drops_everything_from_the_peer_to_the_pod() -> None:
    script = ruleset([peer("pb", [ts("10.0.0.1")], [ts("10.0.0.2")])], device="kipsec0")
    assert script == drops('ip saddr 10.0.0.2 ip daddr 10.0.0.1 drop comment "pb"')


def test_ipv6_prefixes_and_port_ranges_with_a_protocol() -> None:
    local = ts("fd00::1", protocol=17, ports="53")
    remote = ts("fd00::", "fd00::ff", protocol=17, ports="1000-2000")
    script = ruleset([peer("pc", [local], [remote])], device="kipsec0")
    assert script == drops(
        "ip6 saddr fd00::/120 ip6 daddr fd00::1 meta l4proto udp th sport 1000-2000 th dport 53"
        ' drop comment "pc"'
    )


def test_protocol_any_with_ports_drops_only_protocols_that_have_ports() -> None:
    script = ruleset(
        [peer("pd", [ts("10.0.0.1", ports="8000-8080")], [ts("10.0.0.2")])], device="kipsec0"
    )
    assert script == drops(
        "ip saddr 10.0.0.2 ip daddr 10.0.0.1 meta l4proto { tcp, udp, sctp, udplite }"
        ' th dport 8000-8080 drop comment "pd"'
    )


def test_one_side_naming_a_protocol_restricts_the_pair_to_it() -> None:
    script = ruleset(
        [peer("pe", [ts("10.1.0.3", "10.1.0.9")], [ts("10.2.0.0", "10.2.255.255", 6)])],
        device="kipsec0",
    )
    assert script == drops(
        'ip saddr 10.2.0.0/16 ip daddr 10.1.0.3-10.1.0.9 meta l4proto tcp drop comment "pe"'
    )


def test_port_ranges_of_a_protocol_without_ports_are_ignored_failing_closed() -> None:
    icmp_echo = ts("10.0.0.2", protocol=1, ports="2048")  # type 8 code 0
    script = ruleset([peer("pf", [ts("10.0.0.1")], [icmp_echo])], device="kipsec0")
    assert script == drops('ip saddr 10.0.0.2 ip daddr 10.0.0.1 meta l4proto 1 drop comment "pf"')


def test_pairs_that_cannot_match_are_left_out() -> None:
    local = [ts("10.0.0.1", protocol=6), ts("fd00::1")]
    remote = [ts("10.0.0.2", protocol=17), ts("fd00::2")]
    script = ruleset([peer("pg", local, remote)], device="kipsec0")
    assert script == drops('ip6 saddr fd00::2 ip6 daddr fd00::1 drop comment "pg"')


def test_peers_are_rendered_in_name_order_and_duplicates_once() -> None:
    b = peer("b", [ts("10.0.0.1")], [ts("10.0.0.2"), ts("10.0.0.2")])
    a = peer("a", [ts("10.0.0.1")], [ts("10.0.0.3")])
    assert ruleset([b, a], device="kipsec0") == drops(
        'ip saddr 10.0.0.3 ip daddr 10.0.0.1 drop comment "a"',
        'ip saddr 10.0.0.2 ip daddr 10.0.0.1 drop comment "b"',
    )


def test_device_and_ike_ports_come_from_the_caller() -> None:
    script = ruleset(
        [peer("pb", [ts("10.0.0.1")], [ts("10.0.0.2")])],
        device="kt0",
        ike_ports=(1500, 14500),
        table="t",
    )
    assert script.startswith("table inet t\ndelete table inet t\ntable inet t {\n")
    assert '    iifname "kt0" accept\n' in script
    assert "    udp dport { 1500, 14500 } accept\n" in script


# --- rewriting the table -----------------------------------------------------------------


class NftRecorder:
    """Stands in for the nft process: records each script, answers like nft would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, present: bool = True) -> None:
        self.scripts: list[str] = []
        self.present = present
        self.returncode = 0
        monkeypatch.setattr(nftables, "run_nft", self)

    def __call__(self, script: str) -> subprocess.CompletedProcess[str] | None:
        if not self.present:
            return None
        self.scripts.append(script)
        return subprocess.CompletedProcess(["nft"], self.returncode, "", "Error: refused\n")


PB = peer("pb", [ts("10.0.0.1")], [ts("10.0.0.2")])


def test_sync_writes_once_for_the_same_selectors(monkeypatch: pytest.MonkeyPatch) -> None:
    nft = NftRecorder(monkeypatch)
    table = InboundFilter("kipsec0")
    assert table.sync([PB]) is True
    assert table.sync([peer("pb", [ts("10.0.0.1")], [ts("10.0.0.2")])]) is False
    assert nft.scripts == [ruleset([PB], device="kipsec0")]


def test_sync_rewrites_when_a_peer_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    nft = NftRecorder(monkeypatch)
    table = InboundFilter("kipsec0")
    table.sync([PB])
    assert table.sync([]) is True
    assert nft.scripts[-1] == DROP


def test_refused_script_raises_and_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    nft = NftRecorder(monkeypatch)
    nft.returncode = 1
    table = InboundFilter("kipsec0")
    with pytest.raises(DatapathError, match="kipsec_inbound: Error: refused"):
        table.sync([PB])
    nft.returncode = 0
    assert table.sync([PB]) is True


def test_missing_nft_with_peers_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    NftRecorder(monkeypatch, present=False)
    with pytest.raises(DatapathError, match="nft command is missing"):
        InboundFilter("kipsec0").sync([PB])


def test_missing_nft_without_peers_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    NftRecorder(monkeypatch, present=False)
    assert InboundFilter("kipsec0").sync([]) is True


def test_require_names_the_missing_nft_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nftables, "available", lambda: False)
    with pytest.raises(DatapathError, match="install the nftables package"):
        InboundFilter("kipsec0").require()
