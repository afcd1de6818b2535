"""Which pods get the kipsec sidecar, and the JSON patch that adds it.

A pod is injected when a Tunnel selects it or its Namespace carries the label
``kipsec.io/inject=enabled``, unless the pod says ``kipsec.io/inject: "false"`` (an
annotation), its Namespace is labelled ``kipsec.io/inject=disabled``, or it runs in
the host network (its address is the node's: a pod sidecar cannot protect it). A pod
that already has the sidecar is left alone, so the webhook is idempotent under
``reinvocationPolicy: IfNeeded`` and on replays.

The sidecar is a *native sidecar* (an init container with ``restartPolicy: Always``,
Kubernetes >= 1.29), placed first: the kubelet starts it, waits for its startupProbe,
and only then starts the other init containers and the application, so the datapath is
in place before the first application packet; and it does not keep a Job's pod alive
after the main containers finish.

What the container gets, and why (docs/injection.md has the long form):

* capabilities: drop ALL, add NET_ADMIN (XFRM, routes, the TUN device) and
  NET_BIND_SERVICE (IKE's UDP ports 500 and 4500 are below 1024: container runtimes that
  leave ``net.ipv4.ip_unprivileged_port_start`` at 1024, as runc under podman and
  containerd 1.x do, refuse the bind without it), plus NET_RAW only when a selecting
  Tunnel sends raw ESP/AH (``protocol: ah`` or ``encapsulation: raw``);
* user 0 with those capabilities only, ``allowPrivilegeEscalation: false``, a read-only
  root filesystem and the RuntimeDefault seccomp profile: without file capabilities on
  the interpreter a non-root process cannot use NET_ADMIN, see ``InjectionSettings.run_as_user``;
* ``/dev/net/tun`` for the userspace datapath: a hostPath CharDevice volume (runc and
  crun allow c 10:200 by default), or a device plugin resource, or nothing;
* the per-pod configuration Secret (named at admission: see :func:`config_secret_name`)
  at ``/etc/kipsec``, an in-memory emptyDir for the pod's key and certificate, and a
  projected ServiceAccount token with audience ``kipsec`` for the CSR exchange;
* probes on the sidecar's probes-only port (``probe_port``, 9586: a listener of its own,
  so clients of ``/metrics`` and ``/status`` on the health port cannot starve them, and a
  NetworkPolicy may close it to everyone but the kubelet): startup and liveness
  ``/healthz``, readiness ``/readyz``; resource requests and limits from the settings.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..reconcile.render import CONFIG_KEY, IDENTITY_DIR, MOUNT_PATH, SECRET_PREFIX
from .selection import selecting_tunnels

INJECT_KEY = "kipsec.io/inject"
"""Namespace label ``enabled`` turns injection on for every pod; pod annotation
``"false"`` turns it off for that pod."""
INJECTED_ANNOTATION = "kipsec.io/injected"
CONFIG_SECRET_ANNOTATION = "kipsec.io/config-secret"  # noqa: S105 (a name, not a secret)
"""Records the configuration Secret's name chosen at admission (the pod has neither its
final name nor its UID when a mutating webhook sees it)."""
TOKEN_DIR = "/var/run/secrets/kipsec.io"  # noqa: S105 (a name, not a secret)
RUN_DIR = "/run/kipsec"
"""Writable runtime directory (the control socket) on a read-only root filesystem."""
TOKEN_FILE = "token"  # noqa: S105 (a name, not a secret)

JsonPatchOp = dict[str, Any]


def _default_resources() -> dict[str, dict[str, str]]:
    return {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


@dataclass(frozen=True)
class InjectionSettings:
    """What the operator's deployment configures about the injected sidecar."""

    image: str = "ghcr.io/kipsec/kipsec-sidecar:0.1.0"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    container_name: str = "kipsec"
    health_port: int = 9585
    """``/metrics`` and ``/status`` (Prometheus, the operator's polling), and the probes."""
    probe_port: int = 9586
    """Only ``/healthz`` and ``/readyz``, for the kubelet's probes."""
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=_default_resources)
    operator_url: str = "https://kipsec-operator.kipsec-system.svc:8443"
    """Base URL of the operator's identity endpoint (``/v1/identity``, ``/v1/csr``)."""
    token_audience: str = "kipsec"  # noqa: S105 (a name, not a secret)
    token_expiration_seconds: int = 3600
    tun_device: Literal["hostPath", "devicePlugin", "none"] = "hostPath"
    tun_resource: str = "kipsec.io/tun"
    """The extended resource a device plugin offers for ``/dev/net/tun`` (devicePlugin)."""
    run_as_user: int | None = None
    """None: uid 0 with only NET_ADMIN, NET_BIND_SERVICE (and NET_RAW). A uid: run as it,
    for images whose interpreter carries file capabilities (then allowPrivilegeEscalation
    must be true)."""
    startup_failure_threshold: int = 300
    """Seconds (probes 1 s apart) the sidecar may take to start. It includes waiting for
    ``config.yaml``: a pod gets an empty bootstrap Secret until it has an IP, and the
    kubelet refreshes a mounted Secret only on its periodic pod sync (about a minute,
    plus its cache's TTL), so 60 s would restart sidecars that are merely waiting."""
    inject_label_value: str = "enabled"
    config_delivery: bool = True
    """The sidecar also polls the operator's ``/v1/config`` (seconds instead of the
    kubelet's minute) and keeps the answers in ``/run/kipsec/config``; the mounted
    Secret stays the first source and the fallback."""


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class Inject:
    """The pod gets the sidecar."""

    reason: str
    net_raw: bool
    tunnels: tuple[str, ...]
    """``namespace/name`` of the selecting Tunnels (empty when only the namespace label)."""


