"""IKEv1 interoperability with strongSwan 5.9.8 (charon with ``version = 1``): main mode
with a pre-shared key, quick mode with and without PFS, traffic both ways through the
userspace datapath, Delete from each side.

Topology and roles as in ``test_strongswan_interop``: charon (kernel-libipsec) is the
gateway of pod CIDR 10.10.2.0/24 on node b, the kipsec sidecar the gateway of
10.10.1.0/24 on node a. With kernel-libipsec charon keeps ``encap = yes``: it fakes the
NAT-D hashes of main mode messages 3/4, so both sides float to UDP 4500 from message 5
and quick mode asks for UDP-encapsulated tunnel mode (RFC 3947) — kipsec's IKEv1 NAT-T
path is exercised by every test here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from support.interop import (
    add_gateway_nodes,
    assert_traffic_both_ways_only_encrypted,
    gateway_peer,
    kipsec_installed_spis,
    mirrored,
)
from support.netns import Topology, stop_process
from support.pki import DEFAULT_NOT_AFTER, CertificateAuthority, KeyKind
from support.sequenced import sequenced_stream
from support.sidecars import Sidecar, established, fqdn, wait_until
from support.strongswan import CertAuth, Charon, CharonFactory, IkeSa, Psk, gateway_pair

pytestmark = pytest.mark.netns

PSK_TEXT = "ikev1 interop pre-shared key"
Setup = Callable[..., tuple[Sidecar, Charon]]


@pytest.fixture
def interop_v1(
    gateway_topology: Topology, strongswan_factory: CharonFactory, tmp_path: Path
) -> Setup:
    """``setup(ike, esp, kipsec_initiates)`` → kipsec on a and charon on b, established."""
    topo = gateway_topology
    add_gateway_nodes(topo)

    def setup(
        ike: str = "aes256-sha256-modp2048",
        esp: str = "aes128-sha256",
        kipsec_initiates: bool = True,
        *,
        charon_secret: str = PSK_TEXT,
        auth: str = "psk",
        liveness: dict[str, Any] | None = None,
        dpd_delay: int | None = None,
        charon_ike: str | None = None,
        charon_esp: str | None = None,
        expect_failure: bool = False,
        lifetimes: dict[str, Any] | None = None,
        charon_issuer: CertificateAuthority | None = None,
        kipsec_issuer: CertificateAuthority | None = None,
        charon_not_after: datetime = DEFAULT_NOT_AFTER,
        kipsec_expects: str | None = None,
        initiate_timeout: float = 15,
    ) -> tuple[Sidecar, Charon]:
        """With certificates (``auth`` rsa / ecdsa) one root issues both and is the only
        trust anchor of both, unless ``charon_issuer`` / ``kipsec_issuer`` issues that
        side's certificate instead; ``charon_not_after`` ends charon's certificate and
        ``kipsec_expects`` replaces the identity kipsec expects of charon."""
        sidecar = Sidecar(topo, "a", tmp_path)
        peer = gateway_peer(
            topo,
            ikeVersion=1,
            start="onStart" if kipsec_initiates else "onDemand",
            identity={"fqdn": kipsec_expects or fqdn("b")},
        )
        charon_auth: Psk | CertAuth = Psk(charon_secret)
        local: dict[str, Any] = {"auth": {"psk": {"value": PSK_TEXT}}}
        if auth != "psk":
            root = CertificateAuthority.root("kipsec ikev1 interop root")
            kind: KeyKind = "rsa" if auth == "rsa" else "ec256"
            ours = (kipsec_issuer or root).issue("a", dns=[fqdn("a")], key_kind=kind, key_slot=80)
            theirs = (charon_issuer or root).issue(
                "b", dns=[fqdn("b")], key_kind=kind, key_slot=81, not_after=charon_not_after
            )
            local = {"auth": sidecar.certificate_auth(ours, root)}
            charon_auth = CertAuth(theirs, (root.cert,))
        extra: dict[str, Any] = {"liveness": liveness} if liveness else {}
        if lifetimes:
            extra["lifetimes"] = lifetimes
        sidecar.write([peer], local=local, proposals={"ike": [ike], "esp": [esp]}, **extra)
        _, conn_b = gateway_pair(
            topo,
            "a",
            "b",
            auth=(charon_auth, charon_auth),
            ids=(fqdn("a"), fqdn("b")),
            version=1,
            encap=True,
            proposals=(charon_ike or ike,),
            child_options={"esp_proposals": (charon_esp or esp,)},
            extra={"aggressive": "no"},
            dpd_delay=dpd_delay,
        )
        charon = strongswan_factory(topo, "b")
        charon.configure(conn_b)
        charon.load()
        sidecar.start()
        if not kipsec_initiates:
            try:
                charon.initiate("net", timeout=initiate_timeout)
            except AssertionError:
                if not expect_failure:
                    raise
        return sidecar, charon

    return setup


def wait_up(sidecar: Sidecar, charon: Charon) -> IkeSa:
    sa = charon.wait_established(child="net", timeout=15)
    wait_until("kipsec established with charon", established(sidecar, "b"), timeout=15)
    return sa


@pytest.mark.parametrize(
    ("kipsec_initiates", "ike", "esp", "charon_esp"),
    [
        (True, "aes256-sha256-modp2048", "aes128-sha256", ("AES_CBC", 128, "")),
        (True, "aes128-sha256-ecp256", "aes256-sha256-ecp256", ("AES_CBC", 256, "ECP_256")),
        (False, "aes256-sha256-modp2048", "aes256gcm16", ("AES_GCM_16", 256, "")),
        (False, "aes128-sha256-ecp256", "aes128-sha256-modp2048", ("AES_CBC", 128, "MODP_2048")),
    ],
    ids=["kipsec-initiates-modp2048", "kipsec-initiates-ecp256-pfs",
         "strongswan-initiates-modp2048-gcm", "strongswan-initiates-ecp256-pfs"],
)  # fmt: skip
def test_ikev1_psk_main_mode_and_quick_mode_carry_traffic_both_ways(
    interop_v1: Setup,
    gateway_topology: Topology,
    tmp_path: Path,
    kipsec_initiates: bool,
    ike: str,
    esp: str,
    charon_esp: tuple[str, int, str],
) -> None:
    sidecar, charon = interop_v1(ike, esp, kipsec_initiates)
    sa = wait_up(sidecar, charon)
    charon_child = sa.child("net")
    assert charon_child is not None
    # What charon negotiated: the cipher, its key size and the quick mode PFS group.
    encr, bits, pfs = charon_esp
    assert (charon_child.encr_alg, charon_child.encr_keysize, charon_child.dh_group) == (
        encr,
        bits,
        pfs,
    ), charon_child
    assert sa.initiator is not kipsec_initiates
    assert sa.remote_id == fqdn("a")
    view = sidecar.peer("b")
    assert view["ike_sa"]["ike_version"] == 1
    assert view["ike_sa"]["initiator"] is kipsec_initiates
    assert view["ike_sa"]["nat_detected"], "libipsec fakes a NAT: kipsec must see one"
    assert_traffic_both_ways_only_encrypted(gateway_topology, tmp_path / "wire.pcap")
    (child,) = sidecar.installed("b")
    assert child["encapsulation"] == "udp", child
    assert mirrored(sidecar, charon)
    assert child["packets_in"] >= 4 and child["packets_out"] >= 4, child
    if kipsec_initiates:  # message 5 carries INITIAL-CONTACT, and charon parses it
        log = (tmp_path / "strongswan-b" / "charon.log").read_text()
        assert "[ ID HASH N(INITIAL_CONTACT) ]" in log


@pytest.mark.parametrize(
    "kipsec_initiates", [True, False], ids=["kipsec-initiates", "strongswan-initiates"]
)
def test_sha1_named_for_a_legacy_peer_establishes_with_a_warning(
    interop_v1: Setup, gateway_topology: Topology, tmp_path: Path, kipsec_initiates: bool
) -> None:
    """issue 11: SHA-1 only when named (``aes128-sha1-modp2048``), then a warning in the
    log (once, at load) and in the peer's status."""
    sidecar, charon = interop_v1("aes128-sha1-modp2048", kipsec_initiates=kipsec_initiates)
    sa = wait_up(sidecar, charon)
    assert (sa.encr_alg, sa.prf_alg) == ("AES_CBC", "PRF_HMAC_SHA1"), sa
    view = sidecar.peer("b")
    assert view["ike_sa"]["prf"] == "prf-hmac-sha1" and view["ike_sa"]["ike_version"] == 1
    (warning,) = view["warnings"]
    assert "peer b" in warning and "RFC 9395" in warning and "SHA-1" in warning
    assert f"warning: {warning}" in sidecar.cli("sas").stdout
    assert_traffic_both_ways_only_encrypted(gateway_topology, tmp_path / "wire.pcap")
    assert mirrored(sidecar, charon)
    assert sidecar.log.read_text().count(warning) == 1


