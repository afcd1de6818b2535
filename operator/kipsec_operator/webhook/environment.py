"""The injected sidecar's settings from the operator's environment (set by the chart).

The Helm chart configures what the webhook injects through environment variables of
the operator's Deployment (`charts/kipsec/templates/deployment.yaml`); this module is
the one place that reads them. An unset variable keeps the :class:`InjectionSettings`
default; a set one must be valid, or :func:`injection_settings` raises
:class:`SettingsError` naming the variable, so a typo in values stops the operator at
start instead of injecting a broken sidecar into every pod. A test of the chart renders
the Deployment and feeds its environment to this function, so the two cannot drift.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, get_args, get_type_hints
from urllib.parse import urlsplit

from .injection import InjectionSettings

SIDECAR_IMAGE = "KIPSEC_SIDECAR_IMAGE"
SIDECAR_IMAGE_PULL_POLICY = "KIPSEC_SIDECAR_IMAGE_PULL_POLICY"
SIDECAR_HEALTH_PORT = "KIPSEC_SIDECAR_HEALTH_PORT"
SIDECAR_PROBE_PORT = "KIPSEC_SIDECAR_PROBE_PORT"
SIDECAR_RESOURCES = "KIPSEC_SIDECAR_RESOURCES"
"""JSON: `{"requests": {"cpu": "50m"}, "limits": {"memory": "256Mi"}}`."""
SIDECAR_RUN_AS_USER = "KIPSEC_SIDECAR_RUN_AS_USER"
"""A uid, or empty for root with only the capabilities it needs (the default)."""
TUN_DEVICE = "KIPSEC_TUN_DEVICE"
TUN_RESOURCE = "KIPSEC_TUN_RESOURCE"
OPERATOR_URL = "KIPSEC_OPERATOR_URL"
CLUSTER_NETWORKS = "KIPSEC_CLUSTER_NETWORKS"
"""Comma-separated CIDRs of the cluster's pod and Service ranges (chart value
`clusterNetworks`): an ExternalPeer's subnets must not overlap them."""


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable
        self.message = message


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _choice(field_name: str) -> Callable[[str], str]:
    """A parser accepting the values of the field's Literal type (one list of them)."""
    allowed: tuple[str, ...] = get_args(get_type_hints(InjectionSettings)[field_name])

    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return parse


def _port(value: str) -> int:
    if not value.strip().isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"{value!r} is not a port number (1-65535)")
    return int(value)


def _uid(value: str) -> int | None:
    if not value.strip():
        return None
    if not value.strip().isdigit():
        raise ValueError(f"{value!r} is not a numeric uid")
    return int(value)


def _url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL with a host")
    return value.strip().rstrip("/")


def _resources(value: str) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or set(data) - {"requests", "limits"}:
        raise ValueError('must be a JSON object with only "requests" and "limits"')
    parsed: dict[str, dict[str, str]] = {}
    for kind, quantities in data.items():
        if not isinstance(quantities, dict) or not all(
            isinstance(q, str | int | float) and not isinstance(q, bool)
            for q in quantities.values()
        ):
            raise ValueError(f"{kind} must map resource names to quantities")
        parsed[kind] = {str(name): str(q) for name, q in quantities.items()}
    return parsed


PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    SIDECAR_IMAGE: ("image", _text),
    SIDECAR_IMAGE_PULL_POLICY: ("image_pull_policy", _choice("image_pull_policy")),
    SIDECAR_HEALTH_PORT: ("health_port", _port),
    SIDECAR_PROBE_PORT: ("probe_port", _port),
    SIDECAR_RESOURCES: ("resources", _resources),
    SIDECAR_RUN_AS_USER: ("run_as_user", _uid),
    TUN_DEVICE: ("tun_device", _choice("tun_device")),
    TUN_RESOURCE: ("tun_resource", _text),
    OPERATOR_URL: ("operator_url", _url),
}
"""Variable → (InjectionSettings field, parser of its text)."""


def injection_settings(
    environ: Mapping[str, str], base: InjectionSettings | None = None
) -> InjectionSettings:
    """`base` (default: the defaults) with every variable of :data:`PARSERS` that
    `environ` sets; raises :class:`SettingsError` for the first bad one."""
    changes: dict[str, Any] = {}
    for variable, (field_name, parse) in PARSERS.items():
        if variable not in environ:
            continue
        try:
            changes[field_name] = parse(environ[variable])
        except ValueError as exc:
            raise SettingsError(variable, str(exc)) from None
    return replace(base or InjectionSettings(), **changes)


def cluster_networks(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The CIDRs of :data:`CLUSTER_NETWORKS` (none when unset or empty), normalized;
    raises :class:`SettingsError` naming the variable for one that is not a CIDR."""
    found = []
    for text in environ.get(CLUSTER_NETWORKS, "").split(","):
        if not text.strip():
            continue
        try:
            found.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError:
            raise SettingsError(CLUSTER_NETWORKS, f"{text.strip()!r} is not a CIDR") from None
    return tuple(found)


__all__ = [
    "CLUSTER_NETWORKS",
    "OPERATOR_URL",
    "PARSERS",
    "SIDECAR_HEALTH_PORT",
    "SIDECAR_IMAGE",
    "SIDECAR_IMAGE_PULL_POLICY",
    "SIDECAR_PROBE_PORT",
    "SIDECAR_RESOURCES",
    "SIDECAR_RUN_AS_USER",
    "TUN_DEVICE",
    "TUN_RESOURCE",
    "SettingsError",
    "cluster_networks",
    "injection_settings",
]
