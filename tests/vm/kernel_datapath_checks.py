"""KernelDatapath checks run inside the test VM: one boot, the datapath's whole life.

Not a pytest module: ``tests/vm/test_kernel_datapath.py`` boots the VM and runs this
script, which prints ``{"checks": {...}}`` between the result markers (as
``kernel_xfrm_checks.py`` does). Two nodes, a pod behind each; one ``KernelDatapath`` per
node (gateway: tunnel mode, forward policies) with manual SAs: traffic flows, a
make-before-break rekey under a 20-packets-per-second ping loses nothing, ACQUIRE
reaches the callback once, a restarted datapath removes a crashed one's leftovers,
and ``close`` leaves nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(REPO / "sidecar"), str(REPO / "lab"), str(REPO / "tests")]

from kipsec_sidecar.core.ike.constants import EncrId, ProtocolId  # noqa: E402
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode  # noqa: E402
from kipsec_sidecar.core.traffic_selectors import TrafficSelector  # noqa: E402
from kipsec_sidecar.datapath.base import PeerPolicy  # noqa: E402
from kipsec_sidecar.datapath.kernel import KernelDatapath  # noqa: E402
from kipsec_sidecar.datapath.xfrm_sa import SaKeys  # noqa: E402
from support.netns import Topology  # noqa: E402

BEGIN = "=====KIPSEC-VM-RESULT-BEGIN====="
END = "=====KIPSEC-VM-RESULT-END====="

checks: dict[str, dict[str, Any]] = {}
keys: dict[int, SaKeys] = {}


def check(name: str, ok: bool, detail: str = "") -> None:
    checks[name] = {"ok": bool(ok), "detail": detail}


def gcm(spi: int, src: Any, dst: Any) -> IpsecSa:
    material = SaKeys(encr_key=os.urandom(36))
    keys[spi] = material
    return IpsecSa(
        spi=spi,
        src=src,
        dst=dst,
        protocol=ProtocolId.ESP,
        mode=Mode.TUNNEL,
        encr_id=EncrId.AES_GCM_16,
        encr_key=material.encr_key,
    )


def xfrm_list(ns: str, what: str) -> list[str]:
    out = subprocess.run(
        ["ip", "-n", ns, "xfrm", what, "list"], capture_output=True, text=True, timeout=10
    ).stdout
    return [line for line in out.splitlines() if line.startswith("src ")]


def real_states(ns: str) -> list[str]:
    """States minus the kernel's larval ACQUIRE states (SPI 0, expire by themselves)."""
    out = subprocess.run(
        ["ip", "-n", ns, "xfrm", "state", "list"], capture_output=True, text=True, timeout=10
    ).stdout
    return [line for line in out.splitlines() if "spi 0x" in line and "spi 0x00000000" not in line]


async def ping(topo: Topology, count: int, interval: float) -> tuple[int, str]:
    argv = ["ip", "netns", "exec", topo.namespace("pa"), "ping", "-n", "-q"]
    argv += ["-i", str(interval), "-c", str(count), "-W", "1", topo.address("pb")]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=count * interval + 15)
    return proc.returncode or 0, out.decode()