@pytest.mark.parametrize(
    ("auth", "kipsec_initiates"),
    [("ecdsa", True), ("rsa", False), ("ecdsa", False), ("rsa", True)],
    ids=["ecdsa-kipsec-initiates", "rsa-strongswan-initiates",
         "ecdsa-strongswan-initiates", "rsa-kipsec-initiates"],
)  # fmt: skip
def test_ikev1_signature_main_mode_with_strongswan(
    interop_v1: Setup,
    gateway_topology: Topology,
    tmp_path: Path,
    auth: str,
    kipsec_initiates: bool,
) -> None:
    """RSA (method 3) and ECDSA P-256 (method 9, RFC 4754) signatures, certificates
    from one CA on both sides, each side initiating."""
    sidecar, charon = interop_v1(kipsec_initiates=kipsec_initiates, auth=auth)
    sa = wait_up(sidecar, charon)
    assert sa.remote_id == fqdn("a")
    assert sidecar.peer("b")["ike_sa"]["remote_id"] == fqdn("b")
    assert_traffic_both_ways_only_encrypted(gateway_topology, tmp_path / "wire.pcap")
    assert mirrored(sidecar, charon)


INITIATORS = pytest.mark.parametrize(
    "kipsec_initiates", [True, False], ids=["kipsec-initiates", "strongswan-initiates"]
)


