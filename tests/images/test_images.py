"""The container images' Dockerfiles and the lock they install from (no Docker engine here:
the files are linted with hadolint and checked for what the images must be)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.k8s_manifests import ROOT

DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", re.MULTILINE)


def pins(lock: Path) -> dict[str, str]:
    return {name.lower(): version for name, version in PIN.findall(lock.read_text())}


def test_both_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == {"server.Dockerfile", "trainer.Dockerfile"}


def test_runtime_lock_agrees_with_the_development_lock() -> None:
    runtime, dev = pins(ROOT / "requirements-runtime.lock"), pins(ROOT / "requirements.lock")
    assert runtime, "requirements-runtime.lock pins nothing"
    assert {name: dev.get(name) for name in runtime} == runtime
    assert not {"pytest", "mypy", "ruff", "moto"} & runtime.keys(), "dev tools in the image lock"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower()
        assert name in runtime, f"{name} is a dependency but not in requirements-runtime.lock"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_shape(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    stages = re.findall(r"^FROM \$\{PYTHON_IMAGE\} AS (\w+)$", text, re.MULTILINE)
    assert stages == ["builder", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert "--require-hashes" in text.split("AS runtime", 1)[0]
    assert "requirements-runtime.lock" in text
    assert re.search(r"^USER 10001:10001$", runtime, re.MULTILINE)
    assert "HEALTHCHECK" not in text
    assert 'org.opencontainers.image.version="${VERSION}"' in runtime
    assert 'org.opencontainers.image.revision="${GIT_SHA}"' in runtime
    # No build tools and no package manager runs in the runtime stage.
    assert not re.search(r"apt-get|gcc|build-essential|pip install", runtime)
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n")
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), str(bad)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # "latest" tag


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_packaged_python_package_is_copied(dockerfile: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = re.findall(r"^COPY (\w+) \./(\w+)$", dockerfile.read_text(), re.MULTILINE)
    assert sorted(src for src, _ in copied) == sorted(packages)


def test_dockerignore_sends_only_what_the_images_copy() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("**") + 1 :][:10] == [
        "!requirements-runtime.lock",
        "!pyproject.toml",
        "!README.md",
        "!model_registry/",
        "!model_server/",
        "!prediction_log/",
        "!rollout/",
        "!serving_common/",
        "!trainer/",
        "**/__pycache__",
    ]
