"""IKEv2 Diffie-Hellman: wire formats, published vectors, and refusal of bad peer values."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kipsec_sidecar.core.errors import RefusedAlgorithm, RemoteProtocolError, UnsupportedAlgorithm
from kipsec_sidecar.core.ike import dh
from kipsec_sidecar.core.ike.constants import DhGroup


def fixed_rng(*chunks: bytes) -> Callable[[int], bytes]:
    """An rng that hands out the given byte strings in order, checking the size asked."""
    queue = list(chunks)

    def rng(n: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == n, f"rng asked for {n} bytes, test prepared {len(chunk)}"
        return chunk

    return rng


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    generator = random.Random(seed)
    return generator.randbytes


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 7748 section 6.1 (X25519) and 6.2 (X448).
X25519_A = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
X25519_A_PUB = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
X25519_B = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
X25519_B_PUB = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
X25519_K = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

X448_A = h(
    "9a8f4925d1519f5775cf46b04b5800d4ee9ee8bae8bc5565d498c28d"
    "d9c9baf574a9419744897391006382a6f127ab1d9ac2d8c0a598726b"
)
X448_A_PUB = h(
    "9b08f7cc31b7e3e67d22d5aea121074a273bd2b83de09c63faa73d2c"
    "22c5d9bbc836647241d953d40c5b12da88120d53177f80e532c41fa0"
)
X448_B = h(
    "1c306a7ac2a0e2e0990b294470cba339e6453772b075811d8fad0d1d"
    "6927c120bb5ee8972b0d3e21374c9c921b09d1b0366f10b65173992d"
)
X448_B_PUB = h(
    "3eb7a829b0cd20f5bcfc0b599b6feccf6da4627107bdb0d4f345b430"
    "27d8b972fc3e34fb4232a13ca706dcb57aec3dae07bdc1c67bf33609"
)
X448_K = h(
    "07fff4181ac6cc95ec1c16a94a0f74d12da232ce40a77552281d282b"
    "b60c0b56fd2464c335543936521c24403085d59a449a5037514a879d"
)

# RFC 5903 section 8.1 (256-bit random ECP group) and 8.2 (384-bit).
P256_I = h("C88F01F5 10D9AC3F 70A292DA A2316DE5 44E9AAB8 AFE84049 C62A9C57 862D1433")
P256_GIX = h("DAD0B653 94221CF9 B051E1FE CA5787D0 98DFE637 FC90B9EF 945D0C37 72581180")
P256_GIY = h("5271A046 1CDB8252 D61F1C45 6FA3E59A B1F45B33 ACCF5F58 389E0577 B8990BB3")
P256_R = h("C6EF9C5D 78AE012A 011164AC B397CE20 88685D8F 06BF9BE0 B283AB46 476BEE53")
P256_GRX = h("D12DFB52 89C8D4F8 1208B702 70398C34 2296970A 0BCCB74C 736FC755 4494BF63")
P256_GRY = h("56FBF3CA 366CC23E 8157854C 13C58D6A AC23F046 ADA30F83 53E74F33 039872AB")
P256_GIRX = h("D6840F6B 42F6EDAF D13116E0 E1256520 2FEF8E9E CE7DCE03 812464D0 4B9442DE")

P384_I = h(
    "099F3C70 34D4A2C6 99884D73 A375A67F 7624EF7C 6B3C0F16 0647B674 14DCE655"
    "E35B5380 41E649EE 3FAEF896 783AB194"
)
P384_GIX = h(
    "667842D7 D180AC2C DE6F74F3 7551F557 55C7645C 20EF73E3 1634FE72 B4C55EE6"
    "DE3AC808 ACB4BDB4 C88732AE E95F41AA"
)
P384_GIY = h(
    "9482ED1F C0EEB9CA FC498462 5CCFC23F 65032149 E0E144AD A0241815 35A0F38E"
    "EB9FCFF3 C2C947DA E69B4C63 4573A81C"
)
P384_GRX = h(
    "E558DBEF 53EECDE3 D3FCCFC1 AEA08A89 A987475D 12FD950D 83CFA417 32BC509D"
    "0D1AC43A 0336DEF9 6FDA41D0 774A3571"
)
P384_GRY = h(
    "DCFBEC7A ACF31964 72169E83 8430367F 66EEBE3C 6E70C416 DD5F0C68 759DD1FF"
    "F83FA401 42209DFF 5EAAD96D B9E6386C"
)
P384_GIRX = h(
    "11187331 C279962D 93D60424 3FD592CB 9D0A926F 422E4718 7521287E 7156C5C4"
    "D6031355 69B9E9D0 9CF5D4A2 70F59746"
)


# --- vectors --------------------------------------------------------------------------


def test_x25519_public_value_is_the_rfc7748_public_key() -> None:
    kex = dh.generate(DhGroup.CURVE25519, fixed_rng(X25519_A))
    assert kex.public_bytes == X25519_A_PUB


def test_x25519_shared_secret_matches_rfc7748_from_both_sides() -> None:
    alice = dh.generate(DhGroup.CURVE25519, fixed_rng(X25519_A))
    bob = dh.generate(DhGroup.CURVE25519, fixed_rng(X25519_B))
    assert bob.public_bytes == X25519_B_PUB
    assert alice.shared_secret(X25519_B_PUB) == X25519_K
    assert bob.shared_secret(X25519_A_PUB) == X25519_K


def test_x448_public_values_and_shared_secret_match_rfc7748() -> None:
    alice = dh.generate(DhGroup.CURVE448, fixed_rng(X448_A))
    bob = dh.generate(DhGroup.CURVE448, fixed_rng(X448_B))
    assert alice.public_bytes == X448_A_PUB
    assert bob.public_bytes == X448_B_PUB
    assert alice.shared_secret(bob.public_bytes) == X448_K
    assert bob.shared_secret(alice.public_bytes) == X448_K


def test_ecp256_ke_payload_is_x_then_y_without_prefix_rfc5903() -> None:
    kex = dh.generate(DhGroup.ECP_256, fixed_rng(P256_I))
    assert kex.public_bytes == P256_GIX + P256_GIY


def test_ecp256_shared_secret_is_the_x_coordinate_rfc5903() -> None:
    initiator = dh.generate(DhGroup.ECP_256, fixed_rng(P256_I))
    responder = dh.generate(DhGroup.ECP_256, fixed_rng(P256_R))
    assert responder.public_bytes == P256_GRX + P256_GRY
    assert initiator.shared_secret(P256_GRX + P256_GRY) == P256_GIRX
    assert responder.shared_secret(P256_GIX + P256_GIY) == P256_GIRX


def test_ecp384_ke_payload_and_shared_secret_match_rfc5903() -> None:
    initiator = dh.generate(DhGroup.ECP_384, fixed_rng(P384_I))
    assert initiator.public_bytes == P384_GIX + P384_GIY
    assert initiator.shared_secret(P384_GRX + P384_GRY) == P384_GIRX


@pytest.mark.parametrize("group", [DhGroup.MODP_2048, DhGroup.MODP_3072])
def test_modp_values_are_padded_to_the_prime_length(group: DhGroup) -> None:
    # A tiny exponent makes g^x = 32: one significant byte, all the rest padding.
    params = dh.MODP_GROUPS[group]
    too_small = b"\x00" * params.exponent_bytes  # exponent 0 is redrawn
    five = (5).to_bytes(params.exponent_bytes, "big")
    kex = dh.generate(group, fixed_rng(too_small, five))
    assert len(kex.public_bytes) == params.length
    assert kex.public_bytes == pow(2, 5, params.prime).to_bytes(params.length, "big")
    peer = (4).to_bytes(params.length, "big")  # 2^2
    assert kex.shared_secret(peer) == pow(4, 5, params.prime).to_bytes(params.length, "big")


def _is_probable_prime(n: int) -> bool:
    witnesses = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in witnesses:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


@pytest.mark.parametrize(("group", "bits"), [(DhGroup.MODP_2048, 2048), (DhGroup.MODP_3072, 3072)])
def test_modp_primes_are_the_rfc3526_safe_primes(group: DhGroup, bits: int) -> None:
    # A typo in the 500-digit constant would make it composite (or not a safe prime).
    p = dh.MODP_GROUPS[group].prime
    assert p.bit_length() == bits
    assert p % 2**64 == 2**64 - 1 and p >> (bits - 64) == 2**64 - 1
    assert _is_probable_prime(p)
    assert _is_probable_prime((p - 1) // 2)


# --- agreement and determinism ---------------------------------------------------------


@pytest.mark.parametrize("group", dh.SUPPORTED_GROUPS)
def test_both_sides_compute_the_same_secret(group: int) -> None:
    a = dh.generate(group, seeded_rng(1))
    b = dh.generate(group, seeded_rng(2))
    assert len(a.public_bytes) == dh.public_length(group)
    secret = a.shared_secret(b.public_bytes)
    assert secret == b.shared_secret(a.public_bytes)
    assert a.public_bytes != b.public_bytes


@pytest.mark.parametrize("group", dh.SUPPORTED_GROUPS)
def test_same_rng_bytes_give_the_same_key(group: int) -> None:
    assert (
        dh.generate(group, seeded_rng(7)).public_bytes
        == dh.generate(group, seeded_rng(7)).public_bytes
    )


def test_ecp_scalar_outside_the_group_order_is_redrawn() -> None:
    order_too_big = b"\xff" * 32
    kex = dh.generate(DhGroup.ECP_256, fixed_rng(order_too_big, P256_I))
    assert kex.public_bytes == P256_GIX + P256_GIY


def test_ecp_shared_secret_matches_a_foreign_implementation() -> None:
    kex = dh.generate(DhGroup.ECP_384, seeded_rng(3))
    peer = ec.generate_private_key(ec.SECP384R1())
    peer_wire = peer.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]
    ours = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), b"\x04" + kex.public_bytes)
    assert kex.shared_secret(peer_wire) == peer.exchange(ec.ECDH(), ours)


# --- refusals ---------------------------------------------------------------------------


def test_modp1024_is_refused_naming_safe_alternatives() -> None:
    with pytest.raises(RefusedAlgorithm) as excinfo:
        dh.generate(DhGroup.MODP_1024, seeded_rng(0))
    assert "curve25519" in str(excinfo.value)
    assert "MODP-2048" in str(excinfo.value)


def test_unknown_group_is_unsupported() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        dh.generate(21, seeded_rng(0))
    with pytest.raises(UnsupportedAlgorithm):
        dh.public_length(21)


@pytest.mark.parametrize(
    ("group", "length"),
    [
        (DhGroup.CURVE25519, 32),
        (DhGroup.CURVE448, 56),
        (DhGroup.ECP_256, 64),
        (DhGroup.ECP_384, 96),
        (DhGroup.MODP_2048, 256),
        (DhGroup.MODP_3072, 384),
    ],
)
def test_public_length_per_group(group: int, length: int) -> None:
    assert dh.public_length(group) == length


@pytest.mark.parametrize("group", dh.SUPPORTED_GROUPS)
@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_length_peer_value_is_rejected(group: int, delta: int) -> None:
    kex = dh.generate(group, seeded_rng(4))
    peer = dh.generate(group, seeded_rng(5)).public_bytes
    bad = peer[:-1] if delta < 0 else peer + b"\x01"
    with pytest.raises(dh.InvalidKeyExchange):
        kex.shared_secret(bad)


def test_invalid_key_exchange_is_a_remote_protocol_error() -> None:
    assert issubclass(dh.InvalidKeyExchange, RemoteProtocolError)


def test_ecp_peer_with_sec1_prefix_is_rejected() -> None:
    kex = dh.generate(DhGroup.ECP_256, seeded_rng(4))
    with pytest.raises(dh.InvalidKeyExchange):
        kex.shared_secret(b"\x04" + P256_GRX + P256_GRY)


@pytest.mark.parametrize("group", [DhGroup.ECP_256, DhGroup.ECP_384])
def test_ecp_point_off_the_curve_is_rejected(group: int) -> None:
    kex = dh.generate(group, seeded_rng(4))
    good = dh.generate(group, seeded_rng(5)).public_bytes
    off_curve = good[:-1] + bytes([good[-1] ^ 0x01])  # y changed: no longer on the curve
    with pytest.raises(dh.InvalidKeyExchange, match="not on the curve"):
        kex.shared_secret(off_curve)


@pytest.mark.parametrize("group", [DhGroup.MODP_2048, DhGroup.MODP_3072])
@pytest.mark.parametrize("which", ["zero", "one", "p-1", "p", "all-ones"])
def test_modp_degenerate_peer_values_are_rejected(group: int, which: str) -> None:
    params = dh.MODP_GROUPS[group]
    value = {
        "zero": 0,
        "one": 1,
        "p-1": params.prime - 1,
        "p": params.prime,
        "all-ones": 2 ** (8 * params.length) - 1,
    }[which]
    kex = dh.generate(group, seeded_rng(4))
    with pytest.raises(dh.InvalidKeyExchange):
        kex.shared_secret(value.to_bytes(params.length, "big"))


@pytest.mark.parametrize("group", [DhGroup.CURVE25519, DhGroup.CURVE448])
def test_montgomery_small_order_point_giving_zero_secret_is_rejected(group: int) -> None:
    kex = dh.generate(group, seeded_rng(4))
    zero_point = bytes(dh.public_length(group))  # u = 0 has order 1: the secret is all zero
    with pytest.raises(dh.InvalidKeyExchange):
        kex.shared_secret(zero_point)


def test_x25519_low_order_point_u_equals_one_is_rejected() -> None:
    # u = 1 is a low-order point: X25519(k, 1) is all zero for every clamped k.
    kex = dh.generate(DhGroup.CURVE25519, seeded_rng(4))
    with pytest.raises(dh.InvalidKeyExchange):
        kex.shared_secret((1).to_bytes(32, "little"))


def test_repr_does_not_show_private_material() -> None:
    kex = dh.generate(DhGroup.MODP_2048, seeded_rng(4))
    assert repr(kex) == "ModpKeyExchange(group=14)"