def refused_by_both(sidecar: Sidecar, charon: Charon, failure: str, timeout: float = 10) -> str:
    """Wait for kipsec to report ``failure`` as the peer's last failure; then no pair on
    either side: no child SA at charon, no established ISAKMP SA nor installed SPI at
    kipsec. Return kipsec's ``last_error`` (what an operator reads)."""
    wait_until(
        f"kipsec to report {failure}",
        lambda: sidecar.peer("b")["last_failure"] == failure,
        timeout=timeout,
    )
    view = sidecar.peer("b")
    assert view["state"] != "established" and view["children"] == [], view
    assert not kipsec_installed_spis(sidecar)
    assert charon.established(child="net") is None
    return str(view["last_error"])


def charon_holds_no_established_sa(charon: Charon) -> bool:
    return all(sa.state != "ESTABLISHED" for sa in charon.list_sas())


@INITIATORS
def test_a_wrong_psk_establishes_nothing(
    interop_v1: Setup, tmp_path: Path, kipsec_initiates: bool
) -> None:
    """With different keys neither side can open the other's message 5 nor the
    encrypted notification that answers it (charon's PAYLOAD-MALFORMED, kipsec's
    AUTHENTICATION-FAILED). Under PSK that is what a wrong key looks like: kipsec reports
    ``authentication_failed`` when the retransmitted message 5 (or charon's answer to
    it) does not open either, with a reason that names the likely cause and no key."""
    charon_secret = "not the same key at all"
    sidecar, charon = interop_v1(
        kipsec_initiates=kipsec_initiates,
        charon_secret=charon_secret,
        liveness={"timeout": "6s"},
        expect_failure=True,
        initiate_timeout=10,
    )
    which = "HASH_R" if kipsec_initiates else "HASH_I"
    last_error = refused_by_both(sidecar, charon, "authentication_failed", timeout=15)
    assert last_error.startswith(f"AUTHENTICATION_FAILED ({which} mismatch or undecryptable ")
    assert last_error.endswith(": probably a wrong pre-shared key)"), last_error
    assert PSK_TEXT not in last_error and charon_secret not in last_error
    log = (tmp_path / "strongswan-b" / "charon.log").read_text()
    if kipsec_initiates:  # charon, responder, could not open kipsec's message 5
        assert "could not decrypt payloads" in log
    else:
        assert "establishing IKE_SA failed, peer not responding" in log
    assert charon_holds_no_established_sa(charon)


def refused_setup(
    interop_v1: Setup, kipsec_initiates: bool, **options: Any
) -> tuple[Sidecar, Charon]:
    """ECDSA certificates on both sides, one of them wrong by ``options``; main mode is
    expected to fail, and charon as initiator to give up within 10 s."""
    return interop_v1(
        kipsec_initiates=kipsec_initiates,
        auth="ecdsa",
        expect_failure=True,
        initiate_timeout=10,
        **options,
    )


