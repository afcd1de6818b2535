"""In-memory files for the sidecar configuration examples: PSKs, a PKI, manual keys.

`to_core` reads auth material through an injectable reader; tests pass
`ExampleFiles().read` so the examples in `examples/sidecar/` map onto the cores
without touching /etc. Certificates come from a throwaway PKI whose leaf names the
identities the examples use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from support.pki import CertificateAuthority

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "sidecar"
SCHEMA_FILE = REPO / "docs" / "sidecar-config.schema.json"

PSK = b"kipsec example pre-shared key, 32B"


def minimal_document() -> dict[str, Any]:
    """The smallest useful document: one PSK peer, everything else default."""
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {
            "addresses": ["10.0.0.1"],
            "auth": {"psk": {"secretFile": "/etc/kipsec/psk/key"}},
        },
        "peers": [{"name": "b", "address": "10.0.0.2"}],
    }


def _hex(byte: int, length: int) -> str:
    return f"{byte:02x}" * length


def manual_keys_yaml(encryption_len: int, integrity_len: int = 0) -> bytes:
    """A keys file as a mounted Secret would hold it (quoted hex strings)."""
    lines = [f"encryptionIn: '{_hex(0x11, encryption_len)}'"]
    lines.append(f"encryptionOut: '{_hex(0x22, encryption_len)}'")
    if integrity_len:
        lines.append(f"integrityIn: '{_hex(0x33, integrity_len)}'")
        lines.append(f"integrityOut: '{_hex(0x44, integrity_len)}'")
    return ("\n".join(lines) + "\n").encode()


@dataclass
class ExampleFiles:
    """Path → bytes for every file the examples name; `read` raises like open() does."""

    files: dict[str, bytes] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        root = CertificateAuthority.root("kipsec example CA")
        leaf = root.issue(
            "pod-a",
            dns=["pod-a.mesh.kipsec.test"],
            ips=["10.244.1.10"],
        )
        self.ca = root
        self.leaf = leaf
        pem_key = leaf.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        self.files.update(
            {
                "/etc/kipsec/psk/key": PSK + b"\n",
                "/etc/kipsec/tls/tls.crt": leaf.cert.public_bytes(Encoding.PEM),
                "/etc/kipsec/tls/tls.key": pem_key,
                "/etc/kipsec/tls/ca.crt": root.cert.public_bytes(Encoding.PEM),
                "/etc/kipsec/manual/legacy-gateway.yaml": manual_keys_yaml(36),
                "/etc/kipsec/manual/legacy-monitor.yaml": manual_keys_yaml(16, 32),
            }
        )

    def read(self, path: str) -> bytes:
        self.reads.append(path)
        try:
            return self.files[path]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory", path) from None
