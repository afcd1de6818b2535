"""IKEv2 protocol numbers from the IANA registries (RFC 7296 section 3 and its updates).

One ``IntEnum`` per registry so that a number on the wire prints as a name in logs and
errors. Values not listed here are still carried as plain ``int`` by the codec.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

IKE_VERSION = 0x20  # major 2, minor 0
IKE_PORT = 500
IKE_NATT_PORT = 4500
NON_ESP_MARKER = b"\x00\x00\x00\x00"


class ExchangeType(IntEnum):
    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37


class HeaderFlag(IntFlag):
    RESPONSE = 0x20
    VERSION = 0x10
    INITIATOR = 0x08


class PayloadType(IntEnum):
    NONE = 0
    SA = 33
    KE = 34
    IDi = 35
    IDr = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR_ID = 43
    TSi = 44
    TSr = 45
    SK = 46
    CP = 47
    EAP = 48
    SKF = 53  # RFC 7383 encrypted fragment


class ProtocolId(IntEnum):
    """Protocol of a proposal, a Notify or a Delete."""

    NONE = 0
    IKE = 1
    AH = 2
    ESP = 3


class TransformType(IntEnum):
    ENCR = 1
    PRF = 2
    INTEG = 3
    DH = 4
    ESN = 5


class EncrId(IntEnum):
    DES = 2
    DES3 = 3
    NULL = 11
    AES_CBC = 12
    AES_CTR = 13
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20
    CHACHA20_POLY1305 = 28


class PrfId(IntEnum):
    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7


class IntegId(IntEnum):
    NONE = 0
    HMAC_MD5_96 = 1
    HMAC_SHA1_96 = 2
    HMAC_SHA2_256_128 = 12
    HMAC_SHA2_384_192 = 13
    HMAC_SHA2_512_256 = 14


class DhGroup(IntEnum):
    NONE = 0
    MODP_1024 = 2
    MODP_2048 = 14
    MODP_3072 = 15
    ECP_256 = 19
    ECP_384 = 20
    CURVE25519 = 31
    CURVE448 = 32


class EsnId(IntEnum):
    NO_ESN = 0
    ESN = 1


class TransformAttr(IntEnum):
    KEY_LENGTH = 14  # TV format (AF bit set on the wire)


class IdType(IntEnum):
    ID_IPV4_ADDR = 1
    ID_FQDN = 2
    ID_RFC822_ADDR = 3
    ID_IPV6_ADDR = 5
    ID_DER_ASN1_DN = 9
    ID_DER_ASN1_GN = 10
    ID_KEY_ID = 11


class CertEncoding(IntEnum):
    X509_SIGNATURE = 4
    RAW_RSA_KEY = 11
    HASH_AND_URL_X509 = 12


class AuthMethod(IntEnum):
    RSA_SIGNATURE = 1  # RSASSA-PKCS1-v1_5 with SHA-1 (RFC 7296)
    SHARED_KEY_MIC = 2
    DSS_SIGNATURE = 3  # DSA with SHA-1 (RFC 7296)
    ECDSA_SHA256_P256 = 9  # RFC 4754
    ECDSA_SHA384_P384 = 10
    ECDSA_SHA512_P521 = 11
    DIGITAL_SIGNATURE = 14  # RFC 7427


class TsType(IntEnum):
    TS_IPV4_ADDR_RANGE = 7
    TS_IPV6_ADDR_RANGE = 8


class NotifyType(IntEnum):
    # Errors (RFC 7296 section 3.10.1)
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    # Status
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    IKEV2_FRAGMENTATION_SUPPORTED = 16430  # RFC 7383
    SIGNATURE_HASH_ALGORITHMS = 16431  # RFC 7427

    @property
    def is_error(self) -> bool:
        return int(self) < 16384


class HashAlgorithm(IntEnum):
    """RFC 7427 SIGNATURE_HASH_ALGORITHMS registry."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5