STRANGER = CertificateAuthority.root("kipsec ikev1 stranger root", key_slot=90)
"""A CA neither side trusts: another key and another name than the interop root's."""


@INITIATORS
@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("untrusted-ca", "untrusted"),
        ("other-identity", "identity-mismatch"),
        ("expired", "expired"),
    ],
)
def test_kipsec_refuses_charons_certificate(
    interop_v1: Setup, tmp_path: Path, kipsec_initiates: bool, case: str, error: str
) -> None:
    """charon's certificate from a CA kipsec does not trust, valid but for another
    identity than the one kipsec expects, or expired yesterday. kipsec names the cause
    and tells charon in an encrypted informational (strongSwan drops a clear one once
    main mode has keys), which charon reads. As initiator charon then drops its main
    mode; as responder it took main mode as done on sending message 6 and ignores the
    notification then, so kipsec also deletes that ISAKMP SA in a second informational:
    charon drops it on the Delete and ends with no ISAKMP SA either way."""
    cases: dict[str, dict[str, Any]] = {
        "untrusted-ca": {"charon_issuer": STRANGER},
        "other-identity": {"kipsec_expects": fqdn("c")},
        "expired": {"charon_not_after": datetime.now(UTC) - timedelta(days=1)},
    }
    sidecar, charon = refused_setup(interop_v1, kipsec_initiates, **cases[case])
    last_error = refused_by_both(sidecar, charon, "authentication_failed")
    assert last_error.startswith(f"AUTHENTICATION_FAILED ({error}: "), last_error
    log = tmp_path / "strongswan-b" / "charon.log"
    wait_until(
        "charon to read kipsec's AUTHENTICATION-FAILED",
        lambda: "received AUTHENTICATION_FAILED error notify" in log.read_text(),
        timeout=5,
    )
    # kipsec initiating retries (1 s, 2 s, ... apart): each attempt's SA goes the same way
    charon.wait_for(lambda sas: not sas, timeout=5, what="charon to hold no ISAKMP SA")
    if kipsec_initiates:
        assert "received DELETE for IKE_SA" in log.read_text()


@INITIATORS
def test_charon_refuses_a_kipsec_certificate_from_an_untrusted_ca(
    interop_v1: Setup, tmp_path: Path, kipsec_initiates: bool
) -> None:
    """charon, responder, answers AUTHENTICATION-FAILED, which kipsec reads; charon,
    initiator, refuses message 6 after kipsec (responder) took main mode as done, and
    deletes the ISAKMP SA: kipsec drops it on that Delete."""
    sidecar, charon = refused_setup(interop_v1, kipsec_initiates, kipsec_issuer=STRANGER)
    log = tmp_path / "strongswan-b" / "charon.log"
    if kipsec_initiates:
        last_error = refused_by_both(sidecar, charon, "authentication_failed")
        assert last_error.startswith("AUTHENTICATION_FAILED"), last_error
    else:
        assert refused_by_both(sidecar, charon, "other") == "DELETED_BY_PEER"
    assert f"no trusted ECDSA public key found for '{fqdn('a')}'" in log.read_text()
    assert charon_holds_no_established_sa(charon)


def test_delete_from_kipsec_is_noticed_by_strongswan(interop_v1: Setup) -> None:
    sidecar, charon = interop_v1()
    wait_up(sidecar, charon)
    sidecar.cli("terminate", "b")
    charon.wait_for(lambda sas: not sas, timeout=10, what="charon to drop the IKEv1 SA")
    view = sidecar.peer("b")
    assert view["ike_sa"] is None and view["children"] == [], view


def test_delete_from_strongswan_is_noticed_by_kipsec(interop_v1: Setup) -> None:
    sidecar, charon = interop_v1()
    wait_up(sidecar, charon)
    old_children = kipsec_installed_spis(sidecar)
    charon.terminate(ike="gw")
    wait_until(
        "kipsec to drop the SAs charon deleted",
        lambda: not kipsec_installed_spis(sidecar) & old_children,
        timeout=10,
    )


