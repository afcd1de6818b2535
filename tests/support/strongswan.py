"""strongSwan's charon as a test peer inside a network namespace.

One :class:`Charon` per namespace, each with its own ``strongswan.conf``
(``STRONGSWAN_CONF``), vici socket, ``SWANCTL_DIR`` and log file in a work directory::

    charon = Charon(topo, "a", tmp_path / "a").start()
    charon.configure(Connection(
        name="gw", local_addrs=("192.0.2.11",), remote_addrs=("192.0.2.12",),
        auth=Psk("a secret of at least twenty characters"),
        local_id="a.example", remote_id="b.example",
        children=(Child("net", local_ts=("10.10.1.0/24",), remote_ts=("10.10.2.0/24",)),),
    ))
    charon.load()
    charon.initiate("net")
    charon.wait_established(timeout=10)

What this machine needs (see shared/notes/strongswan-in-netns.md): the kernel has no
ESP/AH SA types, so charon runs ``kernel-libipsec`` (userspace ESP on a TUN ``ipsec0``)
with ``kernel-netlink``; libipsec cannot protect traffic to its own IKE address, so it
acts as a gateway for a subnet behind it (a node in front of its pod CIDR in
:mod:`support.netns`). ``openssl`` is loaded before ``aes``/``gcm`` so the fast
implementation wins. Every wait is bounded; a timed-out wait raises
:class:`CharonTimeout` whose message ends with the tail of charon's log.

vici (PyPI ``vici``, strongSwan's own Python binding, imported only when a charon is
driven, so the module imports without it) lists, initiates, rekeys and
terminates SAs; ``swanctl --load-all`` loads the written ``swanctl.conf`` so the file a
test writes is the one a human would debug with.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from support.netns import CommandFailed, Topology, host_command, stop_process
from support.pki import Issued

CHARON: Final = "/usr/sbin/charon-systemd"
SWANCTL: Final = "/usr/sbin/swanctl"

PLUGINS: Final = (
    *("random", "nonce", "openssl", "aesni", "aes", "gcm", "chapoly"),
    *("sha1", "sha2", "hmac", "kdf", "curve25519"),
    *("pem", "pkcs1", "pkcs8", "x509", "pubkey", "constraints"),
    *("socket-default", "kernel-libipsec", "kernel-netlink", "vici"),
)
"""charon's plugin load list, in order: ``openssl`` first so its AES-GCM/ChaCha20 is used;
``kdf`` for the KDF_PRF, ``pkcs8`` for EC keys, ``constraints`` for certificate checks."""
TUNED_PLUGINS: Final = ("aesni", *(p for p in PLUGINS if p != "aesni"))
"""charon's plugins with ``aesni`` first: its AES-GCM wins over openssl's and plain C's."""
TUNED: Final[dict[str, Any]] = {"plugins": TUNED_PLUGINS, "log_levels": {"default": 0}}
""":class:`Charon` options of a strongSwan tuned as its users tune it, for the benchmarks
that compare kipsec with it: ``aesni`` first and logging at level 0 (the tests' defaults
log IKE at level 2, which costs charon CPU in every exchange)."""

DEFAULT_IKE_PROPOSALS: Final = ("aes256gcm16-prfsha256-x25519",)
DEFAULT_ESP_PROPOSALS: Final = ("aes256gcm16",)

Value: TypeAlias = "str | int | bool | Sequence[str] | Mapping[str, Value]"
"""A swanctl.conf value: scalars, lists (written comma-separated) or nested sections."""


class CharonTimeout(AssertionError):
    """A wait on charon (start, SA establishment, a vici command) did not finish in time.

    An AssertionError so pytest shows it as a test failure; the message ends with the
    tail of charon's log.
    """


def is_available() -> str | None:
    """None if charon-systemd and swanctl are installed, else the reason they are not."""
    for binary in (CHARON, SWANCTL):
        if not os.access(binary, os.X_OK):
            return f"{binary} not installed (Debian: charon-systemd strongswan-swanctl)"
    try:
        import vici  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return "the 'vici' Python package (PyPI) is not installed"
    return None


