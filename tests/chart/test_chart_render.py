"""The Helm chart, linted and rendered offline by the real Helm library (helm-python-sdk).

Every rendered object of a built-in kind passes kubernetes-validate (strict) for every
Kubernetes version from 1.29 it ships; the objects of other operators' CRDs (Prometheus
Operator, cert-manager, kopf) are checked for the references between them. The chart is
also held to the code it deploys: the webhook entry equals the operator's own
description of it, the Deployment's arguments parse with the operator's CLI, RBAC covers
every resource the operator watches, and the PodMonitor adds the labels the dashboard
groups by.
"""

from __future__ import annotations

import base64
import datetime
import re
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from deploy.alerts import rule_file
from deploy.catalog import TARGET_LABELS
from deploy.dashboard import DASHBOARD_FILE
from kubernetes_validate import utils as kv_utils

from kipsec_operator.crds.models import TunnelSpec
from kipsec_operator.handlers import RESOURCES
from kipsec_operator.main import PEERING_NAME, _parser
from kipsec_operator.reconcile.validation import parse_spec
from kipsec_operator.webhook.environment import (
    CLUSTER_NETWORKS,
    PARSERS,
    cluster_networks,
    injection_settings,
)
from kipsec_operator.webhook.injection import InjectionSettings, sidecar_container
from kipsec_operator.webhook.policy import mutating_webhook

CHART = Path(__file__).resolve().parents[2] / "charts" / "kipsec"
RELEASE = "kipsec"
NAMESPACE = "kipsec-system"
SUPPORTED_VERSIONS = sorted(
    {
        ".".join(v.split(".")[:2])
        for v in kv_utils.all_versions()
        if tuple(int(p) for p in v.split(".")[:2]) >= (1, 29)
    },
    key=lambda v: tuple(int(p) for p in v.split(".")),
)
FOREIGN_KINDS = {
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
    "Certificate",
    "Issuer",
    "ClusterKopfPeering",
}
"""Kinds of CRDs kubernetes-validate has no schema for; checked by the tests below."""

Obj = dict[str, Any]
KEY_LINE = re.compile(r"^\s*[A-Za-z][\w.-]*:(\s|$)")

# Each documented option of values.yaml, set on its own.
OPTIONS: dict[str, Obj] = {
    "single replica": {"operator": {"replicas": 1}},
    "leader election off": {"leaderElection": {"enabled": False}},
    "cert-manager, own CA": {"webhook": {"certificate": {"source": "certManager"}}},
    "cert-manager, cluster issuer": {
        "webhook": {
            "certificate": {
                "source": "certManager",
                "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
            }
        }
    },
    "failure policy Ignore": {"webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 5}},
    "monitoring on": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
            "podMonitor": {"enabled": True, "interval": "15s"},
            "prometheusRule": {"enabled": True},
        }
    },
    "dashboard elsewhere": {
        "dashboard": {"namespace": "monitoring", "annotations": {"grafana_folder": "kipsec"}}
    },
    "dashboard off": {"dashboard": {"enabled": False}},
    "existing service account": {"serviceAccount": {"create": False, "name": "kipsec-sa"}},
    "image by digest": {"operator": {"image": {"digest": "sha256:" + "ab" * 32}}},
    "sidecar via device plugin": {
        "sidecar": {"tunDevice": "devicePlugin", "healthPort": 9600, "probePort": 9601}
    },
    "scheduling": {
        "operator": {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "system-cluster-critical",
            "imagePullSecrets": [{"name": "regcred"}],
            "podLabels": {"team": "net"},
            "podAnnotations": {"owner": "net"},
            "verbose": True,
        }
    },
    "no disruption budget": {"operator": {"podDisruptionBudget": {"enabled": False}}},
    "renamed": {"fullnameOverride": "ipsec"},
}