def test_phase_2_rekeys_by_either_side_lose_no_packet_of_a_sequenced_stream(
    interop_v1: Setup, gateway_topology: Topology
) -> None:
    """A new quick mode replaces the child SA while a numbered UDP stream crosses the
    tunnel: first kipsec rekeys, then charon; the old pairs are deleted 5 s later (when
    kipsec's outbound moves over); every datagram must come back."""
    sidecar, charon = interop_v1()
    wait_up(sidecar, charon)
    first = kipsec_installed_spis(sidecar)
    count = 12000  # 12 s: both old pairs are deleted (outbound moves) while it runs
    echo, stream = sequenced_stream(gateway_topology, "pa", "pb", count)
    time.sleep(0.5)
    sidecar.cli("rekey", "--child", "b")
    wait_until(
        "charon to hold kipsec's new child",
        lambda: mirrored(sidecar, charon) and kipsec_installed_spis(sidecar).isdisjoint(first),
        timeout=5,
    )
    second = kipsec_installed_spis(sidecar)
    assert charon.rekey(child="net") >= 1
    wait_until(
        "kipsec to hold charon's new child",
        lambda: (
            kipsec_installed_spis(sidecar).isdisjoint(first | second)
            and bool(kipsec_installed_spis(sidecar))
        ),
        timeout=5,
    )
    wait_until(
        "both replaced pairs deleted, outbound on the newest",
        lambda: sidecar.spis("b").isdisjoint(first | second),
        timeout=8,
    )
    assert stream.poll() is None, "the stream ended before the old pairs went: make it longer"
    stdout, _ = stream.communicate(timeout=30)
    stop_process(echo)
    assert f"received {count} of {count}".encode() in stdout, stdout.decode()
    assert sidecar.sas()["rekeys"]["child"] >= 2


def test_kipsec_dpd_declares_a_killed_strongswan_dead(interop_v1: Setup) -> None:
    """R-U-THERE every 2 s of silence; charon killed (no Delete): the peer goes down."""
    sidecar, charon = interop_v1(liveness={"interval": "2s", "timeout": "5s"})
    wait_up(sidecar, charon)
    time.sleep(5)  # several R-U-THERE answered by charon: still up
    assert sidecar.peer("b")["ike_sa"] is not None
    charon.kill()
    wait_until(
        "kipsec to declare charon dead", lambda: sidecar.peer("b")["ike_sa"] is None, timeout=20
    )
    assert not kipsec_installed_spis(sidecar)


def test_kipsec_answers_strongswan_dpd(interop_v1: Setup, tmp_path: Path) -> None:
    """charon with dpd_delay = 2 s probes kipsec; kipsec acknowledges, nothing goes down."""
    sidecar, charon = interop_v1(dpd_delay=2)
    wait_up(sidecar, charon)
    log = tmp_path / "strongswan-b" / "charon.log"
    wait_until("charon to get a DPD acknowledgement", lambda: "N(DPD_ACK)" in log.read_text(), 15)
    assert "invalid HASH" not in log.read_text()  # the acknowledgement authenticated
    assert charon.established(child="net") is not None
    assert sidecar.peer("b")["ike_sa"] is not None


@pytest.mark.parametrize(
    "kipsec_initiates", [True, False], ids=["kipsec-initiates", "strongswan-initiates"]
)
@pytest.mark.parametrize(
    "charon_ike",
    # The second: SHA-1 that kipsec's proposals do not name is never offered nor accepted.
    ["aes128-sha256-ecp256", "aes128-sha1-modp2048"],
    ids=["other-group", "sha1-not-named"],
)
def test_no_phase_1_proposal_is_refused_and_the_initiator_told(
    interop_v1: Setup, tmp_path: Path, kipsec_initiates: bool, charon_ike: str
) -> None:
    sidecar, charon = interop_v1(
        kipsec_initiates=kipsec_initiates,
        charon_ike=charon_ike,
        expect_failure=True,
    )
    log = tmp_path / "strongswan-b" / "charon.log"
    if kipsec_initiates:  # charon refuses message 1 with NO-PROPOSAL-CHOSEN
        wait_until(
            "kipsec to hear NO_PROPOSAL_CHOSEN",
            lambda: sidecar.peer("b")["last_failure"] == "no_proposal_chosen",
            timeout=15,
        )
    else:  # kipsec refuses charon's message 1 and tells it
        wait_until(
            "charon to hear NO_PROPOSAL_CHOSEN",
            lambda: "NO_PROPOSAL_CHOSEN" in log.read_text(),
            timeout=15,
        )
    assert charon.established(child="net") is None
    assert not kipsec_installed_spis(sidecar)
    assert sidecar.peer("b")["warnings"] == []