@dataclass(frozen=True)
class Skip:
    """The pod does not get the sidecar (``reason`` for logs and events)."""

    reason: str


@dataclass(frozen=True)
class Conflict:
    """The pod should get the sidecar but cannot (a name is taken); refuse the pod."""

    reason: str


Decision = Inject | Skip | Conflict


def is_injected(pod: Mapping[str, Any], settings: InjectionSettings) -> bool:
    """Does the pod already carry the sidecar (by container name, in either list)?"""
    spec = _mapping(pod.get("spec"))
    for key in ("initContainers", "containers"):
        for container in _list(spec.get(key)):
            if _mapping(container).get("name") == settings.container_name:
                return True
    return False


def _uses_raw(tunnel: Mapping[str, Any]) -> bool:
    spec = _mapping(tunnel.get("spec"))
    protocol = spec.get("protocol", "esp")
    encapsulation = spec.get("encapsulation") or ("raw" if protocol == "ah" else "udp")
    return protocol == "ah" or encapsulation == "raw"


def _volume_names(settings: InjectionSettings) -> set[str]:
    names = {"kipsec-config", "kipsec-identity", "kipsec-token", "kipsec-run"}
    if settings.tun_device == "hostPath":
        names.add("kipsec-tun")
    return names


def decide(
    pod: Mapping[str, Any],
    namespace: Mapping[str, Any] | None,
    tunnels: Sequence[Mapping[str, Any]],
    settings: InjectionSettings,
) -> Decision:
    """Whether ``pod`` (in ``namespace``) gets the sidecar; never raises."""
    meta = _mapping(pod.get("metadata"))
    spec = _mapping(pod.get("spec"))
    if _mapping(meta.get("annotations")).get(INJECT_KEY) == "false":
        return Skip(f'opted out by annotation {INJECT_KEY}: "false"')
    if is_injected(pod, settings):
        return Skip("already injected")
    if spec.get("hostNetwork") is True:
        return Skip("hostNetwork pod: its address is the node's")
    if _mapping(spec.get("os")).get("name") == "windows":
        return Skip("Windows pod: the sidecar runs on Linux only")
    ns_labels = _mapping(_mapping(_mapping(namespace).get("metadata")).get("labels"))
    if ns_labels.get(INJECT_KEY) == "disabled":
        return Skip(f"namespace labelled {INJECT_KEY}=disabled")
    labelled = ns_labels.get(INJECT_KEY) == settings.inject_label_value
    selecting = selecting_tunnels(tunnels, pod, namespace)
    if not selecting and not labelled:
        return Skip("no Tunnel selects the pod and its namespace is not labelled for injection")
    taken = {str(_mapping(v).get("name")) for v in _list(spec.get("volumes"))}
    clash = sorted(taken & _volume_names(settings))
    if clash:
        return Conflict(f"spec.volumes: volume name {clash[0]!r} is reserved for the sidecar")
    names = tuple(
        sorted(
            f"{_mapping(t.get('metadata')).get('namespace')}/{_mapping(t.get('metadata')).get('name')}"
            for t in selecting
        )
    )
    reason = (
        f"selected by Tunnel {', '.join(names)}"
        if names
        else f"namespace labelled {INJECT_KEY}={settings.inject_label_value}"
    )
    return Inject(reason, any(_uses_raw(t) for t in selecting), names)


