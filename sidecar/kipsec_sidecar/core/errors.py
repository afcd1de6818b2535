"""The project's typed errors for the protocol cores.

Two kinds, as in h11: :class:`LocalProtocolError` means the local side misused the API
(a bug or a bad configuration here); :class:`RemoteProtocolError` means bytes from the
peer broke the protocol. A parser fed hostile input raises only :class:`ParseError` (a
``RemoteProtocolError``), never ``IndexError``, ``struct.error`` or ``ValueError``: the
fuzz tests hold every parser to that.
"""

from __future__ import annotations


class KipsecError(Exception):
    """Base of every error the cores raise on purpose."""


class LocalProtocolError(KipsecError):
    """The caller asked for something the protocol or the configuration does not allow."""


class RemoteProtocolError(KipsecError):
    """The peer sent something the protocol does not allow."""


class ParseError(RemoteProtocolError):
    """Malformed bytes. ``field`` names what was being parsed when it went wrong."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class IntegrityError(RemoteProtocolError):
    """An ICV, MAC or AEAD tag did not verify: the packet is dropped and counted."""


class ReplayError(RemoteProtocolError):
    """A sequence number was already seen or lies left of the anti-replay window."""


class SequenceExhausted(LocalProtocolError):
    """The outbound sequence counter would wrap: the SA must be rekeyed, never reused."""


class RefusedAlgorithm(LocalProtocolError):
    """An algorithm kipsec refuses on purpose (DES, 3DES, MD5, ESP without integrity).

    The message always names the safe alternative.
    """

    def __init__(self, algorithm: str, alternative: str) -> None:
        super().__init__(f"{algorithm} is refused: it is not safe; use {alternative} instead")
        self.algorithm = algorithm
        self.alternative = alternative


class UnsupportedAlgorithm(LocalProtocolError):
    """An algorithm identifier kipsec does not implement (not refused, just unknown)."""


class AuthenticationFailed(RemoteProtocolError):
    """The peer's AUTH payload, signature or certificate did not check out."""


class CertificateError(AuthenticationFailed):
    """A certificate chain or identity failed validation; ``reason`` says which check.

    ``reason`` is one of ``expired``, ``not-yet-valid``, ``untrusted``, ``bad-signature``,
    ``identity-mismatch``, ``not-a-ca``, ``malformed``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"certificate {reason}: {detail}")
        self.reason = reason
