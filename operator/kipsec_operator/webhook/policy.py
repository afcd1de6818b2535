"""What happens to pods created while the webhook cannot answer, and how they are found.

``failurePolicy: Fail`` (the default) fails closed: while the operator's webhook is
unreachable the API server refuses to create pods in the namespaces it covers, so no pod
meant to be protected runs unprotected. ``Ignore`` lets such pods start without the
sidecar; then :func:`pods_missing_sidecar` finds them (the handlers report each as a
Warning event on the pod and in the selecting Tunnels' status) so they are never
silently unprotected. The fix is to recreate them (``kubectl rollout restart`` or
delete the pod): a running pod cannot get a container added.

Failing closed must not lock the cluster: :func:`mutating_webhook` never covers
``kube-system`` nor the operator's own namespace (the operator's pods must start for
the webhook to come back), and honours the opt-out annotation only in the webhook
itself, because an objectSelector cannot see annotations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .injection import INJECT_KEY, Inject, InjectionSettings, decide, is_injected

FailurePolicy = Literal["Fail", "Ignore"]
DEFAULT_FAILURE_POLICY: FailurePolicy = "Fail"
WEBHOOK_NAME = "sidecar-injector.kipsec.io"
WEBHOOK_PATH = "/mutate-pods"
ALWAYS_EXCLUDED_NAMESPACES = ("kube-system", "kube-node-lease", "kube-public")


def parse_failure_policy(value: object) -> FailurePolicy:
    """The failure policy from a setting; anything but Fail/Ignore is a ValueError."""
    if value in ("Fail", "Ignore"):
        return value
    raise ValueError(f"webhook.failurePolicy: {value!r}: use Fail or Ignore")


def mutating_webhook(
    service_name: str,
    service_namespace: str,
    ca_bundle_b64: str,
    failure_policy: FailurePolicy = DEFAULT_FAILURE_POLICY,
    port: int = 443,
    timeout_seconds: int = 10,
) -> dict[str, Any]:
    """One entry of the MutatingWebhookConfiguration's ``webhooks`` list.

    Pod CREATE only (a sidecar cannot be added later); ``reinvocationPolicy: IfNeeded``
    so a webhook running after ours that adds containers still sees the sidecar first;
    ``sideEffects: None`` (the Secret is written by the reconcile, not here), so dry
    runs are safe.
    """
    excluded = sorted({*ALWAYS_EXCLUDED_NAMESPACES, service_namespace})
    return {
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {
            "service": {
                "name": service_name,
                "namespace": service_namespace,
                "path": WEBHOOK_PATH,
                "port": port,
            },
            "caBundle": ca_bundle_b64,
        },
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded},
                {"key": INJECT_KEY, "operator": "NotIn", "values": ["disabled"]},
            ]
        },
        "failurePolicy": failure_policy,
        "matchPolicy": "Equivalent",
        "reinvocationPolicy": "IfNeeded",
        "sideEffects": "None",
        "timeoutSeconds": timeout_seconds,
    }


@dataclass(frozen=True)
class MissingSidecar:
    """A pod that should carry the sidecar and does not."""

    namespace: str
    name: str
    reason: str
    tunnels: tuple[str, ...]

    @property
    def message(self) -> str:
        return (
            f"pod {self.namespace}/{self.name} runs without the kipsec sidecar ({self.reason}); "
            "its traffic is not encrypted: recreate the pod so the webhook can inject it"
        )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def pods_missing_sidecar(
    pods: Sequence[Mapping[str, Any]],
    namespaces: Mapping[str, Mapping[str, Any]],
    tunnels: Sequence[Mapping[str, Any]],
    settings: InjectionSettings,
) -> list[MissingSidecar]:
    """Pods the webhook would inject that have no sidecar, sorted by namespace/name.

    ``namespaces`` maps a name to its Namespace object. Terminating and finished pods
    are left out (nothing left to protect), so are pods of excluded namespaces
    (:data:`ALWAYS_EXCLUDED_NAMESPACES`) and opted-out pods (``decide`` skips them).
    """
    missing = []
    for pod in pods:
        meta = _mapping(pod.get("metadata"))
        namespace = str(meta.get("namespace") or "")
        if namespace in ALWAYS_EXCLUDED_NAMESPACES or meta.get("deletionTimestamp"):
            continue
        if _mapping(pod.get("status")).get("phase") in ("Succeeded", "Failed"):
            continue
        if is_injected(pod, settings):
            continue
        decision = decide(pod, namespaces.get(namespace), tunnels, settings)
        if isinstance(decision, Inject):
            missing.append(
                MissingSidecar(
                    namespace, str(meta.get("name") or ""), decision.reason, decision.tunnels
                )
            )
    return sorted(missing, key=lambda m: (m.namespace, m.name))
