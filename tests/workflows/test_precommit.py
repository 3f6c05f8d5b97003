"""pre-commit runs offline: every hook is local, and the secrets scan passes here but not on a
planted key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.k8s_manifests import ROOT

HOOK = str(Path(sys.executable).parent / "detect-secrets-hook")


def test_every_hook_is_local_and_the_required_ones_exist() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    ids = {hook["id"] for hook in config["repos"][0]["hooks"]}
    assert {
        "ruff",
        "ruff-format",
        "mypy",
        "chart-docs",
        "trailing-whitespace",
        "detect-secrets",
    } <= ids


def tracked_files() -> list[str]:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True
    )
    skip = ("requirements", "benchmarks/mlserver.lock", ".secrets.baseline")
    return [f for f in done.stdout.split() if not f.startswith(skip)]


def test_no_secrets_in_the_tree(tmp_path: Path) -> None:
    # The hook rewrites a baseline whose line numbers moved: give it a copy, never the tree's.
    baseline = tmp_path / "baseline"
    baseline.write_text((ROOT / ".secrets.baseline").read_text())
    done = subprocess.run(
        [HOOK, "--baseline", str(baseline), *tracked_files()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_planted_key_is_caught(tmp_path: Path) -> None:
    planted = tmp_path / "settings.py"
    key = "AKIA" + "Z" * 16  # assembled here so this file itself holds no key-shaped string
    planted.write_text(f'AWS_ACCESS_KEY_ID = "{key}"\n')
    done = subprocess.run(
        [HOOK, "--baseline", str(ROOT / ".secrets.baseline"), str(planted)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "AWS Access Key" in done.stdout