def test_no_phase_2_proposal_is_refused_and_the_isakmp_sa_stays(
    interop_v1: Setup, tmp_path: Path
) -> None:
    sidecar, charon = interop_v1(esp="aes128-sha256", charon_esp="aes256gcm16")
    wait_until(
        "kipsec to hear NO_PROPOSAL_CHOSEN for its quick mode",
        lambda: sidecar.peer("b")["last_failure"] == "no_proposal_chosen",
        timeout=15,
    )
    assert sidecar.peer("b")["ike_sa"]["state"] == "established"
    assert not kipsec_installed_spis(sidecar)
    assert charon.list_sas() and charon.established(child="net") is None


def one_isakmp_sa(sidecar: Sidecar, charon: Charon, *, not_in: set[str]) -> str | None:
    """The cookie CKY-I of the only ISAKMP SA both sides hold, if it is one, established
    on both sides and not in ``not_in``; else None."""
    view = sidecar.peer("b")
    sas = charon.list_sas()
    if view["ike_sas"] != 1 or len(sas) != 1 or view["ike_sa"] is None:
        return None
    ours, theirs = view["ike_sa"], sas[0]
    if ours["state"] != "established" or theirs.state != "ESTABLISHED":
        return None
    same = (ours["spi_i"], ours["spi_r"]) == (theirs.initiator_spi, theirs.responder_spi)
    return ours["spi_i"] if same and ours["spi_i"] not in not_in else None


def wait_new_isakmp_sa(sidecar: Sidecar, charon: Charon, seen: set[str], after: str) -> str:
    """Wait for :func:`one_isakmp_sa` to name an ISAKMP SA not in ``seen``; return it."""
    found: list[str] = []

    def check() -> bool:
        cookie = one_isakmp_sa(sidecar, charon, not_in=seen)
        if cookie is not None:
            found.append(cookie)
        return cookie is not None

    wait_until(f"one new ISAKMP SA on both sides after {after}", check, timeout=20)
    return found[-1]


def main_mode_ports(log: str) -> list[int]:
    """The source port of each main mode message 1 charon received (``[ SA V V ]``
    from kipsec), matched with its ``received packet`` line by charon's thread."""
    last_received: dict[str, int] = {}
    ports: list[int] = []
    for line in log.splitlines():
        got = re.search(r" (\d+)\[NET\] received packet: from \S+\[(\d+)\]", line)
        if got:
            last_received[got[1]] = int(got[2])
        parsed = re.search(r" (\d+)\[ENC\] parsed ID_PROT request 0 \[ SA V V \]", line)
        if parsed and parsed[1] in last_received:
            ports.append(last_received[parsed[1]])
    return ports


