"""The import contracts in pyproject.toml (``make lint`` runs them): the real tree keeps them,
and a planted back-import, a circle or an unplaced module breaks them with a message naming
the modules.

Each case copies the packages into a temporary directory, plants one import there and runs
``lint-imports`` on the copy, so the tree under test is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("model_server", "rollout", "trainer", "model_registry", "serving_common")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts on the packages under ``tree``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and of pyproject.toml (the contracts)."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    for contract in ("model_server layers", "rollout layers", "No import circles"):
        assert contract in result.stdout


DEFERRED = "\n\ndef _planted() -> None:\n    from {target} import {name}  # noqa: F401\n"
TYPE_ONLY = (
    "\n\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
    "    from {target} import {name}  # noqa: F401\n"
)
TOP_LEVEL = "\n\nfrom {target} import {name}  # noqa: E402, F401\n"


@pytest.mark.parametrize(
    ("module", "plant", "target", "name", "expected"),
    [
        pytest.param(
            "model_server/codec.py",
            DEFERRED,
            "model_server.http_routes",
            "HttpRoutes",
            "model_server.codec is not allowed to import model_server.http_routes",
            id="codec-imports-the-http-transport-inside-a-function",
        ),
        pytest.param(
            "model_server/loading.py",
            TYPE_ONLY,
            "model_server.service",
            "ModelService",
            "model_server.loading is not allowed to import model_server.service",
            id="loading-imports-the-service-core-for-types-only",
        ),
        pytest.param(
            "model_server/model.py",
            DEFERRED,
            "model_server",
            "http_app",
            "model_server.model is not allowed to import model_server.http_app",
            id="a-worker-bootstraps-from-the-model-again",
        ),
        pytest.param(
            "model_server/service.py",
            TOP_LEVEL,
            "model_server.__main__",
            "main",
            "model_server.service is not allowed to import model_server.__main__",
            id="service-imports-main",
        ),
        pytest.param(
            "model_server/grpc_service.py",
            TOP_LEVEL,
            "model_server.http_body",
            "body_limit",
            "model_server.grpc_service is not allowed to import model_server.http_body",
            id="grpc-imports-http",
        ),
        pytest.param(
            "model_server/service.py",
            DEFERRED,
            "fastapi",
            "Response",
            "model_server.service is not allowed to import fastapi",
            id="the-service-core-imports-a-web-framework",
        ),
        pytest.param(
            "rollout/decision.py",
            DEFERRED,
            "rollout.kube",
            "InferenceServices",
            "rollout.decision is not allowed to import rollout.kube",
            id="pure-decision-imports-the-kubernetes-adapter",
        ),
        pytest.param(
            "rollout/experiment_cli.py",
            DEFERRED,
            "rollout.__main__",
            "main",
            "rollout.experiment_cli is not allowed to import rollout.__main__",
            id="a-command-imports-rollout-main",
        ),
        pytest.param(
            "rollout/rehearse.py",
            TYPE_ONLY,
            "rollout.experiment_rehearse",
            "rehearse",
            "rollout.rehearse is not allowed to import rollout.experiment_rehearse",
            id="one-rehearsal-imports-the-other",
        ),
        pytest.param(
            "model_registry/registry.py",
            DEFERRED,
            "model_server.loading",
            "ModelVersion",
            "- model_registry.registry -> model_server.loading",
            id="the-registry-imports-the-server",
        ),
        pytest.param(
            "trainer/data.py",
            DEFERRED,
            "trainer",
            "train",
            "- .data -> .train (1 import)",
            id="a-circle-in-the-trainer",
        ),
    ],
)
def test_a_planted_import_breaks_the_contract_naming_both_modules(
    tree: Path, *, module: str, plant: str, target: str, name: str, expected: str
) -> None:
    path = tree / module
    path.write_text(path.read_text() + plant.format(target=target, name=name))
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout, result.stdout


@pytest.mark.parametrize("package", ["model_server", "rollout"])
def test_a_module_placed_in_no_layer_breaks_the_contract(tree: Path, package: str) -> None:
    (tree / package / "newcomer.py").write_text('"""Not placed in a layer yet."""\n')
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not listed as layers" in result.stdout
    assert f"{package}.newcomer" in result.stdout
