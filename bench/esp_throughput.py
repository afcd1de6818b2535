"""ESP throughput: kipsec encapsulate + decapsulate against the raw ``cryptography`` cost.

Run: ``.venv/bin/python bench/esp_throughput.py [--seconds 0.5]``

For each suite (AES-GCM-128/256, ChaCha20-Poly1305, AES-128-CBC + HMAC-SHA2-256-128)
and payload size (64, 512, 1400 bytes) it measures, for about ``--seconds`` each:

- kipsec: one IPv4 tunnel-mode ``esp.encapsulate`` plus one ``esp.decapsulate`` of the
  result (outer header, padding, sequence numbers, replay window, counters included);
- raw: the bare cryptographic work on the same plaintext size with keyed objects made
  once (AEAD encrypt + decrypt; or AES-CBC encrypt + HMAC + HMAC check + decrypt).

The ratio raw/kipsec (in packets per second) is the share of kipsec's time that is
cryptography; the rest is Python packet handling. Total run time stays under 30 s.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import os
import struct
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from kipsec_sidecar.core import esp
from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.core.ip import IpProto, build_ipv4
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode

SIZES = (64, 512, 1400)
# name: (encr, key length with salt, integ, integ key length)
SUITES: dict[str, tuple[EncrId, int, IntegId | None, int]] = {
    "AES-GCM-128": (EncrId.AES_GCM_16, 20, None, 0),
    "AES-GCM-256": (EncrId.AES_GCM_16, 36, None, 0),
    "ChaCha20-Poly1305": (EncrId.CHACHA20_POLY1305, 36, None, 0),
    "AES-CBC-128+SHA256": (EncrId.AES_CBC, 16, IntegId.HMAC_SHA2_256_128, 32),
}


def make_sa(name: str, encr_key: bytes, integ_key: bytes) -> IpsecSa:
    encr, _, integ, _ = SUITES[name]
    return IpsecSa(
        spi=0x1000,
        src="192.0.2.1",
        dst="192.0.2.2",
        protocol=ProtocolId.ESP,
        mode=Mode.TUNNEL,
        encr_id=encr,
        encr_key=encr_key,
        integ_id=integ,
        integ_key=integ_key,
        replay_window=1024,
    )


def inner_packet(payload_len: int) -> bytes:
    """An IPv4/UDP packet whose total length is ``payload_len`` (at least 28)."""
    body = bytes(max(payload_len - 28, 0))
    udp = struct.pack("!HHHH", 4000, 5000, 8 + len(body), 0) + body
    src, dst = ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.2")
    return build_ipv4(src, dst, IpProto.UDP, len(udp)) + udp


def rate(step: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``step``, measured in batches for about ``seconds``."""
    batch, count = 64, 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            step()
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def kipsec_step(name: str, size: int) -> Callable[[], object]:
    _, key_len, _, integ_len = SUITES[name]
    keys = os.urandom(key_len), os.urandom(integ_len)
    tx, rx = make_sa(name, *keys), make_sa(name, *keys)
    packet = inner_packet(size)
    rng = os.urandom

    def step() -> bytes:
        return esp.decapsulate(rx, esp.encapsulate(tx, packet, rng))

    return step


def raw_step(name: str, size: int) -> Callable[[], object]:
    """The cryptography-only work for one packet of ``size`` bytes each way."""
    encr, key_len, _, integ_len = SUITES[name]
    plaintext = bytes(size + 2 + (-(size + 2) % (16 if encr == EncrId.AES_CBC else 4)))
    aad = bytes(8)
    if encr != EncrId.AES_CBC:
        key = os.urandom(key_len - 4)
        aead = ChaCha20Poly1305(key) if encr == EncrId.CHACHA20_POLY1305 else AESGCM(key)
        nonce = bytes(12)

        def aead_step() -> bytes:
            return aead.decrypt(nonce, aead.encrypt(nonce, plaintext, aad), aad)

        return aead_step
    aes = algorithms.AES(os.urandom(key_len))
    mac = hmac.new(os.urandom(integ_len), digestmod="sha256")
    iv = bytes(16)

    def cbc_step() -> bytes:
        enc = Cipher(aes, modes.CBC(iv)).encryptor()
        ct = enc.update(plaintext) + enc.finalize()
        m = mac.copy()
        m.update(aad + iv + ct)
        tag = m.digest()[:16]
        check = mac.copy()
        check.update(aad + iv + ct)
        if not hmac.compare_digest(check.digest()[:16], tag):
            raise AssertionError("HMAC mismatch")
        dec = Cipher(aes, modes.CBC(iv)).decryptor()
        return dec.update(ct) + dec.finalize()

    return cbc_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per cell (s)")
    args = parser.parse_args()
    seconds = min(args.seconds, 30 / (2 * len(SUITES) * len(SIZES)))
    header = f"{'suite':<20}{'bytes':>6}{'kipsec pkt/s':>14}{'raw pkt/s':>12}{'kipsec/raw':>12}"
    print(header)
    print("-" * len(header))
    for name in SUITES:
        for size in SIZES:
            k = rate(kipsec_step(name, size), seconds)
            r = rate(raw_step(name, size), seconds)
            print(f"{name:<20}{size:>6}{k:>14,.0f}{r:>12,.0f}{k / r:>12.2f}")


if __name__ == "__main__":
    main()
