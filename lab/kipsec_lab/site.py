"""The lab's external site: a strongSwan VPN gateway outside the cluster and a host behind it.

``kipsec lab up --external-site`` adds two network namespaces beside the lab's cluster
network, the site of ``examples/operator/external-peer-*.yaml``::

  control netns ── veth ksite 203.0.113.1/24 ─── wan0 203.0.113.10, .11 ┐ <lab>-site
  (routes 198.51.100.0/24 in clear via .10:                charon (strongSwan)
   only the pods' sidecars keep it encrypted)              lan0 198.51.100.1/24 ┘
                                                                  │
                                                  eth0 198.51.100.10/24  <lab>-site-host

The WAN between the cluster and the site routes the site's subnet in clear, as a private
WAN would: whether pods' traffic to it is encrypted is up to their sidecars, so a
capture on ``ksite`` (the wire between the cluster and the site) can tell. The gateway
runs charon (kernel-libipsec: this kernel holds no ESP SAs; see the strongSwan notes)
with two connections that mirror the examples: ``psk`` on 203.0.113.10 (the PSK of
``external-peer-psk.yaml``) and ``certificates`` on 203.0.113.11 (a gateway
certificate for ``gw.onprem.example`` from the site's own CA, which the lab generates;
the pods' certificates are trusted through the operator's CA, read from its Secret). Both
protect 198.51.100.0/24 towards any pod address of the lab, replace an older IKE SA of
the same pod (``unique = replace``) and probe their peers (``dpd_delay``).

charon runs as a host process in the gateway namespace in both lab runtimes; its files
(``strongswan.conf``, ``swanctl/``, ``charon.vici``, ``charon.log``) are in the state
directory's ``site/``, with ``ca-configmap.yaml``: the site CA as the ConfigMap the
certificate example's ExternalPeer names (a CA certificate is public). What is pure here
(the addresses, the configuration text) is tested without root
(``tests/unit/test_lab_site.py``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from kipsec_sidecar.config.model import DEFAULT_ESP_PROPOSALS, DEFAULT_IKE_PROPOSALS

from . import host
from .tls import new_ca, new_leaf, write_key
from .topology import Names

CHARON = "/usr/sbin/charon-systemd"
SWANCTL = "/usr/sbin/swanctl"
LINK = "ksite"
"""The control namespace's end of the WAN link to the site."""
WAN = ipaddress.IPv4Network("203.0.113.0/24")
ROUTER = "203.0.113.1"
"""The control namespace's address on the WAN link (the gateway's default route)."""
PSK_GATEWAY = "203.0.113.10"
"""Where the ``psk`` connection listens (``external-peer-psk.yaml``'s address)."""
CERT_GATEWAY = "203.0.113.11"
"""Where the ``certificates`` connection listens (``external-peer-certificates.yaml``)."""
SUBNET = ipaddress.IPv4Network("198.51.100.0/24")
"""The network behind the gateway."""
LAN_GATEWAY = "198.51.100.1"
HOST = "198.51.100.10"
"""The host behind the gateway (``kipsec lab traffic --to site``)."""
GATEWAY_ID = "gw.onprem.example"
"""The gateway certificate's name, the certificate example's ``spec.identity.fqdn``."""
PSK = "9b1e4c7a2d5f8e3b6a9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a"
"""The PSK of ``external-peer-psk.yaml`` (an example's key, published with it)."""
CA_CONFIG_MAP = ("onprem-certs", "onprem-ca")
"""(namespace, name) of the ConfigMap holding the site CA, as the certificate example names it."""
DPD_DELAY = "5s"
PLUGINS = (
    *("random", "nonce", "openssl", "aesni", "aes", "gcm", "chapoly"),
    *("sha1", "sha2", "hmac", "kdf", "curve25519"),
    *("pem", "pkcs1", "pkcs8", "x509", "pubkey", "constraints"),
    *("socket-default", "kernel-libipsec", "kernel-netlink", "vici"),
)
"""charon's plugins, in order (``openssl`` before ``aes``/``gcm``: the fast AES-GCM)."""
START_TIMEOUT = 15.0
IKE_MARK = "0x4b53"
"""The mark of charon's own packets (IKE, and ESP in UDP from libipsec): its routing rule
to the tunnel routes skips them. A pod is both the IKE peer and the traffic selector, and
a libipsec route to the pod would otherwise swallow the ESP to it (``allow_peer_ts``)."""


class SiteError(RuntimeError):
    """The site cannot do what was asked (charon missing, not answering, no such pod)."""


def gateway_netns(names: Names) -> str:
    return f"{names.lab}-site"


