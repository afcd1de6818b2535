"""The Dockerfile, checked without a container engine (the images themselves are built
and run by the lab tier: tests/lab/test_lab_containers.py).

What can be checked is: every target the chart and the docs name exists; every path it
copies is in the build context (present, and not excluded by .dockerignore); every
entry point is a console script the distribution declares and whose function imports;
versions are pinned; the operator runs as a non-root user. And the build itself, the way
the Dockerfile does it: a wheel built from only the copied sources, installed into a
fresh virtual environment, whose console scripts start and print their help.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import venv
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
TARGETS = ("sidecar", "operator")
BUILD_TIMEOUT = 600


@dataclass
class Stage:
    """One `FROM ... AS name` stage and its instructions (continuations joined)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages of a Dockerfile (enough of the syntax for this one)."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, words[0]))
        elif keyword == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


ARGS, STAGES = parse(DOCKERFILE.read_text())
BY_NAME = {stage.name: stage for stage in STAGES}


def chain(name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    found = []
    while name in BY_NAME:
        found.append(BY_NAME[name])
        name = BY_NAME[name].base
    return found


def entrypoint(target: str) -> list[str]:
    for stage in chain(target):
        if stage.all("ENTRYPOINT"):
            value: list[str] = json.loads(stage.all("ENTRYPOINT")[-1])
            return value
    raise AssertionError(f"target {target} has no ENTRYPOINT")


def copied_sources() -> list[str]:
    """Sources of every COPY from the build context (not --from another stage)."""
    sources: list[str] = []
    for stage in STAGES:
        for args in stage.all("COPY"):
            words = shlex.split(args)
            if any(w.startswith("--from") for w in words):
                continue
            sources.extend(w for w in words[:-1] if not w.startswith("--"))
    return sources


def dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    clean = path.rstrip("/")
    return any(
        fnmatch.fnmatch(clean, p.removeprefix("**/")) or clean.split("/")[0] == p for p in patterns
    )


def scripts() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared: dict[str, str] = project.get("scripts", {})
    return declared


def test_the_sidecar_and_operator_targets_exist() -> None:
    assert set(TARGETS) <= set(BY_NAME)


def test_every_copied_path_is_in_the_build_context() -> None:
    sources = copied_sources()
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source), f"{source} is excluded by .dockerignore"


def test_the_build_context_leaves_out_tests_and_local_state() -> None:
    for path in ("tests", ".venv", ".git", "bench"):
        assert dockerignored(path), path


@pytest.mark.parametrize("target", TARGETS)
def test_the_entry_point_is_a_declared_console_script_that_imports(target: str) -> None:
    command = entrypoint(target)[0]
    assert command in scripts(), f"pyproject.toml declares no console script {command}"
    module, _, function = scripts()[command].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_base_image_and_tools_are_pinned() -> None:
    """The default base is a pinned Python image; every Python package comes pinned
    through pip's constraint file; Debian packages are pinned."""
    base = ARGS["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.12\.\d+-slim-\w+", base), base
    build = " ".join(BY_NAME["build"].all("ENV"))
    assert "PIP_CONSTRAINT=/src/images/constraints.txt" in build
    pins = [
        line
        for line in (ROOT / "images" / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+", p) for p in pins), pins
    for stage in STAGES:
        for command in stage.all("RUN"):
            if "apt-get install" in command:
                packages = command.split("apt-get install")[1].split("&&")[0].split()
                assert all("=" in p for p in packages if not p.startswith("-")), command


def test_the_pins_cover_every_dependency_of_the_operator_image() -> None:
    """images/constraints.txt names each requirement of kipsec[operator] (so pip never
    picks an unpinned version), and the build can make the kipsec wheel offline."""
    pinned = {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
        for line in (ROOT / "images" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["operator"]]
    for requirement in wanted:
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
        assert re.sub(r"[-_.]+", "-", name).lower() in pinned, requirement
    assert "setuptools" in pinned


def test_the_operator_runs_as_a_non_root_user() -> None:
    users = [u for stage in chain("operator") for u in stage.all("USER")]
    assert users, "the operator image has no USER"
    uid = users[0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[0]


def test_no_image_grants_capabilities() -> None:
    text = DOCKERFILE.read_text()
    assert "setcap" not in text and "--privileged" not in text


def _pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        check=True,
        timeout=BUILD_TIMEOUT,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )


def _bin(environment: Path, name: str) -> Path:
    return environment / ("Scripts" if sys.platform == "win32" else "bin") / name


@pytest.mark.slow
def test_console_scripts_start_in_a_clean_venv_built_like_the_image(tmp_path: Path) -> None:
    """Build a wheel from only what the Dockerfile copies (`pip wheel --no-deps`, as its
    build stage), install it with the operator's extra in a fresh venv (pip's cache is
    reused, so this is quick after the first run), run `--help`."""
    commands = [entrypoint(target)[0] for target in TARGETS]
    missing = [c for c in commands if c not in scripts()]
    assert not missing, f"pyproject.toml declares no console script {missing}"
    context = tmp_path / "context"
    context.mkdir()
    for source in copied_sources():
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(
                origin,
                context / source,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
            )
        else:
            shutil.copy2(origin, context / source)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(wheels),
            ".",
        ],
        cwd=context,
        check=True,
        timeout=BUILD_TIMEOUT,
        capture_output=True,
    )
    runtime = tmp_path / "runtime"
    venv.create(runtime, with_pip=True)
    _pip(_bin(runtime, "python"), *[f"{w}[operator]" for w in wheels.glob("*.whl")])
    for command in commands:
        result = subprocess.run(
            [str(_bin(runtime, command)), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"PATH": str(_bin(runtime, "")), "HOME": str(tmp_path)},
        )
        assert result.returncode == 0, f"{command} --help: {result.stderr}"
        assert "usage:" in result.stdout
