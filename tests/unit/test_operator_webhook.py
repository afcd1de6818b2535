"""Sidecar injection: AdmissionReview in, JSON patch out, and a patched pod the API accepts.

Patches are applied with the `jsonpatch` package (an independent RFC 6902
implementation) and the result is checked with `kubernetes-validate` against the
strict Pod schema of every Kubernetes version it ships from 1.29 (native sidecars) on.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping
from functools import partial
from typing import Any, cast

import jsonpatch
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from kubernetes_validate import utils as kv_utils

from kipsec_operator.webhook.admission import review
from kipsec_operator.webhook.injection import (
    CONFIG_SECRET_ANNOTATION,
    INJECTED_ANNOTATION,
    InjectionSettings,
    mutate,
    sidecar_container,
)
from kipsec_operator.webhook.policy import (
    mutating_webhook,
    parse_failure_policy,
    pods_missing_sidecar,
)
from support.operator_objects import admission_review as pod_admission_review
from support.operator_objects import namespace

SETTINGS = InjectionSettings()
SUPPORTED_VERSIONS = sorted(
    {
        ".".join(v.split(".")[:2])
        for v in kv_utils.all_versions()
        if tuple(int(p) for p in v.split(".")[:2]) >= (1, 29)
    },
    key=lambda v: tuple(int(p) for p in v.split(".")),
)


def apply(document: Mapping[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply a JSON patch with the independent `jsonpatch` implementation."""
    result: dict[str, Any] = jsonpatch.apply_patch(dict(document), cast(Any, ops))
    return result


NAMESPACES = {
    "shop": namespace("shop"),
    "lab": namespace("lab", **{"kipsec.io/inject": "enabled"}),
    "plain": namespace("plain"),
    "partner": namespace("partner", allow_tunnels_from="shop"),
    "legacy": namespace("legacy", allow_tunnels_from="*", **{"kipsec.io/inject": "disabled"}),
}


def tunnel(name: str = "cart-mesh", app: str = "cart", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"from": {"podSelector": {"matchLabels": {"app": app}}}}}
    body.update(spec)
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "Tunnel",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": body,
    }


TUNNELS = [tunnel()]


def pod(app: str = "cart", **extra_spec: Any) -> dict[str, Any]:
    """A pod as a ReplicaSet creates it: generateName, no name, no namespace."""
    spec: dict[str, Any] = {
        "containers": [
            {"name": "app", "image": "registry.example/cart:1.0", "ports": [{"containerPort": 80}]}
        ]
    }
    spec.update(extra_spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": f"{app}-7d9f-", "labels": {"app": app}},
        "spec": spec,
    }


admission_review = partial(pod_admission_review, ns="shop")
"""An AdmissionReview for a pod in namespace ``shop`` (``ns=`` for another)."""


