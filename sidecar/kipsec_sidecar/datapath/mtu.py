"""How big a packet the TUN device may take so that, once protected, it fits the path.

Wire size of one protected packet of ``n`` bytes (an IP packet read from the TUN device):

- ESP (RFC 4303): ESP header 8 + IV + ``ceil((payload + 2) / block) * block`` + ICV,
  where ``payload`` is the whole inner packet (tunnel mode) or the packet minus its IP
  header (transport mode: the original header is kept or, with UDP encapsulation,
  rebuilt by the receiver from the outer one), 2 is pad length + next header, and
  ``block`` is the cipher's block size (4 for the AEAD ciphers, 16 for AES-CBC).
- AH (RFC 4302): 12 + ICV, padded to 4 bytes (IPv4) or 8 (IPv6), in front of the payload.
- UDP encapsulation (RFC 3948) adds 8 bytes of UDP header.
- Tunnel mode adds the outer IP header (20 bytes IPv4, 40 bytes IPv6); in transport
  mode the packet's own header is reused.

:func:`max_inner_size` answers exactly (the padding depends on ``n``);
:func:`worst_case_overhead` is the bound "path MTU − TUN MTU". The TUN MTU is the
smallest :func:`max_inner_size` over the suites the sidecar may use, so the suite with
the largest overhead decides for every peer (one device, one MTU).

TCP MSS clamping (:func:`mss_clamp_ruleset`) writes an nftables table (default name
``kipsec``) that rewrites the MSS option of SYNs leaving through the TUN device to fit
the route MTU (``tcp option maxseg size set rt mtu``). Locally originated connections
already get an MSS from the route's MTU; the rule matters for traffic the pod forwards
(nested namespaces, a CNI in the pod) and for peers whose MSS would otherwise exceed it.
It runs the ``nft`` command in the sidecar's namespace (the image needs the ``nftables``
package); without it the datapath logs a warning and carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.ah import ah_length
from ..core.algorithms import encryption, integrity
from ..core.esp import ESP_HEADER_LEN
from ..core.ike.constants import EncrId, IntegId, ProtocolId
from .base import DatapathError, Encapsulation
from .nftables import apply, drop_table, run_nft

IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8
ESP_TRAILER = 2  # pad length + next header
MIN_TUN_MTU = 576
DEFAULT_NFT_TABLE = "kipsec"


@dataclass(frozen=True, slots=True)
class Suite:
    """One way a packet may be protected: protocol, algorithms, mode and framing.

    ``outer_version`` is the IP version of the SA's addresses (the outer header);
    ``inner_version`` that of the protected packets (equal in transport mode).
    """

    protocol: ProtocolId
    encr_id: EncrId | None
    integ_id: IntegId | None
    mode: Literal["tunnel", "transport"]
    encapsulation: Encapsulation = "udp"
    outer_version: int = 4
    inner_version: int = 4

    def __post_init__(self) -> None:
        if self.protocol == ProtocolId.AH and self.encapsulation == "udp":
            raise DatapathError(
                "AH cannot be UDP-encapsulated (it cannot cross NAT): use encapsulation raw"
            )
        if self.protocol not in (ProtocolId.ESP, ProtocolId.AH):
            raise DatapathError(f"protocol {self.protocol!r} is neither ESP nor AH")
        if self.protocol == ProtocolId.AH and self.integ_id in (None, IntegId.NONE):
            raise DatapathError("an AH suite needs an integrity transform")
        if self.protocol == ProtocolId.ESP:
            if self.encr_id is None:
                raise DatapathError("an ESP suite needs an encryption transform")
            if not encryption(self.encr_id).aead and self.integ_id in (None, IntegId.NONE):
                raise DatapathError(
                    f"ESP with {encryption(self.encr_id).name} needs an integrity transform"
                )


#: The largest overhead any supported ESP suite has: AES-CBC (16-byte IV and blocks) with
#: HMAC-SHA2-512-256 (32-byte ICV), tunnel mode over IPv6, UDP-encapsulated.
WORST_ESP_SUITE = Suite(
    ProtocolId.ESP,
    EncrId.AES_CBC,
    IntegId.HMAC_SHA2_512_256,
    "tunnel",
    "udp",
    outer_version=6,
)


def _ip_header(version: int) -> int:
    return IPV4_HEADER if version == 4 else IPV6_HEADER


def wire_size(suite: Suite, inner: int) -> int:
    """Bytes on the wire (outer IP header included) for an inner packet of ``inner`` bytes."""
    inner_header = _ip_header(suite.inner_version)
    tunnel = suite.mode == "tunnel"
    payload = inner if tunnel else inner - inner_header
    outer = _ip_header(suite.outer_version) if tunnel else inner_header
    udp = UDP_HEADER if suite.encapsulation == "udp" else 0
    if suite.protocol == ProtocolId.AH:
        assert suite.integ_id is not None  # checked by Suite
        icv = integrity(suite.integ_id).icv_len
        return outer + ah_length(icv, suite.outer_version) + payload
    assert suite.encr_id is not None  # checked by Suite
    encr = encryption(suite.encr_id)
    icv = encr.icv_len if encr.aead else integrity(suite.integ_id or IntegId.NONE).icv_len
    block = encr.block_size
    body = -(-(payload + ESP_TRAILER) // block) * block
    return outer + udp + ESP_HEADER_LEN + encr.iv_len + body + icv


def worst_case_overhead(suite: Suite) -> int:
    """The most bytes protection adds to any packet under ``suite`` (padding at its worst)."""
    if suite.protocol == ProtocolId.AH:
        return wire_size(suite, 1500) - 1500
    block = encryption(suite.encr_id).block_size if suite.encr_id is not None else 1
    # Padding is worst when payload + 2 is one past a block boundary.
    return max(wire_size(suite, n) - n for n in range(1500, 1500 + block))


def max_inner_size(suite: Suite, path_mtu: int) -> int:
    """The largest inner packet whose protected form fits ``path_mtu`` bytes (exact)."""
    n = path_mtu - worst_case_overhead(suite)
    while wire_size(suite, n + 1) <= path_mtu:
        n += 1
    return n


def tun_mtu(path_mtu: int, suites: list[Suite]) -> int:
    """The TUN device MTU: the smallest :func:`max_inner_size` over ``suites``.

    Raises DatapathError when it would fall below 576 bytes (the IPv4 minimum datagram
    every host must accept), naming the path MTU.
    """
    if not suites:
        suites = [WORST_ESP_SUITE]
    mtu = min(max_inner_size(suite, path_mtu) for suite in suites)
    if mtu < MIN_TUN_MTU:
        raise DatapathError(
            f"path MTU {path_mtu} leaves {mtu} bytes for protected packets (below {MIN_TUN_MTU})"
        )
    return mtu


# -- TCP MSS clamping (nftables) ---------------------------------------------------------


def mss_clamp_ruleset(table: str, device: str) -> str:
    """The nft script that (re)creates ``inet <table>`` clamping SYNs out of ``device``."""
    rule = f'oifname "{device}" tcp flags syn / syn,rst tcp option maxseg size set rt mtu'
    return drop_table(table) + (
        f"table inet {table} {{\n"
        f"  chain output {{ type filter hook output priority mangle; policy accept;\n"
        f"    {rule}\n  }}\n"
        f"  chain forward {{ type filter hook forward priority mangle; policy accept;\n"
        f"    {rule}\n  }}\n"
        f"}}\n"
    )


def xfrm_mss_clamp_ruleset(table: str) -> str:
    """The nft script that (re)creates ``inet <table>`` clamping SYNs that leave through an
    XFRM SA (kernel datapath) to the MSS of the SA's route.

    The kernel computes the MSS a socket *advertises* from the route under the SA
    (``xfrm_default_advmss``), without the ESP overhead. A peer whose own route to us
    knows the SA sends segments that fit anyway; one whose connection was translated in
    its namespace (a Service's ClusterIP, see ``kipsec_sidecar.daemon.service_nat``)
    routed its socket to the ClusterIP, not through the SA, so it trusts our advertised
    MSS, and its full-sized segments would be dropped after encapsulation (the kernel
    reports that to TCP only as a local error it ignores). ``rt mtu`` on the
    ``postrouting`` hook is the SA route's MSS.
    """
    rule = "rt ipsec exists tcp flags syn / syn,rst tcp option maxseg size set rt mtu"
    return drop_table(table) + (
        f"table inet {table} {{\n"
        f"  chain postrouting {{ type filter hook postrouting priority mangle; policy accept;\n"
        f"    {rule}\n  }}\n"
        f"}}\n"
    )


def install_mss_clamp(table: str, device: str) -> bool:
    """Create (replacing a stale one) the clamping table; False when ``nft`` is absent.

    Raises DatapathError with nft's message when nft exists but refuses the ruleset.
    """
    return apply(table, mss_clamp_ruleset(table, device))


def install_xfrm_mss_clamp(table: str) -> bool:
    """:func:`install_mss_clamp` for the kernel datapath (:func:`xfrm_mss_clamp_ruleset`)."""
    return apply(table, xfrm_mss_clamp_ruleset(table))


def remove_mss_clamp(table: str) -> None:
    """Delete the clamping table if it exists (never another table)."""
    run_nft(drop_table(table))
