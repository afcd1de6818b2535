"""IKEv1 / ISAKMP protocol numbers: RFC 2408 (ISAKMP), RFC 2407 (the IPsec DOI),
RFC 2409 (IKE), RFC 3947 (NAT-T), RFC 3706 (DPD) and RFC 4754 (ECDSA).

One ``IntEnum`` per registry so a number on the wire prints as a name in logs and
errors. Where IKEv1 and IKEv2 share an IANA registry, the IKEv2 enum is the one used:
ESP transform IDs are :class:`~kipsec_sidecar.core.ike.constants.EncrId`, the group
description values are :class:`~kipsec_sidecar.core.ike.constants.DhGroup`, the
protocol IDs 1-3 are :class:`~kipsec_sidecar.core.ike.constants.ProtocolId`, CERT
encodings are :class:`~kipsec_sidecar.core.ike.constants.CertEncoding`.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

ISAKMP_VERSION = 0x10  # major 1, minor 0
DOI_IPSEC = 1  # RFC 2407 section 4.2
SIT_IDENTITY_ONLY = 1  # RFC 2407 section 4.2.1
KEY_IKE = 1  # the only phase 1 transform ID (RFC 2407 section 4.4.1)
COOKIE_LEN = 8
IPSEC_SPI_LEN = 4
ISAKMP_DELETE_SPI_LEN = 16  # CKY-I | CKY-R (RFC 2408 section 3.15)
#: Why the endpoint refused a datagram before any state (its ``refused`` counters).
REFUSALS = ("unknown_peer", "malformed", "half_open_limit", "aggressive_mode")


class ExchangeType(IntEnum):
    """RFC 2408 section 3.1 and RFC 2409; aggressive mode is known only to be refused."""

    NONE = 0
    BASE = 1
    MAIN = 2  # "Identity Protection"
    AUTH_ONLY = 3
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    QUICK = 32
    NEW_GROUP = 33


class Flag(IntFlag):
    """ISAKMP header flags (RFC 2408 section 3.1)."""

    ENCRYPTION = 0x01
    COMMIT = 0x02
    AUTH_ONLY = 0x04


class PayloadType(IntEnum):
    """RFC 2408 section 3.1, plus NAT-D / NAT-OA of RFC 3947 (and their draft numbers,
    which peers that negotiated a draft NAT-T version still send)."""

    NONE = 0
    SA = 1
    PROPOSAL = 2
    TRANSFORM = 3
    KE = 4
    ID = 5
    CERT = 6
    CERTREQ = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    NOTIFICATION = 11
    DELETE = 12
    VENDOR_ID = 13
    NAT_D = 20
    NAT_OA = 21
    NAT_D_DRAFT = 130
    NAT_OA_DRAFT = 131


class ProtocolId(IntEnum):
    """Protocol of a proposal, a Notification or a Delete (RFC 2407 section 4.4.1)."""

    ISAKMP = 1
    AH = 2
    ESP = 3
    IPCOMP = 4


class Phase1Attr(IntEnum):
    """Phase 1 SA attribute classes (RFC 2409 Appendix A)."""

    ENCRYPTION = 1
    HASH = 2
    AUTH_METHOD = 3
    GROUP_DESCRIPTION = 4
    GROUP_TYPE = 5
    GROUP_PRIME = 6
    GROUP_GENERATOR_ONE = 7
    GROUP_GENERATOR_TWO = 8
    GROUP_CURVE_A = 9
    GROUP_CURVE_B = 10
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    PRF = 13
    KEY_LENGTH = 14
    FIELD_SIZE = 15
    GROUP_ORDER = 16


class Phase1Encryption(IntEnum):
    """Phase 1 encryption algorithm values (RFC 2409 Appendix A, RFC 3602)."""

    DES_CBC = 1
    IDEA_CBC = 2
    BLOWFISH_CBC = 3
    RC5_CBC = 4
    DES3_CBC = 5
    CAST_CBC = 6
    AES_CBC = 7
    CAMELLIA_CBC = 8


class HashAlgorithm(IntEnum):
    """Phase 1 hash algorithm values (RFC 2409 Appendix A, RFC 4868)."""

    MD5 = 1
    SHA1 = 2
    TIGER = 3
    SHA2_256 = 4
    SHA2_384 = 5
    SHA2_512 = 6


class AuthMethod(IntEnum):
    """Phase 1 authentication methods (RFC 2409 Appendix A, RFC 4754)."""

    PRE_SHARED_KEY = 1
    DSS_SIGNATURE = 2
    RSA_SIGNATURE = 3
    RSA_ENCRYPTION = 4
    RSA_REVISED_ENCRYPTION = 5
    ECDSA_SHA256_P256 = 9
    ECDSA_SHA384_P384 = 10
    ECDSA_SHA512_P521 = 11


class LifeType(IntEnum):
    """Life type of phase 1 and phase 2 SAs (RFC 2409 Appendix A, RFC 2407 4.5)."""

    SECONDS = 1
    KILOBYTES = 2


class Phase2Attr(IntEnum):
    """IPsec DOI SA attributes of quick mode transforms (RFC 2407 section 4.5)."""

    SA_LIFE_TYPE = 1
    SA_LIFE_DURATION = 2
    GROUP_DESCRIPTION = 3
    ENCAPSULATION_MODE = 4
    AUTH_ALGORITHM = 5
    KEY_LENGTH = 6
    KEY_ROUNDS = 7
    COMPRESS_DICTIONARY_SIZE = 8
    COMPRESS_PRIVATE_ALGORITHM = 9
    ECN_TUNNEL = 10
    EXTENDED_SEQUENCE_NUMBER = 11


class EncapsulationMode(IntEnum):
    """RFC 2407 section 4.5, RFC 3947 section 5.1 (and the draft values peers still send)."""

    TUNNEL = 1
    TRANSPORT = 2
    UDP_TUNNEL = 3
    UDP_TRANSPORT = 4
    UDP_TUNNEL_DRAFT = 61443
    UDP_TRANSPORT_DRAFT = 61444


class AuthAlgorithm(IntEnum):
    """Phase 2 Authentication Algorithm attribute values (RFC 2407 4.5, RFC 4868)."""

    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    DES_MAC = 3
    KPDK = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7


class AhTransform(IntEnum):
    """AH transform IDs (RFC 2407 section 4.4.3, RFC 4868)."""

    AH_MD5 = 2
    AH_SHA = 3
    AH_DES = 4
    AH_SHA2_256 = 5
    AH_SHA2_384 = 6
    AH_SHA2_512 = 7


class IdType(IntEnum):
    """IPsec DOI identification types (RFC 2407 section 4.6.2.1)."""

    IPV4_ADDR = 1
    FQDN = 2
    USER_FQDN = 3
    IPV4_ADDR_SUBNET = 4
    IPV6_ADDR = 5
    IPV6_ADDR_SUBNET = 6
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11


class NotifyType(IntEnum):
    """Notify message types: errors (RFC 2408 section 3.14.1), IPsec DOI status
    (RFC 2407 section 4.6.3) and DPD (RFC 3706)."""

    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    SITUATION_NOT_SUPPORTED = 3
    INVALID_COOKIE = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_MINOR_VERSION = 6
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    INVALID_TRANSFORM_ID = 12
    ATTRIBUTES_NOT_SUPPORTED = 13
    NO_PROPOSAL_CHOSEN = 14
    BAD_PROPOSAL_SYNTAX = 15
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    INVALID_CERT_ENCODING = 19
    INVALID_CERTIFICATE = 20
    CERT_TYPE_UNSUPPORTED = 21
    INVALID_CERT_AUTHORITY = 22
    INVALID_HASH_INFORMATION = 23
    AUTHENTICATION_FAILED = 24
    INVALID_SIGNATURE = 25
    ADDRESS_NOTIFICATION = 26
    NOTIFY_SA_LIFETIME = 27
    CERTIFICATE_UNAVAILABLE = 28
    UNSUPPORTED_EXCHANGE_TYPE = 29
    UNEQUAL_PAYLOAD_LENGTHS = 30
    CONNECTED = 16384
    RESPONDER_LIFETIME = 24576
    REPLAY_STATUS = 24577
    INITIAL_CONTACT = 24578
    R_U_THERE = 36136
    R_U_THERE_ACK = 36137

    @property
    def is_error(self) -> bool:
        return int(self) < 8192