def host_netns(names: Names) -> str:
    return f"{names.lab}-site-host"


def unavailable() -> str | None:
    """Why the site cannot run here (None when it can)."""
    for binary in (CHARON, SWANCTL):
        if not os.access(binary, os.X_OK):
            return f"{binary} is not installed (Debian: charon-systemd strongswan-swanctl)"
    return None


def overlap(cluster_cidr: str) -> str | None:
    """What of the site the lab's pod network overlaps (the site must be outside it)."""
    cluster = ipaddress.ip_network(cluster_cidr)
    for network in (WAN, SUBNET):
        if cluster.overlaps(network):
            return f"--cidr {cluster} overlaps the external site's {network}"
    return None


# --- namespaces and links --------------------------------------------------------------------
def create(names: Names) -> None:
    """The gateway and host namespaces, the WAN link from the control namespace, the
    LAN behind the gateway, forwarding and routes (see the module docstring)."""
    gateway, lan_host = gateway_netns(names), host_netns(names)
    ctl = names.control
    run = host.run
    for netns in (gateway, lan_host):
        run(["ip", "netns", "add", netns])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
    run(["ip", "-n", ctl, "link", "add", LINK, "type", "veth", "peer", "name", "wan0",
         "netns", gateway])  # fmt: skip
    run(["ip", "-n", ctl, "addr", "add", f"{ROUTER}/{WAN.prefixlen}", "dev", LINK])
    run(["ip", "-n", ctl, "link", "set", LINK, "up"])
    for address in (PSK_GATEWAY, CERT_GATEWAY):
        run(["ip", "-n", gateway, "addr", "add", f"{address}/{WAN.prefixlen}", "dev", "wan0"])
    run(["ip", "-n", gateway, "link", "set", "wan0", "up"])
    run(["ip", "-n", gateway, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
         "netns", lan_host])  # fmt: skip
    run(["ip", "-n", gateway, "addr", "add", f"{LAN_GATEWAY}/{SUBNET.prefixlen}", "dev", "lan0"])
    run(["ip", "-n", gateway, "link", "set", "lan0", "up"])
    run(["ip", "-n", gateway, "route", "add", "default", "via", ROUTER])
    run(["ip", "-n", lan_host, "addr", "add", f"{HOST}/{SUBNET.prefixlen}", "dev", "eth0"])
    run(["ip", "-n", lan_host, "link", "set", "eth0", "up"])
    run(["ip", "-n", lan_host, "route", "add", "default", "via", LAN_GATEWAY])
    # The WAN routes the site's subnet in clear (a private WAN): only the sidecars keep
    # the pods' traffic to it encrypted.
    run(["ip", "-n", ctl, "route", "add", str(SUBNET), "via", PSK_GATEWAY])
    for netns in (ctl, gateway):
        run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])


def set_link(names: Names, up: bool) -> None:
    """Cut (``up=False``) or mend the WAN link between the cluster and the site."""
    host.run(["ip", "-n", names.control, "link", "set", LINK, "up" if up else "down"])


# --- configuration ---------------------------------------------------------------------------
def strongswan_conf(directory: Path) -> str:
    """charon's settings: its plugins, its own vici socket and log file in ``directory``,
    pods as peers whose address is their traffic selector (:data:`IKE_MARK`)."""
    vici = f"unix://{directory / 'charon.vici'}"
    return f"""charon-systemd {{
    load = {" ".join(PLUGINS)}
    install_routes = yes
    retransmit_tries = 3
    retransmit_timeout = 1.0
    retransmit_base = 1.4
    plugins {{
        vici {{
            socket = {vici}
        }}
        kernel-libipsec {{
            allow_peer_ts = yes
        }}
        socket-default {{
            fwmark = {IKE_MARK}
        }}
        kernel-netlink {{
            fwmark = !{IKE_MARK}
        }}
    }}
    journal {{
        default = -1
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
    filelog {{
        charon {{
            path = {directory / "charon.log"}
            time_format = %H:%M:%S
            flush_line = yes
            default = 1
            ike = 2
            cfg = 1
        }}
    }}
}}
swanctl {{
    socket = {vici}
}}
"""


def _connection(
    name: str, address: str, remote_ts: str, local: str, remote: str, remote_addrs: str = "%any"
) -> str:
    return f"""    {name} {{
        version = 2
        local_addrs = {address}
        remote_addrs = {remote_addrs}
        proposals = {", ".join(DEFAULT_IKE_PROPOSALS)}
        unique = replace
        dpd_delay = {DPD_DELAY}
        reauth_time = 0s
        local {{
{local}
        }}
        remote {{
{remote}
        }}
        children {{
            {name} {{
                local_ts = {SUBNET}
                remote_ts = {remote_ts}
                esp_proposals = {", ".join(DEFAULT_ESP_PROPOSALS)}
                dpd_action = clear
                close_action = none
            }}
        }}
    }}
"""