def config_secret_name(config_id: str) -> str:
    """The configuration Secret's name for an admission id (16 hex digits of a digest)."""
    return SECRET_PREFIX + hashlib.sha256(config_id.encode()).hexdigest()[:16]


def _env(settings: InjectionSettings) -> list[dict[str, Any]]:
    def field_ref(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    return [
        field_ref("KIPSEC_POD_NAME", "metadata.name"),
        field_ref("KIPSEC_POD_NAMESPACE", "metadata.namespace"),
        field_ref("KIPSEC_POD_UID", "metadata.uid"),
        field_ref("KIPSEC_POD_IPS", "status.podIPs"),
        field_ref("KIPSEC_NODE_NAME", "spec.nodeName"),
        field_ref("KIPSEC_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        {"name": "KIPSEC_OPERATOR_URL", "value": settings.operator_url},
        {"name": "KIPSEC_TOKEN_FILE", "value": f"{TOKEN_DIR}/{TOKEN_FILE}"},
        {"name": "KIPSEC_IDENTITY_DIR", "value": IDENTITY_DIR},
        # The kubelet probes (and the operator polls) the pod IP: listen on every address,
        # also before config.yaml exists (the document's default is loopback).
        {"name": "KIPSEC_HEALTH_LISTEN", "value": f"0.0.0.0:{settings.health_port}"},
        {"name": "KIPSEC_PROBE_LISTEN", "value": f"0.0.0.0:{settings.probe_port}"},
        *(
            [{"name": "KIPSEC_OPERATOR_CONFIG_DIR", "value": f"{RUN_DIR}/config"}]
            if settings.config_delivery
            else []
        ),
    ]


def _probe(path: str, settings: InjectionSettings, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": settings.probe_port}, **timing}


def _security_context(settings: InjectionSettings, net_raw: bool) -> dict[str, Any]:
    add = ["NET_ADMIN", "NET_BIND_SERVICE", *(["NET_RAW"] if net_raw else [])]
    context: dict[str, Any] = {
        "capabilities": {"drop": ["ALL"], "add": add},
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if settings.run_as_user is None:
        context.update(runAsUser=0, runAsNonRoot=False, allowPrivilegeEscalation=False)
    else:
        context.update(
            runAsUser=settings.run_as_user, runAsNonRoot=True, allowPrivilegeEscalation=True
        )
    return context


def sidecar_container(settings: InjectionSettings, net_raw: bool) -> dict[str, Any]:
    """The native sidecar container (an init container with ``restartPolicy: Always``)."""
    mounts = [
        {"name": "kipsec-config", "mountPath": MOUNT_PATH, "readOnly": True},
        {"name": "kipsec-identity", "mountPath": IDENTITY_DIR},
        {"name": "kipsec-token", "mountPath": TOKEN_DIR, "readOnly": True},
        {"name": "kipsec-run", "mountPath": RUN_DIR},
    ]
    resources = {k: dict(v) for k, v in settings.resources.items()}
    if settings.tun_device == "hostPath":
        mounts.append({"name": "kipsec-tun", "mountPath": "/dev/net/tun"})
    elif settings.tun_device == "devicePlugin":
        for kind in ("requests", "limits"):
            resources.setdefault(kind, {})[settings.tun_resource] = "1"
    return {
        "name": settings.container_name,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "restartPolicy": "Always",
        "args": ["run", "--config", f"{MOUNT_PATH}/{CONFIG_KEY}"],
        "env": _env(settings),
        "ports": [
            {"name": "kipsec-health", "containerPort": settings.health_port, "protocol": "TCP"},
            {"name": "kipsec-probes", "containerPort": settings.probe_port, "protocol": "TCP"},
        ],
        "startupProbe": _probe(
            "/healthz",
            settings,
            periodSeconds=1,
            failureThreshold=settings.startup_failure_threshold,
        ),
        "livenessProbe": _probe("/healthz", settings, periodSeconds=10, failureThreshold=3),
        "readinessProbe": _probe("/readyz", settings, periodSeconds=5, failureThreshold=3),
        "resources": resources,
        "securityContext": _security_context(settings, net_raw),
        "volumeMounts": mounts,
    }


def sidecar_volumes(settings: InjectionSettings, secret_name: str) -> list[dict[str, Any]]:
    """The volumes the sidecar mounts; the Secret is not optional, so the kubelet waits
    for the operator to write it before starting the sidecar (and the application)."""
    volumes: list[dict[str, Any]] = [
        {"name": "kipsec-config", "secret": {"secretName": secret_name, "defaultMode": 0o400}},
        {"name": "kipsec-identity", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        # The control socket and the configuration from /v1/config (two generations of up
        # to a Secret's 1 MiB during a swap).
        {"name": "kipsec-run", "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}},
        {
            "name": "kipsec-token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": settings.token_audience,
                            "expirationSeconds": settings.token_expiration_seconds,
                            "path": TOKEN_FILE,
                        }
                    }
                ]
            },
        },
    ]
    if settings.tun_device == "hostPath":
        volumes.append(
            {"name": "kipsec-tun", "hostPath": {"path": "/dev/net/tun", "type": "CharDevice"}}
        )
    return volumes


def _escape(key: str) -> str:
    """RFC 6901: a JSON pointer token with ``~`` and ``/`` escaped."""
    return key.replace("~", "~0").replace("/", "~1")


def patch_for(
    pod: Mapping[str, Any], decision: Inject, settings: InjectionSettings, config_id: str
) -> list[JsonPatchOp]:
    """The JSON patch (RFC 6902) that injects the sidecar into ``pod``."""
    meta = _mapping(pod.get("metadata"))
    spec = _mapping(pod.get("spec"))
    secret_name = config_secret_name(config_id)
    annotations = {INJECTED_ANNOTATION: "true", CONFIG_SECRET_ANNOTATION: secret_name}
    ops: list[JsonPatchOp] = []
    if isinstance(meta.get("annotations"), Mapping):
        ops += [
            {"op": "add", "path": f"/metadata/annotations/{_escape(k)}", "value": v}
            for k, v in annotations.items()
        ]
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    container = sidecar_container(settings, decision.net_raw)
    if isinstance(spec.get("initContainers"), list):
        ops.append({"op": "add", "path": "/spec/initContainers/0", "value": container})
    else:
        ops.append({"op": "add", "path": "/spec/initContainers", "value": [container]})
    volumes = sidecar_volumes(settings, secret_name)
    if isinstance(spec.get("volumes"), list):
        ops += [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes]
    else:
        ops.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    return ops


def mutate(
    pod: Mapping[str, Any],
    namespace: Mapping[str, Any] | None,
    tunnels: Sequence[Mapping[str, Any]],
    settings: InjectionSettings,
    *,
    config_id: str | None = None,
) -> list[JsonPatchOp]:
    """The JSON patch for a pod being created: empty when it is not to be injected.

    ``config_id`` makes the configuration Secret's name unique per pod; the admission
    layer passes the AdmissionRequest uid (unique per request). Raises
    :class:`InjectionConflict` when the pod must be injected but cannot be.
    """
    decision = decide(pod, namespace, tunnels, settings)
    if isinstance(decision, Conflict):
        raise InjectionConflict(decision.reason)
    if isinstance(decision, Skip):
        return []
    return patch_for(pod, decision, settings, config_id or secrets.token_hex(16))


class InjectionConflict(Exception):
    """The pod should get the sidecar but its spec makes that impossible."""
