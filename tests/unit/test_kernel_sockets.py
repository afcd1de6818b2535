"""The daemon's socket options for the kernel datapath, accepted by this kernel.

This kernel has XFRM (no ESP SA types, which these options do not need), so the kernel
itself checks the ``xfrm_userpolicy_info`` the bypass builds.
"""

from __future__ import annotations

import socket

import pytest

from kipsec_sidecar.datapath.kernel import bypass_policies, enable_udp_encap


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_the_kernel_accepts_the_ike_socket_policy_bypass(family: int) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        bypass_policies(sock)


def test_udp_encapsulation_is_set_on_the_nat_t_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        enable_udp_encap(sock)
        assert sock.getsockopt(socket.IPPROTO_UDP, 100) == 2  # UDP_ENCAP_ESPINUDP