async def scenario(topo: Topology) -> None:
    a, b = topo.node("a"), topo.node("b")
    acquired: list[str] = []
    dp_a = KernelDatapath(
        keys=lambda sa: keys[sa.spi],
        local_addr=a.address,
        netns=a.namespace,
        forward=True,
        on_acquire=acquired.append,
    )
    dp_b = KernelDatapath(
        keys=lambda sa: keys[sa.spi], local_addr=b.address, netns=b.namespace, forward=True
    )
    a_ts = (TrafficSelector.from_network(a.pod_cidr),)
    b_ts = (TrafficSelector.from_network(b.pod_cidr),)
    await dp_a.start()
    await dp_b.start()
    try:
        dp_a.add_peer(PeerPolicy("b", b.address, a_ts, b_ts, "tunnel", ProtocolId.ESP, "raw"))
        dp_b.add_peer(PeerPolicy("a", a.address, b_ts, a_ts, "tunnel", ProtocolId.ESP, "raw"))

        # Fail closed before any SA: the ping is dropped and ACQUIRE reaches the callback.
        code, out = await ping(topo, 2, 0.2)
        await asyncio.sleep(0.5)
        check("no-sa/fail-closed", code != 0, out[-300:])
        check("no-sa/acquire-callback-once", acquired == ["b"], f"acquired={acquired}")

        ab1, ba1 = gcm(0x2000A001, a.address, b.address), gcm(0x2000B001, b.address, a.address)
        dp_b.install_inbound("a", ab1)
        dp_a.install_inbound("b", ba1)
        dp_a.set_outbound("b", ab1)
        dp_b.set_outbound("a", ba1)
        code, out = await ping(topo, 5, 0.2)
        check("sa/traffic-flows", code == 0, out[-300:])
        check(
            "sa/ip-xfrm-state",
            len(real_states(a.namespace)) == 2 and len(real_states(b.namespace)) == 2,
            "\n".join(real_states(a.namespace) + real_states(b.namespace)),
        )
        check(
            "sa/ip-xfrm-policy",
            len(xfrm_list(a.namespace, "policy")) == 3
            and len(xfrm_list(b.namespace, "policy")) == 3,
            "\n".join(xfrm_list(a.namespace, "policy")),
        )

        # Make-before-break rekey under traffic: 100 pings at 50 ms, rekey after 1 s.
        ping_task = asyncio.create_task(ping(topo, 100, 0.05))
        await asyncio.sleep(1.0)
        ab2, ba2 = gcm(0x2000A002, a.address, b.address), gcm(0x2000B002, b.address, a.address)
        dp_b.install_inbound("a", ab2)
        dp_a.install_inbound("b", ba2)
        dp_a.set_outbound("b", ab2)
        dp_b.set_outbound("a", ba2)
        await asyncio.sleep(0.5)
        dp_b.remove_inbound("a", ab1.spi)
        dp_a.remove_inbound("b", ba1.spi)
        code, out = await ping_task
        check("rekey/no-loss", code == 0 and " 0% packet loss" in out, out[-300:])
        spis_a = " ".join(real_states(a.namespace))
        check(
            "rekey/only-new-states",
            len(real_states(a.namespace)) == 2
            and "0x2000a002" in spis_a
            and "0x2000b002" in spis_a,
            spis_a,
        )
        dp_a.refresh_stats()
        dp_b.refresh_stats()
        sent, got = dp_a.stats.packets_out.get("b", 0), dp_b.stats.packets_in.get("a", 0)
        check("stats/count-across-rekey", sent >= 105 and got >= 105, f"out_a={sent} in_b={got}")
        check(
            "stats/views",
            dp_a.outbound_sa("b") is ab2 and dp_a.inbound_sas("b") == [ba2],
            f"{dp_a.outbound_sa('b')} {dp_a.inbound_sas('b')}",
        )

        # Crash: a datapath that never closes; a new one's start removes what it left.
        await dp_a.close()  # (first: its close would remove the crashed one's entries too)
        crashed = KernelDatapath(
            keys=lambda sa: keys[sa.spi], local_addr=a.address, netns=a.namespace
        )
        await crashed.start()
        crashed.add_peer(
            PeerPolicy(
                "c",
                ipaddress.ip_address("192.0.2.99"),
                a_ts,
                (TrafficSelector.from_network("10.10.9.0/24"),),
                "tunnel",
                ProtocolId.ESP,
                "raw",
            )
        )
        crashed.install_inbound("c", gcm(0x2000C001, ipaddress.ip_address("192.0.2.99"), a.address))
        # (no close: the sockets are simply dropped, as when the process is killed)
        dp_a = KernelDatapath(keys=lambda sa: keys[sa.spi], local_addr=a.address, netns=a.namespace)
        await dp_a.start()
        check(
            "restart/keeps-stale-policies-until-taken-over",
            not real_states(a.namespace) and len(xfrm_list(a.namespace, "policy")) > 0,
            "\n".join(real_states(a.namespace) + xfrm_list(a.namespace, "policy")),
        )
        dp_a.drop_stale()  # no peer added: nothing takes the stale policies over
        check(
            "restart/removes-stale",
            not real_states(a.namespace) and not xfrm_list(a.namespace, "policy"),
            "\n".join(real_states(a.namespace) + xfrm_list(a.namespace, "policy")),
        )
    finally:
        await dp_a.close()
        await dp_b.close()
    check(
        "close/leaves-nothing",
        not real_states(a.namespace)
        and not real_states(b.namespace)
        and not xfrm_list(a.namespace, "policy")
        and not xfrm_list(b.namespace, "policy"),
        "\n".join(real_states(a.namespace) + xfrm_list(a.namespace, "policy")),
    )


def main() -> None:
    started = time.monotonic()
    modules = ["esp4", "ah4", "esp6", "ah6", "xfrm_user", "gcm", "seqiv", "echainiv"]
    subprocess.run(["modprobe", "-a", *modules], check=False, timeout=60)
    # Warm the crypto self-tests up, so the first install is not the one that waits.
    subprocess.run(["ip", "netns", "add", "kwarm"], check=False, timeout=10)
    subprocess.run(
        "ip -n kwarm xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 "
        "mode tunnel aead 'rfc4106(gcm(aes))' 0x" + "11" * 36 + " 128; ip netns del kwarm",
        shell=True,
        check=False,
        timeout=60,
    )
    try:
        with Topology(prefix="kvmdp") as topo:
            topo.add_node("a")
            topo.add_node("b")
            topo.add_pod("pa", "a")
            topo.add_pod("pb", "b")
            asyncio.run(scenario(topo))
    except Exception:
        check("scenario/ran", False, traceback.format_exc())
    result = {"checks": checks, "seconds": time.monotonic() - started, "kernel": os.uname().release}
    print(BEGIN)
    print(json.dumps(result))
    print(END, flush=True)


if __name__ == "__main__":
    main()
