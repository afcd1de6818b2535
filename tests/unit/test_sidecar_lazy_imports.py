"""What the sidecar loads, by path: the modules a path never uses stay out of the process.

The sidecar's start time and resident memory are mostly imports (see
``bench/sidecar_startup.py``): pyroute2 alone is ~160 modules and ~10 MiB, and only the
kernel datapath still uses it (the ``datapath: auto`` probe packs its XFRM messages
itself, ``datapath/xfrm_wire.py``). These tests
run each path in a fresh interpreter and read its ``sys.modules``, so an eager import
added anywhere on the way (a module-level ``from ..datapath.kernel import ...``) fails
here, not as a slower start someone has to notice. They are structural, not timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.netns import scratch_namespace

#: Never in the sidecar: test-only, operator-side or lab packages.
NEVER = ("scapy", "aiohttp", "kopf", "kubernetes", "kipsec_operator", "kipsec_lab")
#: The kernel (XFRM) datapath and its pyroute2 codec: only when the kernel datapath is
#: chosen.
KERNEL_DATAPATH = ("kipsec_sidecar.datapath.kernel", "kipsec_sidecar.datapath.xfrm")
#: The kernel datapath and the probe: neither with ``datapath: userspace``.
KERNEL = (
    *KERNEL_DATAPATH,
    "kipsec_sidecar.datapath.xfrm_sa",
    "kipsec_sidecar.datapath.xfrm_wire",
    "kipsec_sidecar.datapath.probe",
)
#: What a started userspace datapath needs, and nothing before: its rtnetlink routing, TUN.
DATAPATH = (
    "kipsec_sidecar.datapath.rtnetlink",
    "kipsec_sidecar.datapath.routing",
    "kipsec_sidecar.datapath.userspace",
)
#: The kernel datapath's XFRM netlink framework (~160 modules, ~10 MiB): never on the
#: userspace path, whose routes and rules go through its own rtnetlink module.
PYROUTE2 = ("pyroute2",)
#: The JSON schema export (the chart's and the docs' schema), never the daemon's.
SCHEMA = ("kipsec_sidecar.config.schema",)
#: PyYAML: only for a document that is not the operator's plain JSON.
YAML = ("yaml", "kipsec_sidecar.config.strict_yaml")
#: prometheus-client (the sidecar writes its exposition itself) and the HTTP stack
#: (http.server, http.client, urllib.request: ~4 MiB with it): only the operator's config
#: delivery and certificate enrollment make HTTP requests, and import urllib when they do.
HTTP = ("prometheus_client", "http.server", "http.client", "urllib.request")
#: Certificate parsing and path validation (~40 modules): only for certificates.
X509 = ("cryptography.x509", "kipsec_sidecar.core.ike.certs")
#: The IKEv1 engine: made at the first IKEv1 datagram or initiation (core.ike_versions).
IKEV1 = ("kipsec_sidecar.core.ikev1.endpoint", "kipsec_sidecar.core.ikev1.engine")
#: pydantic and what it pulls in (~13 MiB and ~0.13 s with the model built): the sidecar's
#: configuration model is written on its own layer (config/fields.py); only the operator
#: and the schema tooling may use pydantic.
PYDANTIC = (
    "pydantic",
    "pydantic_core",
    "typing_extensions",
    "annotated_types",
    "typing_inspection",
    "importlib.metadata",
    "email",
    "zipfile",
)


def loaded(code: str, *args: str, netns: str | None = None) -> set[str]:
    """The modules in ``sys.modules`` after ``code`` ran in a fresh interpreter (inside
    the network namespace ``netns``, if given)."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    where = [] if netns is None else ["ip", "netns", "exec", netns]
    out = subprocess.run(
        [*where, sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def present(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The entries of ``names`` loaded (a package counts when any of its modules is)."""
    return [n for n in names if any(m == n or m.startswith(f"{n}.") for m in modules)]


def test_importing_the_daemon_loads_no_datapath() -> None:
    modules = loaded("import kipsec_sidecar.daemon")
    assert (
        present(modules, NEVER + KERNEL + DATAPATH + PYROUTE2 + SCHEMA + YAML + HTTP + X509 + IKEV1)
        == []
    )
    assert present(modules, PYDANTIC) == []


def test_the_cli_loads_neither_the_daemon_nor_the_config_model() -> None:
    modules = loaded("import kipsec_sidecar.cli")
    assert present(modules, ("kipsec_sidecar.daemon", "kipsec_sidecar.config", *PYDANTIC)) == []
    assert present(modules, NEVER + KERNEL + DATAPATH) == []


def test_the_userspace_path_never_loads_the_kernel_datapath() -> None:
    # What the daemon does for `datapath: userspace`: choose (no probe), then the factory
    # imports the userspace datapath.
    modules = loaded(
        "from kipsec_sidecar.daemon.datapath_choice import choose_datapath\n"
        "import kipsec_sidecar.daemon.sidecar\n"
        "assert choose_datapath('userspace').name == 'userspace'\n"
        "import kipsec_sidecar.datapath.userspace\n"
        "import kipsec_sidecar.health, kipsec_sidecar.metrics"
    )
    assert present(modules, NEVER + KERNEL + PYROUTE2 + SCHEMA + YAML + HTTP + X509 + IKEV1) == []
    assert present(modules, DATAPATH) == list(DATAPATH)


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    with scratch_namespace("imports") as name:
        yield name


def test_auto_on_a_kernel_without_esp_probes_without_pyroute2(netns: str) -> None:
    # What the daemon does for `datapath: auto` (the default), in a namespace of its own:
    # the probe asks the kernel for ESP states; refused, the userspace datapath starts.
    # The probe's XFRM messages must not have brought pyroute2 or the kernel datapath in.
    modules = loaded(
        "from kipsec_sidecar.daemon.datapath_choice import choose_datapath, factory_for\n"
        "import kipsec_sidecar.daemon.sidecar\n"
        "choice = choose_datapath('auto')\n"
        "if choice.name == 'userspace':\n"
        "    assert factory_for(choice).__name__ == 'userspace_factory'\n"
        "    import kipsec_sidecar.datapath.userspace\n"
        "    import kipsec_sidecar.health, kipsec_sidecar.metrics",
        netns=netns,
    )
    if "kipsec_sidecar.datapath.userspace" not in modules:
        pytest.skip("this kernel accepts ESP: auto runs the kernel datapath (VM tier)")
    assert "kipsec_sidecar.datapath.probe" in modules  # it did probe
    assert present(modules, NEVER + KERNEL_DATAPATH + PYROUTE2 + SCHEMA + YAML + HTTP) == []
    assert present(modules, DATAPATH) == list(DATAPATH)


def test_an_invalid_document_is_reported_before_any_datapath_loads(tmp_path: Path) -> None:
    # `kipsec-sidecar run` itself, through main(), on a document that fails validation:
    # exit 2 with the field named, having loaded the config model but no datapath.
    config = tmp_path / "sidecar.yaml"
    config.write_text("apiVersion: kipsec.io/v1alpha1\nkind: SidecarConfig\npeers: 7\n")
    modules = loaded(
        "import sys\n"
        "from kipsec_sidecar.cli import main\n"
        "assert main(['run', '--config', sys.argv[1]]) == 2",
        str(config),
    )
    assert "kipsec_sidecar.config.model" in modules
    assert present(modules, NEVER + KERNEL + DATAPATH + PYROUTE2 + SCHEMA + PYDANTIC) == []


def test_the_kernel_datapath_still_loads_its_netlink_code() -> None:
    # The other side of the split: the kernel path gets what it needs when chosen.
    wanted = (*KERNEL, *PYROUTE2)
    assert present(loaded("import kipsec_sidecar.datapath.kernel"), wanted) == list(wanted)


def test_a_json_document_is_read_without_pyyaml_and_a_yaml_one_with_it() -> None:
    # The operator writes JSON: the loader's JSON shortcut reads it, PyYAML stays out.
    document = {"apiVersion": "kipsec.io/v1alpha1", "kind": "SidecarConfig", "peers": []}
    code = (
        "import sys\n"
        "from kipsec_sidecar.config.load import parse_text\n"
        "assert parse_text(sys.argv[1])['kind'] == 'SidecarConfig'"
    )
    as_json = json.dumps(document, sort_keys=True, indent=2) + "\n"
    assert present(loaded(code, as_json), YAML) == []
    as_yaml = "apiVersion: kipsec.io/v1alpha1\nkind: SidecarConfig\npeers: []\n"
    assert present(loaded(code, as_yaml), ("yaml",)) == ["yaml"]


def test_a_psk_document_is_planned_without_x509_and_a_dn_identity_loads_it() -> None:
    # What the daemon does with a document: validate it and build the core's configs.
    # PSK peers named by FQDN or address never parse a certificate or a DN, nor does our
    # own identity (the operator writes the pod address as one for every PSK pod).
    code = (
        "import json, sys\n"
        "from kipsec_sidecar.config.load import load_config_data\n"
        "from kipsec_sidecar.config.to_core import to_core\n"
        "config = load_config_data(json.loads(sys.argv[1]))\n"
        "assert len(to_core(config, read_file=lambda path: b'a-long-enough-secret')) == 2"
    )
    peers: list[dict[str, object]] = [
        {"name": "b", "address": "10.0.0.2", "identity": {"fqdn": "b.example"}},
        {"name": "c", "address": "10.0.0.3"},
    ]
    document = {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {
            "addresses": ["10.0.0.1"],
            "identity": {"fqdn": "a.example"},
            "auth": {"psk": {"secretFile": "/psk"}},
        },
        "peers": peers,
    }
    assert present(loaded(code, json.dumps(document)), X509 + PYDANTIC) == []
    peers[1]["identity"] = {"dn": "CN=c,O=kipsec"}
    assert present(loaded(code, json.dumps(document)), ("cryptography.x509",)) == [
        "cryptography.x509"
    ]
