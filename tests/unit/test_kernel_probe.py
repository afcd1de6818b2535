"""The capability probe answers what the kernel answers, and leaves nothing behind.

iproute2 (an independent XFRM implementation) asks the same kernel the same question:
the probe must agree with it. On this machine's kernel (no ESP state type) both are
refused and the probe's reason says why; in the VM tier the probe says "kernel".
Needs root for the scratch namespace (this machine and CI run as root).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from kipsec_sidecar.datapath.base import DatapathError
from kipsec_sidecar.datapath.kernel import KernelDatapath
from kipsec_sidecar.datapath.netlink import NetlinkError
from kipsec_sidecar.datapath.probe import _probe_states, probe_kernel_esp
from kipsec_sidecar.datapath.xfrm import XfrmError, XfrmSocket
from kipsec_sidecar.datapath.xfrm_sa import DEFAULT_OWNER_MASK, SaKeys
from kipsec_sidecar.datapath.xfrm_wire import XfrmNetlink
from support.netns import scratch_namespace

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")


@pytest.fixture
def netns() -> Iterator[str]:
    with scratch_namespace("probe") as name:
        yield name


def iproute2_accepts_esp(netns: str) -> bool:
    add = subprocess.run(
        [
            *("ip", "-n", netns, "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2"),
            *("proto", "esp", "spi", "0x4242", "mode", "transport"),
            *(
                "enc",
                "cbc(aes)",
                "0x" + "11" * 16,
                "auth-trunc",
                "hmac(sha256)",
                "0x" + "22" * 32,
                "128",
            ),
        ],
        capture_output=True,
        timeout=30,
    )
    subprocess.run(["ip", "-n", netns, "xfrm", "state", "flush"], check=False, timeout=10)
    return add.returncode == 0


def test_probe_agrees_with_iproute2(netns: str) -> None:
    kernel, reason = probe_kernel_esp(netns=netns)
    assert kernel == iproute2_accepts_esp(netns), reason


def test_probe_leaves_no_state_behind(netns: str) -> None:
    probe_kernel_esp(netns=netns)
    with XfrmSocket(netns=netns) as sock:
        assert sock.states() == []
        assert sock.policies() == []


def test_probe_on_a_kernel_without_esp_explains_the_refusal(netns: str) -> None:
    if iproute2_accepts_esp(netns):
        pytest.skip("this kernel has ESP: the VM tier checks the positive answer")
    kernel, reason = probe_kernel_esp(netns=netns)
    assert not kernel
    assert reason.startswith("kernel refused ESP SA (cbc(aes)): EPROTONOSUPPORT (")
    assert "esp4" in reason


def answer(call: Callable[[], None]) -> tuple[int | None, str | None] | None:
    """(errno, kernel message) of a refused request, None if the kernel accepted it."""
    try:
        call()
    except (NetlinkError, XfrmError) as exc:
        return exc.errno, exc.kernel_message
    return None


def test_the_probe_socket_reads_the_kernel_as_the_xfrm_codec_does(netns: str) -> None:
    # The same states through both: the probe's own packing and pyroute2's codec (the
    # kernel datapath's). Refused (here) or accepted (the VM), they must agree on errno
    # and the kernel's extended-ack text, which the probe's reason shows.
    with XfrmNetlink(netns=netns, timeout=15) as wire, XfrmSocket(netns=netns) as codec:
        for spec in _probe_states(DEFAULT_OWNER_MASK):
            twin = dataclasses.replace(spec, spi=spec.spi ^ 1)
            mine = answer(functools.partial(wire.new_sa, spec))
            assert mine == answer(functools.partial(codec.new_sa, twin))
            if mine is None:
                wire.delete_sa(spec.dst, spec.spi, spec.proto, spec.mark)
                codec.delete_sa(twin.dst, twin.spi, twin.proto, twin.mark)
        assert codec.states() == []


def test_probe_outside_any_namespace_it_can_open_says_so() -> None:
    kernel, reason = probe_kernel_esp(netns=f"kipsec-missing-{uuid.uuid4().hex[:8]}", timeout=5)
    assert not kernel
    assert reason.startswith("no XFRM netlink socket")


def test_kernel_datapath_refuses_to_start_where_the_probe_says_no(netns: str) -> None:
    if iproute2_accepts_esp(netns):
        pytest.skip("this kernel has ESP: the VM tier starts the kernel datapath")
    datapath = KernelDatapath(keys=lambda sa: SaKeys(), netns=netns)
    with pytest.raises(DatapathError, match=r"datapath kernel is unavailable: kernel refused ESP"):
        asyncio.run(datapath.start())