def respond(body: object, tunnels: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return review(body, NAMESPACES.get, TUNNELS if tunnels is None else tunnels, SETTINGS)


def patch_of(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    inner = response["response"]
    if "patch" not in inner:
        return []
    assert inner["patchType"] == "JSONPatch"
    return list(json.loads(base64.b64decode(inner["patch"])))


def injected(obj: dict[str, Any], ns: str = "shop", **kwargs: Any) -> dict[str, Any]:
    response = respond(admission_review(obj, ns=ns), **kwargs)
    assert response["response"]["allowed"] is True
    ops = patch_of(response)
    assert ops, "expected a patch"
    return apply(obj, ops)


def sidecar_of(patched: Mapping[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = patched["spec"]["initContainers"][0]
    assert first["name"] == "kipsec"
    return first


def valid_for_api(patched: Mapping[str, Any]) -> dict[str, Any]:
    """The patched pod as the API server would store it (name generated), for validation."""
    stored = copy.deepcopy(dict(patched))
    stored["metadata"]["name"] = stored["metadata"]["generateName"] + "x1y2z"
    stored["metadata"]["namespace"] = "shop"
    return stored


# --- the response envelope --------------------------------------------------------------------


def test_the_response_echoes_the_request_uid() -> None:
    response = respond(admission_review(pod(), uid="abc-123"))
    assert response["apiVersion"] == "admission.k8s.io/v1"
    assert response["kind"] == "AdmissionReview"
    assert response["response"]["uid"] == "abc-123"


# --- matched / not matched / opted out / already injected -----------------------------------


def test_a_pod_selected_by_a_tunnel_gets_the_native_sidecar_first() -> None:
    patched = injected(pod())
    sidecar = sidecar_of(patched)
    assert sidecar["restartPolicy"] == "Always"
    assert patched["spec"]["containers"][0]["name"] == "app"


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_the_patched_pod_passes_the_strict_pod_schema(version: str) -> None:
    kubernetes_validate.validate(valid_for_api(injected(pod())), version, strict=True)


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_a_pod_with_init_containers_and_volumes_patched_passes_the_schema(version: str) -> None:
    original = pod(
        initContainers=[{"name": "migrate", "image": "registry.example/migrate:1"}],
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    original["metadata"]["annotations"] = {"team": "shop"}
    patched = injected(original)
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["kipsec", "migrate"]
    assert patched["spec"]["volumes"][0]["name"] == "data"
    assert patched["metadata"]["annotations"]["team"] == "shop"
    kubernetes_validate.validate(valid_for_api(patched), version, strict=True)


def test_a_pod_no_tunnel_selects_is_allowed_unchanged() -> None:
    response = respond(admission_review(pod(app="web")))
    assert response["response"]["allowed"] is True
    assert "patch" not in response["response"]


def test_a_pod_that_opts_out_is_allowed_unchanged() -> None:
    opted_out = pod()
    opted_out["metadata"]["annotations"] = {"kipsec.io/inject": "false"}
    response = respond(admission_review(opted_out))
    assert response["response"]["allowed"] is True
    assert patch_of(response) == []


def test_an_already_injected_pod_is_not_patched_twice() -> None:
    once = injected(pod())
    again = respond(admission_review(once))
    assert again["response"]["allowed"] is True
    assert patch_of(again) == []


def test_a_pod_in_a_namespace_labelled_for_injection_gets_the_sidecar() -> None:
    patched = injected(pod(app="web"), ns="lab", tunnels=[])
    assert sidecar_of(patched)["restartPolicy"] == "Always"


def test_a_tunnel_of_another_namespace_does_not_select_without_a_namespace_selector() -> None:
    response = respond(admission_review(pod(), ns="plain"))
    assert patch_of(response) == []


def test_a_tunnel_with_a_namespace_selector_selects_pods_of_a_consenting_namespace() -> None:
    spread = tunnel()
    spread["spec"]["selector"]["from"]["namespaceSelector"] = {}
    response = respond(admission_review(pod(), ns="partner"), tunnels=[spread])
    assert patch_of(response)


def test_a_namespace_that_does_not_consent_gets_no_sidecar_for_anothers_tunnel() -> None:
    spread = tunnel()
    spread["spec"]["selector"]["from"]["namespaceSelector"] = {}
    response = respond(admission_review(pod(), ns="plain"), tunnels=[spread])
    assert patch_of(response) == []


def test_a_namespace_labelled_disabled_is_never_injected() -> None:
    spread = tunnel()
    spread["spec"]["selector"]["from"]["namespaceSelector"] = {}
    response = respond(admission_review(pod(), ns="legacy"), tunnels=[spread])
    assert patch_of(response) == []


def test_a_host_network_pod_is_not_injected() -> None:
    response = respond(admission_review(pod(hostNetwork=True)))
    assert patch_of(response) == []


def test_an_update_is_allowed_unchanged() -> None:
    response = respond(admission_review(pod(), operation="UPDATE"))
    assert response["response"] == {"uid": "4f1c", "allowed": True}


# --- what the sidecar gets ---------------------------------------------------------------------


def test_the_sidecar_drops_all_capabilities_but_net_admin() -> None:
    context = sidecar_of(injected(pod()))["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_BIND_SERVICE"]}
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(
    "spec", [{"protocol": "ah"}, {"protocol": "esp", "encapsulation": "raw"}], ids=["ah", "raw-esp"]
)
def test_net_raw_is_added_only_for_raw_encapsulation(spec: dict[str, str]) -> None:
    context = sidecar_of(injected(pod(), tunnels=[tunnel(**spec)]))["securityContext"]
    assert context["capabilities"]["add"] == ["NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"]


def test_the_sidecar_has_its_probes_on_the_probes_only_port() -> None:
    sidecar = sidecar_of(injected(pod()))
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9586}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9586}
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/healthz", "port": 9586}
    ports = {port["name"]: port["containerPort"] for port in sidecar["ports"]}
    assert ports == {"kipsec-health": 9585, "kipsec-probes": 9586}
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["KIPSEC_PROBE_LISTEN"] == "0.0.0.0:9586"


def test_the_sidecar_gets_the_resources_of_the_settings() -> None:
    settings = InjectionSettings(resources={"requests": {"cpu": "10m"}, "limits": {"cpu": "1"}})
    ops = mutate(pod(), NAMESPACES["shop"], TUNNELS, settings, config_id="r1")
    patched = apply(pod(), ops)
    assert sidecar_of(patched)["resources"] == {"requests": {"cpu": "10m"}, "limits": {"cpu": "1"}}


def test_the_sidecar_mounts_its_config_secret_named_in_an_annotation() -> None:
    patched = injected(pod())
    secret_name = patched["metadata"]["annotations"][CONFIG_SECRET_ANNOTATION]
    assert patched["metadata"]["annotations"][INJECTED_ANNOTATION] == "true"
    volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
    assert volumes["kipsec-config"]["secret"]["secretName"] == secret_name
    assert secret_name.startswith("kipsec-sidecar-")


def test_two_replicas_of_one_template_get_distinct_config_secrets() -> None:
    first = respond(admission_review(pod(), uid="req-1"))
    second = respond(admission_review(pod(), uid="req-2"))
    name = "/metadata/annotations"
    names = [
        next(op["value"][CONFIG_SECRET_ANNOTATION] for op in patch_of(r) if op["path"] == name)
        for r in (first, second)
    ]
    assert names[0] != names[1]


def test_the_sidecar_gets_a_projected_token_for_audience_kipsec() -> None:
    patched = injected(pod())
    volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
    source = volumes["kipsec-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "kipsec"


def test_the_tun_device_comes_from_a_char_device_host_path_by_default() -> None:
    patched = injected(pod())
    volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
    assert volumes["kipsec-tun"]["hostPath"] == {"path": "/dev/net/tun", "type": "CharDevice"}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_the_device_plugin_alternative_requests_the_resource_instead(version: str) -> None:
    settings = InjectionSettings(tun_device="devicePlugin")
    ops = mutate(pod(), NAMESPACES["shop"], TUNNELS, settings, config_id="r1")
    patched = apply(pod(), ops)
    assert "kipsec-tun" not in {v["name"] for v in patched["spec"]["volumes"]}
    assert sidecar_of(patched)["resources"]["limits"]["kipsec.io/tun"] == "1"
    kubernetes_validate.validate(valid_for_api(patched), version, strict=True)


# --- refused and malformed requests --------------------------------------------------------------


def test_a_pod_using_a_reserved_volume_name_is_refused_naming_the_field() -> None:
    clash = pod(volumes=[{"name": "kipsec-config", "emptyDir": {}}])
    response = respond(admission_review(clash))["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    assert "spec.volumes" in response["status"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "not JSON"),
        ([], "not a JSON object"),
        ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}, "apiVersion"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "request"),
    ],
)
def test_a_malformed_review_is_refused_with_the_reason(body: object, field: str) -> None:
    response = respond(body)["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert field in response["status"]["message"]


def test_a_create_without_an_object_is_refused_echoing_the_uid() -> None:
    response = respond(admission_review(None, uid="u-9"))["response"]
    assert (response["uid"], response["allowed"]) == ("u-9", False)
    assert "request.object" in response["status"]["message"]


def test_a_pod_without_containers_is_refused() -> None:
    response = respond(admission_review({"metadata": {}, "spec": {}}))["response"]
    assert response["allowed"] is False
    assert "spec.containers" in response["status"]["message"]


def test_a_failing_namespace_lookup_fails_closed() -> None:
    def broken(name: str) -> Mapping[str, Any] | None:
        raise RuntimeError("apiserver unreachable")

    response = review(admission_review(pod()), broken, TUNNELS, SETTINGS)["response"]
    assert (response["allowed"], response["status"]["code"]) == (False, 500)


# --- the failure policy and pods that slipped through --------------------------------------------


def running(p: dict[str, Any], name: str, ns: str = "shop") -> dict[str, Any]:
    p = copy.deepcopy(p)
    p["metadata"].update(name=name, namespace=ns)
    p["status"] = {"phase": "Running"}
    return p


def test_the_webhook_fails_closed_by_default_and_spares_the_operators_namespace() -> None:
    webhook = mutating_webhook("kipsec-operator", "kipsec-system", "Q0E=")
    assert webhook["failurePolicy"] == "Fail"
    excluded = webhook["namespaceSelector"]["matchExpressions"][0]
    assert excluded["operator"] == "NotIn"
    assert {"kipsec-system", "kube-system"} <= set(excluded["values"])
    assert webhook["rules"][0]["operations"] == ["CREATE"]


def test_the_failure_policy_can_be_ignore_but_nothing_else() -> None:
    assert parse_failure_policy("Ignore") == "Ignore"
    with pytest.raises(ValueError, match=r"webhook\.failurePolicy"):
        parse_failure_policy("Maybe")


def test_pods_created_while_the_webhook_was_down_are_reported() -> None:
    slipped = running(pod(), "cart-1")
    protected = running(injected(pod()), "cart-2")
    unrelated = running(pod(app="web"), "web-1")
    opted_out = running(pod(), "cart-3")
    opted_out["metadata"]["annotations"] = {"kipsec.io/inject": "false"}
    finished = running(pod(), "cart-4")
    finished["status"]["phase"] = "Succeeded"
    missing = pods_missing_sidecar(
        [slipped, protected, unrelated, opted_out, finished], NAMESPACES, TUNNELS, SETTINGS
    )
    assert [(m.namespace, m.name, m.tunnels) for m in missing] == [
        ("shop", "cart-1", ("shop/cart-mesh",))
    ]
    assert "not encrypted" in missing[0].message


def test_the_sidecar_listens_on_the_pod_ip_and_polls_the_operator_for_its_configuration() -> None:
    env = {e["name"]: e.get("value") for e in sidecar_container(InjectionSettings(), False)["env"]}

    assert env["KIPSEC_HEALTH_LISTEN"] == "0.0.0.0:9585"
    assert env["KIPSEC_OPERATOR_CONFIG_DIR"] == "/run/kipsec/config"
    off = sidecar_container(InjectionSettings(config_delivery=False), False)["env"]
    assert "KIPSEC_OPERATOR_CONFIG_DIR" not in {e["name"] for e in off}


def test_the_startup_probe_outlasts_the_kubelets_secret_refresh() -> None:
    probe = sidecar_container(InjectionSettings(), False)["startupProbe"]

    assert probe["httpGet"]["path"] == "/healthz"
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 120