def swanctl_conf(cluster_cidr: str, pods: Mapping[str, str] | None = None) -> str:
    """The gateway's connections: ``psk`` and ``certificates`` answering any pod of
    ``cluster_cidr``; with ``pods`` (name → address) also one ``psk-to-<name>``
    connection per pod that the gateway can initiate (IKE needs a remote address)."""
    psk_local = f"            auth = psk\n            id = {PSK_GATEWAY}"
    psk_remote = "            auth = psk"
    cert_local = (
        f"            auth = pubkey\n            id = {GATEWAY_ID}\n            certs = gateway.crt"
    )
    cert_remote = "            auth = pubkey"
    text = "connections {\n"
    text += _connection("psk", PSK_GATEWAY, cluster_cidr, psk_local, psk_remote)
    text += _connection("certificates", CERT_GATEWAY, cluster_cidr, cert_local, cert_remote)
    for name, address in sorted((pods or {}).items()):
        text += _connection(
            f"psk-to-{name}", PSK_GATEWAY, f"{address}/32", psk_local, psk_remote, address
        )
    text += "}\n"
    text += f'secrets {{\n    ike-psk {{\n        secret = "{PSK}"\n    }}\n}}\n'
    return text


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "onprem.example"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue_gateway(directory: Path) -> None:
    """A site CA (not kipsec's) and the gateway's certificate for :data:`GATEWAY_ID`,
    into ``site-ca.crt`` (the gateway needs no trust in it: the pods check its
    certificate), ``swanctl/x509/gateway.crt`` and ``swanctl/private/gateway.key`` (0600)."""
    ca, ca_key = new_ca(_name("onprem site CA"))
    cert, key = new_leaf(ca, ca_key, _name(GATEWAY_ID), [x509.DNSName(GATEWAY_ID)])
    pem = serialization.Encoding.PEM
    (directory / "site-ca.crt").write_bytes(ca.public_bytes(pem))
    (directory / "swanctl" / "x509" / "gateway.crt").write_bytes(cert.public_bytes(pem))
    write_key(directory / "swanctl" / "private" / "gateway.key", key)


def ca_config_map_manifest(ca_pem: bytes) -> str:
    """The Namespace and ConfigMap of :data:`CA_CONFIG_MAP` holding the site CA
    (``ca.crt``), as a user would create them for the certificate example (``kubectl
    create configmap --from-file``): ``kipsec lab apply -f`` it."""
    namespace, name = CA_CONFIG_MAP
    pem = "".join(f"    {line}\n" for line in ca_pem.decode().splitlines())
    return (
        f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n---\n"
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        f"data:\n  ca.crt: |\n{pem}"
    )


def configure(directory: Path, cluster_cidr: str) -> None:
    """Every file charon and the user need, in ``directory`` (the state's ``site/``)."""
    for sub in ("x509", "x509ca", "private"):
        (directory / "swanctl" / sub).mkdir(parents=True, exist_ok=True)
    (directory / "strongswan.conf").write_text(strongswan_conf(directory))
    (directory / "swanctl" / "swanctl.conf").write_text(swanctl_conf(cluster_cidr))
    issue_gateway(directory)
    site_ca = (directory / "site-ca.crt").read_bytes()
    (directory / "ca-configmap.yaml").write_text(ca_config_map_manifest(site_ca))


def trust_kipsec_ca(directory: Path, bundle: bytes) -> bool:
    """Make the gateway trust the operator's CA bundle for the pods' certificates (as a
    gateway's administrator installs it); False when it already did."""
    path = directory / "swanctl" / "x509ca" / "kipsec-ca.crt"
    if path.exists() and path.read_bytes() == bundle:
        return False
    path.write_bytes(bundle)
    if charon_pid(directory) is not None:
        swanctl(directory, "--load-creds", "--noprompt", "--clear")
    return True


# --- charon ----------------------------------------------------------------------------------
def _env(directory: Path) -> dict[str, str]:
    return {
        **os.environ,
        "STRONGSWAN_CONF": str(directory / "strongswan.conf"),
        "SWANCTL_DIR": str(directory / "swanctl"),
    }