# -- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class Psk:
    """Pre-shared key authentication (charon requires a reasonably long secret)."""

    secret: str


@dataclass(frozen=True)
class CertAuth:
    """Public-key authentication: this peer's certificate and key, and the CAs it trusts.

    Keys are written unencrypted as PKCS#8 PEM (the ``pkcs8`` plugin reads RSA and EC).
    """

    identity: Issued
    trust: tuple[x509.Certificate, ...]
    send_cert: Literal["always", "ifasked", "never"] = "always"


Auth: TypeAlias = Psk | CertAuth


@dataclass(frozen=True)
class Child:
    """A CHILD_SA definition (one ``children`` subsection). Times are in seconds.

    ``ah_proposals`` non-empty makes it an AH child (ESP proposals are then not written).
    ``extra`` adds any other swanctl child key verbatim.
    """

    name: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    esp_proposals: tuple[str, ...] = DEFAULT_ESP_PROPOSALS
    ah_proposals: tuple[str, ...] = ()
    mode: Literal["tunnel", "transport"] = "tunnel"
    start_action: Literal["none", "trap", "start"] = "none"
    dpd_action: Literal["clear", "trap", "restart"] = "clear"
    close_action: Literal["none", "trap", "start"] = "none"
    rekey_time: int | None = None
    life_time: int | None = None
    rand_time: int | None = None
    extra: Mapping[str, Value] = field(default_factory=dict)

    def section(self) -> dict[str, Value]:
        body: dict[str, Value] = {
            "local_ts": list(self.local_ts),
            "remote_ts": list(self.remote_ts),
            "mode": self.mode,
            "start_action": self.start_action,
            "dpd_action": self.dpd_action,
            "close_action": self.close_action,
        }
        if self.ah_proposals:
            body["ah_proposals"] = list(self.ah_proposals)
        else:
            body["esp_proposals"] = list(self.esp_proposals)
        for key, value in (
            ("rekey_time", self.rekey_time),
            ("life_time", self.life_time),
            ("rand_time", self.rand_time),
        ):
            if value is not None:
                body[key] = f"{value}s"
        body.update(self.extra)
        return body


@dataclass(frozen=True)
class Connection:
    """An IKE connection (one ``connections`` section) with its children and credentials.

    Addresses and ports are those charon uses for IKE. Times are in seconds;
    ``reauth_time`` defaults to 0 (rekey, never reauthenticate), ``dpd_delay`` to none.
    ``extra`` adds any other swanctl connection key verbatim.
    """

    name: str
    local_addrs: tuple[str, ...]
    remote_addrs: tuple[str, ...]
    auth: Auth
    local_id: str
    remote_id: str
    children: tuple[Child, ...]
    proposals: tuple[str, ...] = DEFAULT_IKE_PROPOSALS
    version: Literal[1, 2] = 2
    encap: bool = False
    mobike: bool = False
    fragmentation: Literal["yes", "no", "accept", "force"] = "yes"
    local_port: int = 500
    remote_port: int = 500
    dpd_delay: int | None = None
    rekey_time: int | None = None
    over_time: int | None = None
    reauth_time: int = 0
    rand_time: int | None = None
    extra: Mapping[str, Value] = field(default_factory=dict)

    def _auth_sections(self) -> tuple[dict[str, Value], dict[str, Value]]:
        local: dict[str, Value] = {"id": self.local_id}
        remote: dict[str, Value] = {"id": self.remote_id}
        if isinstance(self.auth, Psk):
            local["auth"] = remote["auth"] = "psk"
        else:
            local["auth"] = remote["auth"] = "pubkey"
            local["certs"] = f"{self.name}.pem"
        return local, remote

    def section(self) -> dict[str, Value]:
        local, remote = self._auth_sections()
        body: dict[str, Value] = {
            "version": self.version,
            "local_addrs": list(self.local_addrs),
            "remote_addrs": list(self.remote_addrs),
            "local_port": self.local_port,
            "remote_port": self.remote_port,
            "proposals": list(self.proposals),
            "encap": self.encap,
            "mobike": self.mobike,
            "fragmentation": self.fragmentation,
            "reauth_time": f"{self.reauth_time}s",
        }
        if isinstance(self.auth, CertAuth):
            body["send_cert"] = self.auth.send_cert
        for key, value in (
            ("dpd_delay", self.dpd_delay),
            ("rekey_time", self.rekey_time),
            ("over_time", self.over_time),
            ("rand_time", self.rand_time),
        ):
            if value is not None:
                body[key] = f"{value}s"
        body.update(self.extra)
        body["local"] = local
        body["remote"] = remote
        body["children"] = {child.name: child.section() for child in self.children}
        return body


