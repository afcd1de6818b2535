"""The injected sidecar's settings read from the operator's environment (set by the chart)."""

from __future__ import annotations

import pytest

from kipsec_operator.main import main
from kipsec_operator.webhook.environment import SettingsError, injection_settings
from kipsec_operator.webhook.injection import InjectionSettings


def test_an_empty_environment_gives_the_defaults() -> None:
    assert injection_settings({"PATH": "/usr/bin"}) == InjectionSettings()


def test_every_variable_sets_its_setting() -> None:
    settings = injection_settings(
        {
            "KIPSEC_SIDECAR_IMAGE": "registry.example/kipsec-sidecar:1.2",
            "KIPSEC_SIDECAR_IMAGE_PULL_POLICY": "Always",
            "KIPSEC_SIDECAR_HEALTH_PORT": "9600",
            "KIPSEC_SIDECAR_PROBE_PORT": "9601",
            "KIPSEC_SIDECAR_RESOURCES": '{"requests": {"cpu": "10m", "memory": 64}}',
            "KIPSEC_SIDECAR_RUN_AS_USER": "1000",
            "KIPSEC_TUN_DEVICE": "devicePlugin",
            "KIPSEC_TUN_RESOURCE": "example.com/tun",
            "KIPSEC_OPERATOR_URL": "https://kipsec.example.svc:8443/",
        }
    )
    assert settings == InjectionSettings(
        image="registry.example/kipsec-sidecar:1.2",
        image_pull_policy="Always",
        health_port=9600,
        probe_port=9601,
        resources={"requests": {"cpu": "10m", "memory": "64"}},
        run_as_user=1000,
        tun_device="devicePlugin",
        tun_resource="example.com/tun",
        operator_url="https://kipsec.example.svc:8443",
    )


def test_an_empty_run_as_user_means_root_with_capabilities_only() -> None:
    assert injection_settings({"KIPSEC_SIDECAR_RUN_AS_USER": ""}).run_as_user is None


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("KIPSEC_SIDECAR_IMAGE", " ", "must not be empty"),
        ("KIPSEC_SIDECAR_IMAGE_PULL_POLICY", "Sometimes", "Always, IfNotPresent, Never"),
        ("KIPSEC_SIDECAR_HEALTH_PORT", "70000", "not a port number"),
        ("KIPSEC_SIDECAR_HEALTH_PORT", "http", "not a port number"),
        ("KIPSEC_SIDECAR_RESOURCES", "cpu=10m", "not JSON"),
        ("KIPSEC_SIDECAR_RESOURCES", '{"requests": {"cpu": true}}', "quantities"),
        ("KIPSEC_SIDECAR_RESOURCES", '{"claims": {}}', '"requests" and "limits"'),
        ("KIPSEC_SIDECAR_RUN_AS_USER", "nobody", "not a numeric uid"),
        ("KIPSEC_TUN_DEVICE", "tap", "hostPath, devicePlugin, none"),
        ("KIPSEC_OPERATOR_URL", "kipsec-operator:8443", "http(s) URL"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(variable: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as error:
        injection_settings({variable: value})
    assert error.value.variable == variable
    assert str(error.value).startswith(f"{variable}: ")
    assert says in str(error.value)


def test_the_operator_refuses_to_start_with_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KIPSEC_TUN_DEVICE", "tap")
    with pytest.raises(SystemExit) as exited:
        main(["run", "--standalone", "--server", "http://127.0.0.1:9"])
    assert exited.value.code == 2
    assert "KIPSEC_TUN_DEVICE: 'tap' is not one of" in capsys.readouterr().err