def swanctl(directory: Path, *args: str, timeout: float = 20.0) -> str:
    """``swanctl ARGS`` against the site's charon (its vici socket: no namespace needed)."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv
            [SWANCTL, *args],
            capture_output=True,
            text=True,
            env=_env(directory),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SiteError(f"swanctl {' '.join(args)}: timed out after {timeout}s") from None
    if done.returncode != 0:
        raise SiteError(f"swanctl {' '.join(args)}: exit {done.returncode}: {done.stdout[-500:]}")
    return done.stdout


def charon_pid(directory: Path) -> int | None:
    try:
        pid = int((directory / "charon.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if host.alive(pid) else None


def start(names: Names, directory: Path) -> int:
    """Start charon in the gateway namespace (detached: ``down`` deletes the namespace
    and what runs in it), load the connections; its pid. A running charon is kept."""
    pid = charon_pid(directory)
    if pid is not None:
        return pid
    (directory / "charon.vici").unlink(missing_ok=True)
    argv = ["ip", "netns", "exec", gateway_netns(names), CHARON]
    with (directory / "charon.out").open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(directory),
            start_new_session=True,
        )
    (directory / "charon.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise SiteError(f"charon exited ({process.returncode}); see {directory}/charon.out")
        with contextlib.suppress(SiteError):
            if (directory / "charon.vici").exists():
                swanctl(directory, "--load-all", "--noprompt")
                return process.pid
        if time.monotonic() > deadline:
            raise SiteError(f"charon did not answer in {START_TIMEOUT}s; see {directory}")
        time.sleep(0.2)


def stop(directory: Path, timeout: float = 10.0) -> None:
    """SIGTERM charon (it deletes its SAs, telling the pods), SIGKILL after ``timeout``."""
    pid = charon_pid(directory)
    if pid is None:
        return
    host.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while host.alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if host.alive(pid):
        host.kill(pid, signal.SIGKILL)
    (directory / "charon.pid").unlink(missing_ok=True)


def initiate(directory: Path, cluster_cidr: str, name: str, address: str) -> None:
    """The gateway initiates an SA to the pod ``name`` at ``address`` (the pod must
    accept it: its ExternalPeer lets the external side initiate)."""
    conf = directory / "swanctl" / "swanctl.conf"
    conf.write_text(swanctl_conf(cluster_cidr, {name: address}))
    try:
        swanctl(directory, "--load-conns")
        swanctl(directory, "--initiate", "--child", f"psk-to-{name}", "--timeout", "10")
    finally:  # the connection goes; the SA it made stays
        conf.write_text(swanctl_conf(cluster_cidr))
        swanctl(directory, "--load-conns")


# --- what charon holds -----------------------------------------------------------------------
@dataclass(frozen=True)
class SiteSa:
    """One IKE SA charon holds, reduced to what the lab shows and tests check."""

    connection: str
    state: str
    remote_host: str
    remote_id: str
    initiator: bool
    children_installed: int
    remote_ts: tuple[str, ...]


@contextlib.contextmanager
def _vici(directory: Path) -> Iterator[Any]:
    import vici  # type: ignore[import-untyped]

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5.0)
    try:
        sock.connect(str(directory / "charon.vici"))
        yield vici.Session(sock)
    finally:
        sock.close()


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def list_sas(directory: Path) -> list[SiteSa]:
    """Every IKE SA of the site's charon (``swanctl --list-sas`` through vici)."""
    with _vici(directory) as session:
        messages = list(session.list_sas())
    found = []
    for message in messages:
        for name, body in message.items():
            children = list((body.get("child-sas") or {}).values())
            installed = [c for c in children if _text(c.get("state")) == "INSTALLED"]
            found.append(
                SiteSa(
                    connection=_text(name),
                    state=_text(body.get("state", "")),
                    remote_host=_text(body.get("remote-host", "")),
                    remote_id=_text(body.get("remote-id", "")),
                    initiator=_text(body.get("initiator", "")) == "yes",
                    children_installed=len(installed),
                    remote_ts=tuple(_text(t) for c in installed for t in c.get("remote-ts", [])),
                )
            )
    return found


__all__ = [
    "CA_CONFIG_MAP",
    "CERT_GATEWAY",
    "GATEWAY_ID",
    "HOST",
    "LINK",
    "PSK",
    "PSK_GATEWAY",
    "SUBNET",
    "SiteError",
    "SiteSa",
    "configure",
    "create",
    "gateway_netns",
    "host_netns",
    "initiate",
    "list_sas",
    "overlap",
    "set_link",
    "start",
    "stop",
    "strongswan_conf",
    "swanctl_conf",
    "unavailable",
]
