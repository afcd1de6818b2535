"""When to renew a leaf, and when to rotate the CA and drop the old one from the bundle.

Leaves: renewed at ``notAfter - renewBefore`` (cert-manager's semantics); when
renewBefore is not shorter than the lifetime, at two thirds of it instead, so a
misconfiguration renews early rather than never. The sidecar renews on its own clock
from the ``renewalTime`` the operator returns with each certificate; the new key and
certificate replace the old ones for new IKE SAs only, so traffic never drops.

CA (three steps, each a pure decision on :class:`~.ca.CaState` and ``now``):

1. *prepare*: ``policy.renew_before`` before the signing CA expires, a new CA is
   generated and added to the trust bundle, but does not sign yet;
2. *promote*: ``policy.propagation`` later (time for every sidecar to receive the new
   bundle), the new CA signs; the old one is retired and stays in the bundle;
3. *drop*: a retired CA leaves the bundle once every leaf it signed has expired
   (retirement + ``policy.max_leaf_duration``), or once it has expired itself.

During the overlap a leaf from either CA validates against the bundle; after it only the
new CA's leaves do. If the signing CA has already expired (the operator was down for
the whole window), the new CA is promoted at once: an outage was unavoidable anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .ca import CLOCK_SKEW, CaState, CertificateAuthority, fingerprint


def renewal_time(not_before: datetime, not_after: datetime, renew_before: timedelta) -> datetime:
    """When a certificate valid from ``not_before`` to ``not_after`` must be renewed."""
    lifetime = not_after - not_before
    if renew_before <= timedelta(0) or renew_before >= lifetime:
        return not_before + lifetime * 2 / 3
    return not_after - renew_before


def needs_renewal(
    not_before: datetime, not_after: datetime, renew_before: timedelta, now: datetime
) -> bool:
    """True from the renewal time on (and for an expired certificate)."""
    return now >= renewal_time(not_before, not_after, renew_before)


@dataclass(frozen=True)
class CaRotationPolicy:
    """How long CAs live and how the overlap is timed; see the module docstring."""

    ca_duration: timedelta = timedelta(days=365)
    renew_before: timedelta = timedelta(days=60)
    propagation: timedelta = timedelta(hours=1)
    max_leaf_duration: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        needed = self.propagation + self.max_leaf_duration
        if self.renew_before < needed:
            raise ValueError(
                f"CA renewBefore {self.renew_before} must cover propagation "
                f"{self.propagation} plus the longest leaf duration {self.max_leaf_duration}, "
                "or leaves issued near the end would be cut short"
            )
        if self.renew_before >= self.ca_duration:
            raise ValueError(
                f"CA renewBefore {self.renew_before} must be shorter than its duration"
            )


@dataclass(frozen=True)
class PrepareNextCa:
    """Generate the next CA and add it to the bundle (it does not sign yet)."""

    reason: str


@dataclass(frozen=True)
class PromotePendingCa:
    """The pending CA signs from now on; the signing CA is retired."""

    reason: str


@dataclass(frozen=True)
class DropRetiredCas:
    """Remove these retired CAs (SHA-256 fingerprints) from the bundle."""

    fingerprints: frozenset[str]
    reason: str


@dataclass(frozen=True)
class NoCaChange:
    """Nothing to do until ``next_check``."""

    next_check: datetime


CaStep = PrepareNextCa | PromotePendingCa | DropRetiredCas | NoCaChange


def _drop_time(retired_at: datetime, ca_not_after: datetime, policy: CaRotationPolicy) -> datetime:
    return min(retired_at + policy.max_leaf_duration + CLOCK_SKEW, ca_not_after)


def next_ca_step(state: CaState, now: datetime, policy: CaRotationPolicy) -> CaStep:
    """The one next thing to do to the CA state at ``now``."""
    droppable = frozenset(
        fingerprint(r.cert)
        for r in state.retired
        if now >= _drop_time(r.retired_at, r.cert.not_valid_after_utc, policy)
    )
    if droppable:
        return DropRetiredCas(droppable, "every leaf signed by it has expired")
    signing_expired = now >= state.signing.not_after
    if state.pending is not None and state.pending_since is not None:
        promote_at = state.pending_since + policy.propagation
        if now >= promote_at or signing_expired:
            return PromotePendingCa("the new CA has been in the trust bundle long enough")
    elif now >= state.signing.not_after - policy.renew_before:
        return PrepareNextCa(f"the signing CA expires at {state.signing.not_after.isoformat()}")
    checks = [state.signing.not_after - policy.renew_before, state.signing.not_after]
    if state.pending_since is not None:
        checks.append(state.pending_since + policy.propagation)
    checks += [_drop_time(r.retired_at, r.cert.not_valid_after_utc, policy) for r in state.retired]
    return NoCaChange(min(t for t in checks if t > now) if any(t > now for t in checks) else now)


def rotate_ca(
    state: CaState,
    now: datetime,
    policy: CaRotationPolicy,
    generate: Callable[[], CertificateAuthority],
) -> tuple[CaState, list[CaStep]]:
    """Apply every step due at ``now``; returns the new state and the steps taken.

    ``generate`` makes the next CA (``generate_ca`` with the policy's duration); it is
    called at most once. The last step returned is always a NoCaChange with the time
    of the next check, for the handler to schedule.
    """
    steps: list[CaStep] = []
    for _ in range(5):  # at most drop, prepare, promote, drop: a bound, not a retry loop
        step = next_ca_step(state, now, policy)
        steps.append(step)
        if isinstance(step, NoCaChange):
            break
        if isinstance(step, DropRetiredCas):
            state = state.without_retired(step.fingerprints)
        elif isinstance(step, PrepareNextCa):
            state = state.with_pending(generate(), now)
        else:
            state = state.promoted(now)
    return state, steps