def test_phase_1_reauthentication_by_either_side_keeps_the_pair_and_loses_no_packet(
    interop_v1: Setup, gateway_topology: Topology, tmp_path: Path
) -> None:
    """Under a numbered UDP stream: kipsec re-authenticates (control ``rekey`` of kind
    ``ike``, waiting for it), then charon does (vici ``rekey ike``, IKEv1's only way);
    each time a new main mode replaces the ISAKMP SA, the IPsec pair moves over
    unchanged on both sides and the old ISAKMP SA is deleted. Every datagram comes back.
    NAT-T moved the first ISAKMP SA to port 4500 (``encap = yes``): kipsec's
    re-authentications start there, with the non-ESP marker, and charon takes them.
    After the stream, ``kipsec-sidecar rekey --ike --wait`` re-authenticates once more,
    and a quick mode rekey works under the newest ISAKMP SA (a phase 2 rekey under a
    stream has its own test). The CLI runs outside the stream: starting a Python process
    is a CPU burst this loaded machine's stream does not need."""
    sidecar, charon = interop_v1()
    wait_up(sidecar, charon)
    pair = kipsec_installed_spis(sidecar)
    seen = {sidecar.peer("b")["ike_sa"]["spi_i"]}
    # 16 s: two re-authentications, and charon leaves its old ISAKMP SA to kipsec, which
    # deletes it 10 s after charon's re-authentication
    count = 16000
    echo, stream = sequenced_stream(gateway_topology, "pa", "pb", count)
    time.sleep(0.5)
    for who in ("kipsec", "charon"):
        if who == "kipsec":
            sidecar.control("rekey", peer="b", kind="ike", wait=15)
        else:
            assert charon.rekey(ike="gw") == 1
        newest = wait_new_isakmp_sa(sidecar, charon, seen, f"{who}'s re-authentication")
        seen.add(newest)
        assert kipsec_installed_spis(sidecar) == pair, f"{who}: the pair changed"
        assert mirrored(sidecar, charon)
        assert sidecar.peer("b")["ike_sa"]["initiator"] is (who == "kipsec")
    assert stream.poll() is None, "the stream ended before the old SA went: make it longer"
    stdout, _ = stream.communicate(timeout=40)
    stop_process(echo)
    assert f"received {count} of {count}".encode() in stdout, stdout.decode()
    log = (tmp_path / "strongswan-b" / "charon.log").read_text()
    # kipsec's re-authentication: message 5 without INITIAL-CONTACT, the pair adopted
    assert "[ ID HASH ]" in log and "adopting 1 children" in log
    assert main_mode_ports(log)[:2] == [500, 4500]  # the first contact, then kipsec's
    assert sidecar.sas()["rekeys"]["ike"] >= 2
    sidecar.cli("rekey", "--ike", "b", "--wait", "15")
    newest = wait_new_isakmp_sa(sidecar, charon, seen, "the CLI's re-authentication")
    assert kipsec_installed_spis(sidecar) == pair and mirrored(sidecar, charon)
    sidecar.cli("rekey", "--child", "b")
    wait_until(
        "the rekeyed pair alone, under the newest ISAKMP SA",
        lambda: (
            mirrored(sidecar, charon)
            and kipsec_installed_spis(sidecar).isdisjoint(pair)
            and sidecar.spis("b").isdisjoint(pair)
        ),
        timeout=12,
    )
    assert one_isakmp_sa(sidecar, charon, not_in=set()) == newest
    assert_traffic_both_ways_only_encrypted(gateway_topology, tmp_path / "wire.pcap")


def test_a_restarted_strongswan_initial_contact_leaves_one_sa_and_one_pair(
    interop_v1: Setup, tmp_path: Path
) -> None:
    """charon is killed (no Delete) and started again; its new main mode carries
    INITIAL-CONTACT: kipsec deletes the ISAKMP SA and pair charon forgot."""
    sidecar, charon = interop_v1(kipsec_initiates=False)
    wait_up(sidecar, charon)
    old_pair = kipsec_installed_spis(sidecar)
    old_sa = sidecar.peer("b")["ike_sa"]["spi_i"]
    charon.kill()
    charon.start()
    charon.load()
    charon.initiate("net", timeout=15)
    assert "N(INITIAL_CONTACT)" in (tmp_path / "strongswan-b" / "charon.log").read_text()
    wait_until(
        "one ISAKMP SA and one pair at kipsec, both new",
        lambda: (
            one_isakmp_sa(sidecar, charon, not_in={old_sa}) is not None
            and len(kipsec_installed_spis(sidecar)) == 1
            and kipsec_installed_spis(sidecar).isdisjoint(old_pair)
        ),
        timeout=15,
    )
    assert mirrored(sidecar, charon)
    assert "initial-contact" in sidecar.log.read_text()


def test_kipsec_as_responder_sends_its_shorter_phase_2_lifetime(
    interop_v1: Setup, tmp_path: Path
) -> None:
    """charon proposes its default 3960 s; kipsec's child SAs live 600 s: quick mode
    message 2 carries RESPONDER-LIFETIME (24576). strongSwan 5.9.8 does not know the
    notification (it logs its number) and does not shorten its own lifetime, but the
    message's HASH(2), which covers it, verifies and the pair is installed on both
    sides; kipsec keeps its 600 s (it rekeys first)."""
    sidecar, charon = interop_v1(
        kipsec_initiates=False, lifetimes={"childSa": "600s", "rekeyMargin": "60s"}
    )
    wait_up(sidecar, charon)
    log = (tmp_path / "strongswan-b" / "charon.log").read_text()
    (line,) = [x for x in log.splitlines() if "parsed QUICK_MODE response" in x]
    assert "[ HASH SA No ID ID N((24576)) ]" in line, line
    assert "invalid HASH" not in log
    assert mirrored(sidecar, charon)
    (child,) = sidecar.installed("b")
    assert 0 < child["expire_at"] - child["installed_at"] <= 600 + 1, child
