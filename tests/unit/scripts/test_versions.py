"""The one-version check, on a copy of the project's version files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scripts.versions import ROOT, main, problems, release_problems

FILES = (
    "pyproject.toml",
    "CHANGELOG.md",
    "charts/model-serving/Chart.yaml",
    "k8s/base/kustomization.yaml",
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_this_checkout_is_consistent() -> None:
    assert problems(ROOT) == []
    assert main([]) == 0


def test_a_mismatched_app_version_fails(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert problems(project) == []
    replace(
        project / "charts/model-serving/Chart.yaml", 'appVersion: "0.1.0"', 'appVersion: "0.1.1"'
    )
    assert main(["--root", str(project)]) == 1
    assert "appVersion '0.1.1' != package version '0.1.0'" in capsys.readouterr().err


def test_a_stale_image_pin_and_a_missing_changelog_entry_fail(project: Path) -> None:
    replace(project / "pyproject.toml", 'version = "0.1.0"', 'version = "0.2.0"')
    replace(
        project / "charts/model-serving/Chart.yaml", 'appVersion: "0.1.0"', 'appVersion: "0.2.0"'
    )
    found = problems(project)
    assert any("newTag '0.1.0' != package version '0.2.0'" in p for p in found)
    assert any("no '## [0.2.0]' section" in p for p in found)
    assert len(found) == 2


def test_release_check_wants_a_bump_past_the_last_tag(project: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x")
    assert release_problems(project) == []  # no release yet
    git("tag", "v0.1.0")
    assert release_problems(project) == [
        "version 0.1.0 is not above the last release tag v0.1.0: bump it"
    ]
    replace(project / "pyproject.toml", 'version = "0.1.0"', 'version = "0.1.1"')
    assert release_problems(project) == []
