"""The operator's CA in its Secret: load or create it, rotate it, say what to trust.

The CA Secret (type `kipsec.io/ca`, in the operator's namespace) is the only state
the operator keeps; two replicas read the same Secret, and only the leader (kopf
peering) runs the rotation timer that writes it; the other replica's CSR endpoint reads
it afresh for every certificate (:meth:`CaStore.current`). :meth:`CaStore.rotate` applies
:func:`~.certificates.rotation.rotate_ca` and writes the Secret only when a step was
taken; the returned time is when to look again.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from .certificates.ca import (
    CaSecretError,
    CaState,
    CertificateAuthority,
    Rng,
    ca_secret,
    from_secret_data,
    generate_ca,
    to_secret_data,
)
from .certificates.rotation import CaRotationPolicy, NoCaChange, rotate_ca
from .certificates.terms import issuer_secret_field
from .kube import ApiError, Kube, object_path


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CaStore:
    """The operator CA as the Secret `namespace/name` holds it."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str = "kipsec-ca",
        policy: CaRotationPolicy | None = None,
        clock: Callable[[], datetime] = _utcnow,
        rng: Rng = os.urandom,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.policy = policy or CaRotationPolicy()
        self.clock = clock
        self.rng = rng
        self.state: CaState | None = None
        self._lock = asyncio.Lock()

    @property
    def _path(self) -> str:
        return object_path("v1", "secrets", self.namespace, self.name)

    async def load(self) -> CaState:
        """The CA state, creating the CA Secret on first start."""
        async with self._lock:
            if self.state is not None:
                return self.state
            found = await self.kube.get(self._path)
            if found is not None:
                self.state = from_secret_data(found.get("data") or {})
                return self.state
            state = CaState(signing=self._generate())
            try:
                await self.kube.create(
                    object_path("v1", "secrets", self.namespace),
                    ca_secret(self.name, self.namespace, state),
                )
            except ApiError as exc:  # the other replica created it first
                if exc.status != 409:
                    raise
                again = await self.kube.get(self._path)
                if again is None:
                    raise
                state = from_secret_data(again.get("data") or {})
            self.state = state
            return state

    def _generate(self) -> CertificateAuthority:
        return generate_ca(self.clock(), self.policy.ca_duration, self.rng)

    async def rotate(self) -> datetime:
        """Take every rotation step due now; returns when the next one is due."""
        state = await self.load()
        async with self._lock:
            new, steps = rotate_ca(state, self.clock(), self.policy, self._generate)
            if len(steps) > 1:
                await self.kube.merge_patch(self._path, {"data": to_secret_data(new)})
                self.state = new
            last = steps[-1]
            assert isinstance(last, NoCaChange)
            return last.next_check

    async def signing(self) -> tuple[CertificateAuthority, bytes]:
        state = await self.load()
        return state.signing, state.bundle_pem()

    async def current(self) -> tuple[CertificateAuthority, bytes]:
        """What :meth:`signing` returns, but as the Secret holds it now: the CSR endpoint
        of a standby replica (whose rotation timer is paused) must sign with the CA the
        leader rotated to, not the one this replica loaded at start. Leaves
        :attr:`state` alone (the leader's rotation owns it); creates the Secret when
        there is none."""
        found = await self.kube.get(self._path)
        state = await self.load() if found is None else from_secret_data(found.get("data") or {})
        return state.signing, state.bundle_pem()


def user_ca(
    secret: Mapping[str, object] | None, namespace: str, name: str
) -> tuple[CertificateAuthority, bytes]:
    """The CA of the `kubernetes.io/tls` Secret `namespace/name` (`tls.crt`, `tls.key`,
    as `secret` holds it, None when there is none) and its bundle.

    Raises LookupError naming the field and the Secret when it is missing or unusable
    (the message becomes the TunnelCertificate's `IssuerUnavailable` condition and the
    CSR endpoint's refusal; it never holds the Secret's data).
    """
    where = issuer_secret_field(namespace, name)
    if secret is None:
        raise LookupError(f"{where} not found")
    data = secret.get("data")
    if not isinstance(data, Mapping) or "tls.crt" not in data:
        raise LookupError(f"{where} has no tls.crt")
    try:
        state = from_secret_data({**data, "ca.crt": data["tls.crt"]})
    except CaSecretError as exc:
        raise LookupError(f"{where}: {exc}") from exc
    return state.signing, base64.b64decode(str(data["tls.crt"]))


__all__ = ["CaStore", "user_ca"]