def render(values: Obj | None = None, namespace: str = NAMESPACE) -> list[Obj]:
    """The objects the chart renders for `values` (NOTES.txt and empty documents left out)."""
    chart = helm_python.Chart.load(CHART)
    try:
        manifests = chart.render(values or {}, name=RELEASE, namespace=namespace, is_install=True)
    finally:
        chart.close()
    objects: list[Obj] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(values: Obj | None = None) -> str:
    chart = helm_python.Chart.load(CHART)
    try:
        manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    finally:
        chart.close()
    return manifests[f"{CHART.name}/templates/NOTES.txt"]


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Obj], kind: str) -> Obj:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def operator_container(objects: list[Obj]) -> Obj:
    container: Obj = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def env(objects: list[Obj]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in operator_container(objects)["env"]}


def validate_builtin(objects: list[Obj]) -> None:
    for obj in objects:
        if obj["kind"] in FOREIGN_KINDS:
            continue
        for version in SUPPORTED_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_lint_reports_no_warning_or_error() -> None:
    report = helm_python.lint(CHART, strict=True, kube_version="v1.29.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == []


def test_default_values_render_objects_valid_for_every_supported_kubernetes() -> None:
    objects = render()
    assert {o["kind"] for o in objects} >= {
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "MutatingWebhookConfiguration",
        "Secret",
        "PodDisruptionBudget",
        "ConfigMap",
        "ClusterKopfPeering",
    }
    validate_builtin(objects)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_each_documented_option_renders_valid_objects(option: str) -> None:
    validate_builtin(render(OPTIONS[option]))


def test_every_rendered_kind_is_either_validated_or_checked_here() -> None:
    kinds = {o["kind"] for values in OPTIONS.values() for o in render(values)}
    assert kinds & FOREIGN_KINDS == FOREIGN_KINDS


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"webhook": {"failurePolicy": "Sometimes"}}, "/webhook/failurePolicy"),
        ({"operator": {"replicas": 0}}, "/operator/replicas"),
        ({"operater": {"replicas": 2}}, "operater"),
        ({"sidecar": {"tunDevice": "tap"}}, "/sidecar/tunDevice"),
        ({"webhook": {"certificate": {"source": "vault"}}}, "/webhook/certificate/source"),
        ({"operator": {"image": {"digest": "latest"}}}, "/operator/image/digest"),
        ({"metrics": {"podMonitor": {"interval": "often"}}}, "/metrics/podMonitor/interval"),
        ({"operator": {"runAsUser": 0}}, "/operator/runAsUser"),
        ({"sidecar": {"runAsUser": -1}}, "/sidecar/runAsUser"),
        ({"sidecar": {"resources": {"requests": {"cpu": True}}}}, "/sidecar/resources"),
    ],
)
def test_a_bad_value_is_refused_by_the_schema_naming_it(values: Obj, path: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as error:
        render(values)
    assert path in str(error.value)


def test_the_webhook_entry_is_the_operators_own_description_of_it() -> None:
    objects = render({"webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 7}})
    entry = one(objects, "MutatingWebhookConfiguration")["webhooks"][0]
    expected = mutating_webhook(
        "kipsec-operator", NAMESPACE, entry["clientConfig"]["caBundle"], "Ignore", 8443, 7
    )
    assert entry == expected


def test_the_chart_generated_certificate_is_trusted_by_the_ca_bundle_for_the_service() -> None:
    objects = render()
    secret = next(o for o in by_kind(objects, "Secret") if o["type"] == "kubernetes.io/tls")
    bundle = one(objects, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(bundle["caBundle"]))
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert secret["data"]["ca.crt"] == bundle["caBundle"]
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"kipsec-operator.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    assert leaf.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        days=365
    )
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages


def test_the_operator_mounts_the_secret_that_holds_its_serving_certificate() -> None:
    for values in ({}, OPTIONS["cert-manager, own CA"]):
        objects = render(values)
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        secret = next(v["secret"]["secretName"] for v in pod["volumes"] if v["name"] == "tls")
        issued = [o["metadata"]["name"] for o in by_kind(objects, "Secret")] + [
            c["spec"]["secretName"] for c in by_kind(objects, "Certificate")
        ]
        assert secret in issued


def test_cert_manager_issues_the_certificate_and_injects_its_ca() -> None:
    objects = render(OPTIONS["cert-manager, own CA"])
    webhook = one(objects, "MutatingWebhookConfiguration")
    serving = next(c for c in by_kind(objects, "Certificate") if not c["spec"].get("isCA"))
    ca = next(c for c in by_kind(objects, "Certificate") if c["spec"].get("isCA"))
    ca_issuer = next(i for i in by_kind(objects, "Issuer") if "ca" in i["spec"])
    assert webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/{serving['metadata']['name']}"
    )
    assert "caBundle" not in webhook["webhooks"][0]["clientConfig"]
    assert serving["spec"]["issuerRef"]["name"] == ca_issuer["metadata"]["name"]
    assert ca_issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    assert f"kipsec-operator.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    assert not [o for o in by_kind(objects, "Secret") if o["type"] == "kubernetes.io/tls"]


def test_cert_manager_with_an_existing_issuer_creates_no_issuer() -> None:
    objects = render(OPTIONS["cert-manager, cluster issuer"])
    assert by_kind(objects, "Issuer") == []
    assert one(objects, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
    }


def test_two_replicas_elect_a_leader_through_the_operators_peering_object() -> None:
    objects = render()
    assert one(objects, "Deployment")["spec"]["replicas"] == 2
    assert one(objects, "ClusterKopfPeering")["metadata"]["name"] == PEERING_NAME
    assert "--standalone" not in operator_container(objects)["args"]
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("option", ["single replica", "leader election off"])
def test_without_leader_election_the_operator_runs_standalone(option: str) -> None:
    objects = render(OPTIONS[option])
    assert "--standalone" in operator_container(objects)["args"]
    assert by_kind(objects, "ClusterKopfPeering") == []


def test_the_peering_crd_is_the_resource_kopf_patches() -> None:
    crd = next(
        doc
        for doc in yaml.safe_load_all((CHART / "crds" / "kopf-peering.kopf.dev.yaml").read_text())
        if doc["spec"]["scope"] == "Cluster"
    )
    assert (crd["spec"]["group"], crd["spec"]["names"]["plural"]) == (
        "kopf.dev",
        "clusterkopfpeerings",
    )
    assert [v["name"] for v in crd["spec"]["versions"]] == ["v1"]


@pytest.mark.parametrize("option", ["", *sorted(OPTIONS)])
def test_the_operators_arguments_parse_with_its_cli(option: str) -> None:
    args = operator_container(render(OPTIONS.get(option, {})))["args"]
    parsed = _parser().parse_args(args)
    assert parsed.command == "run"
    assert parsed.tls_cert and parsed.tls_key


def test_the_sidecars_are_given_the_operators_service_address() -> None:
    objects = render()
    service = next(
        s for s in by_kind(objects, "Service") if s["metadata"]["name"].endswith("-operator")
    )
    port = service["spec"]["ports"][0]["port"]
    url = f"https://{service['metadata']['name']}.{NAMESPACE}.svc:{port}"
    assert env(objects)["KIPSEC_OPERATOR_URL"] == url == InjectionSettings().operator_url


def test_the_operator_runs_unprivileged_on_a_read_only_root_filesystem() -> None:
    objects = render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    context = operator_container(objects)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    probes = {k for k in operator_container(objects) if k.endswith("Probe")}
    assert probes == {"startupProbe", "livenessProbe", "readinessProbe"}
    assert operator_container(objects)["resources"]["requests"]


def _rules(objects: list[Obj]) -> Iterator[tuple[str, str, str]]:
    for rule in one(objects, "ClusterRole")["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    yield group, resource, verb


def test_rbac_lets_the_operator_list_and_watch_everything_it_watches() -> None:
    granted = set(_rules(render()))
    for group, _, plural in RESOURCES.values():
        assert {(group, plural, "list"), (group, plural, "watch")} <= granted, plural


def test_rbac_grants_no_wildcard_no_delete_and_no_secret_update() -> None:
    granted = set(_rules(render()))
    assert not [g for g in granted if "*" in g]
    assert not [g for g in granted if g[2] in ("delete", "deletecollection", "escalate", "bind")]
    assert {v for g, r, v in granted if r == "secrets"} == {
        "get",
        "list",
        "watch",
        "create",
        "patch",
    }
    assert ("authentication.k8s.io", "tokenreviews", "create") in granted
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in granted


def test_every_rbac_rule_is_explained_by_a_comment() -> None:
    lines = (CHART / "templates" / "rbac.yaml").read_text().splitlines()
    rules = [i for i, line in enumerate(lines) if line.strip().startswith("- apiGroups:")]
    assert rules
    for index in rules:
        assert lines[index - 1].strip().startswith("#"), f"rbac.yaml:{index + 1} unexplained"


def test_the_pod_monitor_adds_the_labels_the_dashboard_groups_by() -> None:
    monitor = one(render(OPTIONS["monitoring on"]), "PodMonitor")
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    added = {r["targetLabel"] for r in endpoint["relabelings"] if "targetLabel" in r}
    # The Prometheus Operator itself adds namespace and pod to every PodMonitor target.
    assert set(TARGET_LABELS["sidecar"]) == added | {"namespace", "pod"}
    assert endpoint["port"] == "kipsec-health"


def test_the_service_monitor_scrapes_the_metrics_service_with_the_webhook_ca() -> None:
    objects = render(OPTIONS["monitoring on"])
    monitor = one(objects, "ServiceMonitor")
    metrics = next(
        s for s in by_kind(objects, "Service") if s["metadata"]["name"].endswith("-metrics")
    )
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= metrics["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == metrics["spec"]["ports"][0]["name"]
    assert endpoint["honorLabels"] is True
    ca = endpoint["tlsConfig"]["ca"]["secret"]
    assert ca == {"name": "kipsec-webhook-tls", "key": "ca.crt"}
    assert monitor["metadata"]["labels"]["release"] == "prom"


def test_the_prometheus_rule_holds_the_generated_alerts() -> None:
    rule = one(render(OPTIONS["monitoring on"]), "PrometheusRule")
    assert rule["spec"] == rule_file()


def test_the_dashboard_config_map_holds_the_generated_dashboard_for_grafanas_sidecar() -> None:
    config_map = one(render(OPTIONS["dashboard elsewhere"]), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["data"]["kipsec.json"] == DASHBOARD_FILE.read_text().rstrip("\n")


def test_optional_objects_are_off_by_default_and_follow_their_switches() -> None:
    default = {o["kind"] for o in render()}
    assert not default & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Certificate"}
    assert "ConfigMap" not in {o["kind"] for o in render(OPTIONS["dashboard off"])}
    assert "PodDisruptionBudget" not in {o["kind"] for o in render(OPTIONS["no disruption budget"])}
    objects = render(OPTIONS["existing service account"])
    assert by_kind(objects, "ServiceAccount") == []
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kipsec-sa"
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "kipsec-sa"


def test_images_and_sidecar_settings_reach_the_operator() -> None:
    digest = OPTIONS["image by digest"]["operator"]["image"]["digest"]
    assert operator_container(render(OPTIONS["image by digest"]))["image"].endswith("@" + digest)
    settings = env(render(OPTIONS["sidecar via device plugin"]))
    assert settings["KIPSEC_TUN_DEVICE"] == "devicePlugin"
    assert settings["KIPSEC_SIDECAR_HEALTH_PORT"] == "9600"
    assert settings["KIPSEC_SIDECAR_PROBE_PORT"] == "9601"
    assert settings["KIPSEC_SIDECAR_IMAGE"] == "ghcr.io/kipsec/kipsec-sidecar:0.1.0"


def sidecar_env(objects: list[Obj]) -> dict[str, str]:
    """The operator's environment variables that configure the injected sidecar."""
    return {
        k: v for k, v in env(objects).items() if k.startswith("KIPSEC_") and k != CLUSTER_NETWORKS
    }


def test_the_cluster_networks_value_reaches_the_operator() -> None:
    assert cluster_networks(env(render())) == ()
    values = {"clusterNetworks": ["10.244.0.0/16", "10.96.0.0/12"]}
    assert cluster_networks(env(render(values))) == ("10.244.0.0/16", "10.96.0.0/12")


@pytest.mark.parametrize("option", ["", *sorted(OPTIONS)])
def test_the_operator_reads_every_sidecar_setting_the_chart_sets(option: str) -> None:
    variables = sidecar_env(render(OPTIONS.get(option, {})))
    assert set(variables) == set(PARSERS)
    injection_settings(variables)  # raises naming the variable if the chart wrote a bad one


def test_the_charts_defaults_are_the_operators_defaults() -> None:
    assert injection_settings(sidecar_env(render())) == InjectionSettings()


def test_sidecar_values_reach_the_injected_container() -> None:
    values = {
        "sidecar": {
            "image": {"repository": "registry.example/kipsec-sidecar", "tag": "9.9"},
            "tunDevice": "devicePlugin",
            "tunResource": "example.com/tun",
            "runAsUser": 1000,
            "resources": {
                "requests": {"cpu": "20m", "memory": "32Mi"},
                "limits": {"memory": "1Gi"},
            },
        }
    }
    settings = injection_settings(sidecar_env(render(values)))
    container = sidecar_container(settings, net_raw=False)
    assert container["image"] == "registry.example/kipsec-sidecar:9.9"
    assert container["securityContext"]["runAsUser"] == 1000
    assert container["resources"] == {
        "requests": {"cpu": "20m", "memory": "32Mi", "example.com/tun": "1"},
        "limits": {"memory": "1Gi", "example.com/tun": "1"},
    }


def test_renaming_the_release_renames_every_object_and_the_webhook_target() -> None:
    objects = render(OPTIONS["renamed"])
    named = [o["metadata"]["name"] for o in objects if o["kind"] != "ClusterKopfPeering"]
    assert all(name.startswith("ipsec") for name in named), named
    client = one(objects, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]
    assert client["service"]["name"] == "ipsec-operator"


def test_notes_tell_how_to_declare_a_first_tunnel_the_operator_accepts() -> None:
    text = notes()
    assert "kubectl -n demo wait --for=condition=Ready" in text
    assert "pod-security.kubernetes.io/enforce=privileged" in text
    manifest = textwrap.dedent(text.split("<<YAML | kubectl apply -f -\n")[1].split("YAML\n")[0])
    tunnel = yaml.safe_load(manifest)
    assert tunnel["kind"] == "Tunnel"
    assert isinstance(parse_spec(tunnel), TunnelSpec), parse_spec(tunnel)


def test_values_file_documents_every_key() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    free_form = ("requests:", "limits:")  # their keys are resource names
    parents: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not KEY_LINE.match(line):
            continue
        indent = len(line) - len(line.lstrip())
        parents = [(i, key) for i, key in parents if i < indent]
        if not (parents and parents[-1][1] in free_form):
            above = lines[index - 1].strip()
            assert above.startswith("#"), f"values.yaml:{index + 1} is not documented: {stripped}"
        parents.append((indent, stripped.split(" ")[0]))


def _walk(schema: Mapping[str, Any], path: str) -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}.{key}"
        yield from _walk(sub, f"{path}.{key}")


def test_the_schema_describes_every_value() -> None:
    chart = helm_python.Chart.load(CHART)
    try:
        schema = chart.schema
    finally:
        chart.close()
    assert schema is not None
    document = yaml.safe_load(schema) if isinstance(schema, str | bytes) else schema

    def described(node: Mapping[str, Any], path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}.{key} has no description"
            described(sub, f"{path}.{key}")

    described(document, "")
    assert list(_walk(document, ""))