def render(sections: Mapping[str, Value], indent: int = 0) -> str:
    """strongSwan settings syntax: one ``key = value`` per line, nested ``name { }``.

    Booleans become ``yes``/``no`` and lists are comma-joined (charon rejects several
    keys on one line, so every key gets its own).
    """
    pad = "    " * indent
    lines = []
    for key, value in sections.items():
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key} {{")
            lines.append(render(value, indent + 1))
            lines.append(f"{pad}}}")
        else:
            lines.append(f"{pad}{key} = {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _scalar(value: Value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str | int):
        text = str(value)
    elif isinstance(value, Mapping):
        raise TypeError("a section is not a scalar value")
    else:
        text = ",".join(str(item) for item in value)
    if "\n" in text or "{" in text or "}" in text:
        raise ValueError(f"value not representable in swanctl.conf: {text!r}")
    return text


# -- SA listing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildSa:
    """One CHILD_SA as vici lists it (strings as charon formats them)."""

    name: str
    unique_id: str
    state: str
    """``INSTALLED``, ``REKEYING``, ``REKEYED``, ``DELETING``, ..."""
    protocol: str
    mode: str
    encap: bool
    spi_in: str
    spi_out: str
    encr_alg: str
    """e.g. ``AES_GCM_16``, ``CHACHA20_POLY1305``, ``AES_CBC``."""
    encr_keysize: int
    """Bits; 0 when the algorithm has a fixed size (ChaCha20-Poly1305)."""
    integ_alg: str
    """e.g. ``HMAC_SHA2_256_128``; empty for AEAD."""
    dh_group: str
    """Only set when the CHILD_SA was created or rekeyed with PFS."""
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class IkeSa:
    """One IKE_SA as vici lists it, with its CHILD_SAs."""

    name: str
    unique_id: str
    state: str
    """``CONNECTING``, ``ESTABLISHED``, ``REKEYING``, ``DELETING``, ..."""
    local_host: str
    remote_host: str
    local_id: str
    remote_id: str
    initiator: bool
    initiator_spi: str
    responder_spi: str
    encr_alg: str
    prf_alg: str
    dh_group: str
    nat: bool
    """Whether charon considers NAT present (it moves to port 4500 and encapsulates ESP).
    With kernel-libipsec it always does: libipsec only sends ESP in UDP."""
    children: tuple[ChildSa, ...]
    raw: Mapping[str, Any] = field(repr=False)

    def child(self, name: str) -> ChildSa | None:
        """The first child named ``name`` in state INSTALLED, else any with that name."""
        named = [c for c in self.children if c.name == name]
        installed = [c for c in named if c.state == "INSTALLED"]
        candidates = installed or named
        return candidates[0] if candidates else None


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, Mapping):
        return {_decode(k): _decode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_decode(v) for v in value]
    return value


def _child_from_vici(body: Mapping[str, Any]) -> ChildSa:
    def number(key: str) -> int:
        return int(body.get(key, 0) or 0)

    return ChildSa(
        name=str(body.get("name", "")),
        unique_id=str(body.get("uniqueid", "")),
        state=str(body.get("state", "")),
        protocol=str(body.get("protocol", "")),
        mode=str(body.get("mode", "")),
        encap=body.get("encap") == "yes",
        spi_in=str(body.get("spi-in", "")),
        spi_out=str(body.get("spi-out", "")),
        encr_alg=str(body.get("encr-alg", "")),
        encr_keysize=number("encr-keysize"),
        integ_alg=str(body.get("integ-alg", "")),
        dh_group=str(body.get("dh-group", "")),
        local_ts=tuple(body.get("local-ts", [])),
        remote_ts=tuple(body.get("remote-ts", [])),
        bytes_in=number("bytes-in"),
        bytes_out=number("bytes-out"),
        packets_in=number("packets-in"),
        packets_out=number("packets-out"),
        raw=body,
    )


def ike_sas_from_vici(messages: Sequence[Mapping[str, Any]]) -> list[IkeSa]:
    """Turn vici ``list-sa`` events (``{ike_name: {...}}`` each) into :class:`IkeSa` objects."""
    sas = []
    for message in messages:
        for name, body in _decode(message).items():
            children = tuple(_child_from_vici(c) for c in body.get("child-sas", {}).values())
            sas.append(
                IkeSa(
                    name=name,
                    unique_id=str(body.get("uniqueid", "")),
                    state=str(body.get("state", "")),
                    local_host=str(body.get("local-host", "")),
                    remote_host=str(body.get("remote-host", "")),
                    local_id=str(body.get("local-id", "")),
                    remote_id=str(body.get("remote-id", "")),
                    initiator=body.get("initiator") == "yes",
                    initiator_spi=str(body.get("initiator-spi", "")),
                    responder_spi=str(body.get("responder-spi", "")),
                    encr_alg=str(body.get("encr-alg", "")),
                    prf_alg=str(body.get("prf-alg", "")),
                    dh_group=str(body.get("dh-group", "")),
                    nat=body.get("nat-any") == "yes",
                    children=children,
                    raw=body,
                )
            )
    return sas


class CharonFactory(Protocol):
    """What the ``strongswan_factory`` fixture is: start a :class:`Charon` in a namespace."""

    def __call__(self, topology: Topology, name: str, **options: Any) -> Charon: ...


# -- the daemon ----------------------------------------------------------------------------


class Charon:
    """charon-systemd running in namespace ``name`` of ``topology``, configured under ``workdir``.

    Layout of ``workdir``: ``strongswan.conf``, ``charon.vici``, ``charon.log`` (charon's
    file logger), ``charon.out`` (its stdout/stderr) and ``swanctl/`` (``swanctl.conf``,
    ``x509``, ``x509ca``, ``private``). ``log_levels`` sets the file logger's levels per
    subsystem (``default`` included); 1 is terse, 2 shows the IKE exchanges (charon logs
    key material only at 4, never use that). ``settings`` are extra top-level keys of the
    ``charon-systemd`` section; each replaces the default of the same name whole (so
    ``plugins`` given there must repeat the vici socket).
    """

    def __init__(
        self,
        topology: Topology,
        name: str,
        workdir: Path,
        *,
        plugins: Sequence[str] = PLUGINS,
        log_levels: Mapping[str, int] | None = None,
        settings: Mapping[str, Value] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.topology = topology
        self.name = name
        self.workdir = Path(workdir)
        self.plugins = tuple(plugins)
        self.log_levels = dict(log_levels or {"default": 1, "ike": 2, "cfg": 2, "knl": 1})
        self.settings = dict(settings or {})
        self.timeout = timeout
        self.conf_path = self.workdir / "strongswan.conf"
        self.vici_path = self.workdir / "charon.vici"
        self.log_path = self.workdir / "charon.log"
        self.out_path = self.workdir / "charon.out"
        self.swanctl_dir = self.workdir / "swanctl"
        self._proc: subprocess.Popen[bytes] | None = None
        self.connections: list[Connection] = []

    # -- lifecycle ------------------------------------------------------------------------

    def strongswan_conf(self) -> str:
        """The ``strongswan.conf`` text this instance runs with."""
        charon: dict[str, Value] = {
            "load": " ".join(self.plugins),
            "port": 500,
            "port_nat_t": 4500,
            "install_routes": True,
            "retransmit_tries": 3,
            "retransmit_timeout": "1.0",
            "retransmit_base": "1.4",
            "plugins": {
                "vici": {"socket": f"unix://{self.vici_path}"},
                "kernel-libipsec": {"allow_peer_ts": False},
            },
            "journal": {"default": -1},
            "syslog": {"daemon": {"default": -1}},
            "filelog": {
                "charon": {
                    "path": str(self.log_path),
                    "time_format": "%H:%M:%S",
                    "flush_line": True,
                    "append": False,
                    **{key: level for key, level in self.log_levels.items()},
                }
            },
        }
        charon.update(self.settings)
        return (
            render({"charon-systemd": charon, "swanctl": {"socket": f"unix://{self.vici_path}"}})
            + "\n"
        )

    @property
    def env(self) -> dict[str, str]:
        """Environment for charon and swanctl: this instance's config and swanctl dir."""
        return {
            **os.environ,
            "STRONGSWAN_CONF": str(self.conf_path),
            "SWANCTL_DIR": str(self.swanctl_dir),
        }

    def start(self) -> Charon:
        """Write the config and start charon; return once its vici socket answers.

        Once charon has exited (:meth:`kill`), this starts it again: a restarted peer
        that remembers nothing (call :meth:`load` for its connections)."""
        if self.running:
            raise RuntimeError("charon already started")
        for sub in ("x509", "x509ca", "private"):
            (self.swanctl_dir / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.strongswan_conf())
        if not (self.swanctl_dir / "swanctl.conf").exists():
            (self.swanctl_dir / "swanctl.conf").write_text("")
        with contextlib.suppress(FileNotFoundError):
            self.vici_path.unlink()
        with self.out_path.open("wb") as out:
            self._proc = self.topology.popen(
                self.name, [CHARON], stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        self._wait(self._vici_ready, self.timeout, "charon's vici socket to answer")
        return self

    def _vici_ready(self) -> bool:
        if not self.vici_path.exists():
            return False
        with self.session(timeout=1.0) as session:
            session.version()
        return True

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM charon (it deletes its SAs and removes ipsec0), SIGKILL after ``grace``."""
        if self._proc is not None:
            stop_process(self._proc, grace=grace)

    def kill(self) -> None:
        """SIGKILL charon at once: no DELETE sent, nothing cleaned up (a crashed peer)."""
        if self._proc is not None:
            stop_process(self._proc, sig=9, grace=2.0)

    @property
    def pid(self) -> int | None:
        """charon's process ID once started (for CPU and memory readings)."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Charon:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- configuration --------------------------------------------------------------------

    def configure(self, *connections: Connection) -> Path:
        """Write ``swanctl.conf`` (and the credential files) for ``connections``.

        Replaces any earlier configuration; call :meth:`load` to hand it to charon.
        Returns the path of ``swanctl.conf``.
        """
        self.connections = list(connections)
        for sub in ("x509", "x509ca", "private"):
            directory = self.swanctl_dir / sub
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        secrets: dict[str, Value] = {}
        for conn in connections:
            if isinstance(conn.auth, Psk):
                secrets[f"ike-{conn.name}"] = {
                    "id-local": conn.local_id,
                    "id-remote": conn.remote_id,
                    "secret": _quoted(conn.auth.secret),
                }
            else:
                self._write_credentials(conn.name, conn.auth)
        document: dict[str, Value] = {
            "connections": {conn.name: conn.section() for conn in connections},
            "secrets": secrets,
        }
        path = self.swanctl_dir / "swanctl.conf"
        path.write_text(render(document) + "\n")
        return path

    def _write_credentials(self, name: str, auth: CertAuth) -> None:
        (self.swanctl_dir / "x509" / f"{name}.pem").write_bytes(
            auth.identity.cert.public_bytes(Encoding.PEM)
        )
        key_path = self.swanctl_dir / "private" / f"{name}.pem"
        key_path.write_bytes(
            auth.identity.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        )
        key_path.chmod(0o600)
        for index, ca in enumerate(auth.trust):
            (self.swanctl_dir / "x509ca" / f"{name}-ca{index}.pem").write_bytes(
                ca.public_bytes(Encoding.PEM)
            )

    def swanctl(
        self, *args: str, timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``swanctl ARGS`` against this instance (its socket, its SWANCTL_DIR).

        swanctl talks to charon over the Unix socket, which needs no namespace.
        """
        try:
            return host_command(
                [SWANCTL, *args, "--uri", f"unix://{self.vici_path}"],
                env=self.env,
                timeout=timeout or self.timeout,
                check=check,
            )
        except CommandFailed as exc:
            raise CharonTimeout(self._with_log(str(exc))) from None

    def load(self) -> str:
        """``swanctl --load-all``: (re)load connections and credentials; return its output."""
        return self.swanctl("--load-all", "--noprompt", "--clear").stdout

    # -- control --------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self, timeout: float | None = None) -> Iterator[Any]:
        """A ``vici.Session`` on this instance's socket, closed on exit.

        Socket reads are bounded by ``timeout`` seconds (default: this instance's).
        """
        import vici

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout or self.timeout)
        try:
            sock.connect(str(self.vici_path))
            yield vici.Session(sock)
        finally:
            sock.close()

    def _control(self, command: str, request: Mapping[str, Any], timeout: float) -> list[str]:
        """Run a streamed vici command (initiate/terminate); return charon's log lines."""
        logs: list[str] = []
        body = {**request, "timeout": int(timeout * 1000)}
        try:
            with self.session(timeout + 2) as session:
                for message in getattr(session, command)(body):
                    logs.append(str(_decode(message).get("msg", "")))
        except vici_command_error() as exc:
            raise CharonTimeout(self._with_log(f"vici {command} {request} failed: {exc}")) from None
        except TimeoutError:
            raise CharonTimeout(self._with_log(f"vici {command} {request} timed out")) from None
        return logs

    def initiate(
        self, child: str, *, ike: str | None = None, timeout: float | None = None
    ) -> list[str]:
        """Initiate CHILD_SA ``child`` (and its IKE_SA); returns when charon reports the result.

        Raises :class:`CharonTimeout` if charon reports failure or nothing within ``timeout``.
        """
        request: dict[str, Any] = {"child": child}
        if ike is not None:
            request["ike"] = ike
        return self._control("initiate", request, timeout or self.timeout)

    def terminate(
        self, *, ike: str | None = None, child: str | None = None, timeout: float | None = None
    ) -> list[str]:
        """Terminate (send DELETE for) the named IKE_SA or CHILD_SA and wait for completion."""
        request: dict[str, Any] = {}
        if ike is not None:
            request["ike"] = ike
        if child is not None:
            request["child"] = child
        if not request:
            raise ValueError("name an ike or a child to terminate")
        return self._control("terminate", request, timeout or self.timeout)

    def rekey(self, *, ike: str | None = None, child: str | None = None) -> int:
        """Start a rekey of the named IKE_SA or CHILD_SA; returns how many SAs matched.

        Returns without waiting: poll :meth:`list_sas` for the new SPIs.
        """
        request: dict[str, Any] = {}
        if ike is not None:
            request["ike"] = ike
        if child is not None:
            request["child"] = child
        with self.session() as session:
            reply = _decode(session.rekey(request))
        return int(reply.get("matches", 0))

    def list_sas(self) -> list[IkeSa]:
        """Every IKE_SA charon holds now, with its CHILD_SAs."""
        with self.session() as session:
            return ike_sas_from_vici(list(session.list_sas()))

    def established(self, *, ike: str | None = None, child: str | None = None) -> IkeSa | None:
        """The first ESTABLISHED IKE_SA (named ``ike`` if given) with an INSTALLED ``child``."""
        for sa in self.list_sas():
            if sa.state != "ESTABLISHED" or (ike is not None and sa.name != ike):
                continue
            if child is None:
                return sa
            found = sa.child(child)
            if found is not None and found.state == "INSTALLED":
                return sa
        return None

    def wait_established(
        self, timeout: float | None = None, *, ike: str | None = None, child: str | None = None
    ) -> IkeSa:
        """Wait until :meth:`established` finds an SA; raise :class:`CharonTimeout` if not."""
        found: list[IkeSa] = []

        def check() -> bool:
            sa = self.established(ike=ike, child=child)
            if sa is not None:
                found.append(sa)
            return sa is not None

        what = f"IKE_SA {ike or '*'} with child {child or '*'} to be established"
        self._wait(check, timeout or self.timeout, what)
        return found[0]

    def wait_for(
        self, predicate: Callable[[list[IkeSa]], bool], timeout: float | None = None, what: str = ""
    ) -> list[IkeSa]:
        """Poll :meth:`list_sas` until ``predicate`` holds; return the SAs that satisfied it."""
        found: list[list[IkeSa]] = []

        def check() -> bool:
            sas = self.list_sas()
            if predicate(sas):
                found.append(sas)
                return True
            return False

        self._wait(check, timeout or self.timeout, what or "SA predicate")
        return found[0]

    # -- diagnostics ----------------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` of charon's log (and of its stdout if the log is empty)."""
        for path in (self.log_path, self.out_path):
            with contextlib.suppress(FileNotFoundError):
                text = path.read_text(errors="replace").splitlines()
                if text:
                    return "\n".join(text[-lines:])
        return "(charon wrote no log)"

    def _with_log(self, message: str) -> str:
        return f"{message}\n--- charon {self.name} log ({self.log_path}) ---\n{self.log_tail()}"

    def _wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` every 50 ms for ``timeout`` s; fail at once if charon exits.

        Socket errors from ``check`` (charon still starting, or busy) count as "not yet".
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise CharonTimeout(
                    self._with_log(
                        f"charon exited ({self._proc.returncode}) while waiting for {what}"
                    )
                )
            try:
                if check():
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise CharonTimeout(
                    self._with_log(f"timed out after {timeout}s waiting for {what}")
                )
            time.sleep(0.05)


def vici_command_error() -> type[Exception]:
    """vici's CommandException (imported late: the package is only needed with charon)."""
    from vici.exception import CommandException  # type: ignore[import-untyped]

    return CommandException  # type: ignore[no-any-return]


def _quoted(secret: str) -> str:
    if '"' in secret or "\\" in secret:
        raise ValueError("PSK must not contain quotes or backslashes")
    return f'"{secret}"'


def gateway_pair(
    topology: Topology,
    left: str,
    right: str,
    *,
    auth: tuple[Auth, Auth],
    ids: tuple[str, str] = ("left.kipsec.test", "right.kipsec.test"),
    name: str = "gw",
    child: str = "net",
    **options: Any,
) -> tuple[Connection, Connection]:
    """Mirror-image connections for two node gateways protecting their pod CIDRs.

    ``options`` are passed to both :class:`Connection` (``encap=True``, ``proposals=``…);
    child options go through ``child_options=dict(...)``.
    """
    child_options = dict(options.pop("child_options", {}))
    a, b = topology.node(left), topology.node(right)

    def one(me: Any, peer: Any, my_auth: Auth, my_id: str, peer_id: str) -> Connection:
        return Connection(
            name=name,
            local_addrs=(str(me.address),),
            remote_addrs=(str(peer.address),),
            auth=my_auth,
            local_id=my_id,
            remote_id=peer_id,
            children=(Child(child, (str(me.pod_cidr),), (str(peer.pod_cidr),), **child_options),),
            **options,
        )

    return one(a, b, auth[0], ids[0], ids[1]), one(b, a, auth[1], ids[1], ids[0])
