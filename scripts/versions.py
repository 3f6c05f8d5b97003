"""One version: ``pyproject.toml``'s is the source; everything that repeats it must agree.

    python -m scripts.versions                 # check the working tree; exit 1 on a mismatch
    python -m scripts.versions --print         # the package version (for image tags)
    python -m scripts.versions --release-check # also: bumped past the last v* tag, in CHANGELOG

Checked: the chart's ``appVersion`` equals the package version and its own ``version`` is
semver; the kustomize base pins the images at the package version; ``CHANGELOG.md`` has a
section for it. The images take the version as a build argument from ``--print``, and the
trainer records the installed package's version (the same) as ``provenance.package_version``.
Exit codes: 0 consistent, 1 a mismatch (each printed), 2 usage.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)


def package_version(root: Path) -> str:
    return str(tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"])


def problems(root: Path) -> list[str]:
    """Every disagreement with the package version under ``root``."""
    version = package_version(root)
    found = []
    if not SEMVER.match(version):
        found.append(f"pyproject.toml: version {version!r} is not semver")
    chart = yaml.safe_load((root / "charts" / "model-serving" / "Chart.yaml").read_text())
    if str(chart.get("appVersion")) != version:
        found.append(
            f"charts/model-serving/Chart.yaml: appVersion {chart.get('appVersion')!r} "
            f"!= package version {version!r}"
        )
    if not SEMVER.match(str(chart.get("version", ""))):
        found.append(
            f"charts/model-serving/Chart.yaml: version {chart.get('version')!r} is not semver"
        )
    kustomization = yaml.safe_load((root / "k8s" / "base" / "kustomization.yaml").read_text())
    for image in kustomization.get("images", []):
        if str(image.get("newTag")) != version:
            found.append(
                f"k8s/base/kustomization.yaml: {image.get('name')} newTag "
                f"{image.get('newTag')!r} != package version {version!r}"
            )
    changelog = root / "CHANGELOG.md"
    if not changelog.exists() or not re.search(
        rf"^## \[{re.escape(version)}\]", changelog.read_text(), re.MULTILINE
    ):
        found.append(f"CHANGELOG.md: no '## [{version}]' section")
    return found


def last_tag(root: Path) -> str | None:
    done = subprocess.run(
        ["git", "-C", str(root), "tag", "--list", "v*", "--sort=-v:refname"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    tags = [t for t in done.stdout.split() if SEMVER.match(t.removeprefix("v"))]
    return tags[0] if tags else None


def _key(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(x) for x in re.split(r"[.+-]", version)[:3])
    return major, minor, patch


def release_problems(root: Path) -> list[str]:
    version, tag = package_version(root), last_tag(root)
    if tag is not None and _key(version) <= _key(tag.removeprefix("v")):
        return [f"version {version} is not above the last release tag {tag}: bump it"]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.versions",
        description="Check that every copy of the version agrees with pyproject.toml.",
        epilog="exit codes: 0 consistent, 1 mismatch, 2 usage",
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="project root (this checkout)")
    parser.add_argument("--print", action="store_true", help="print the package version")
    parser.add_argument(
        "--release-check", action="store_true", help="also require a bump past the last v* tag"
    )
    args = parser.parse_args(argv)
    if args.print:
        print(package_version(args.root))
        return 0
    found = problems(args.root)
    if args.release_check:
        found += release_problems(args.root)
    for problem in found:
        print(problem, file=sys.stderr)
    if found:
        return 1
    print(f"version {package_version(args.root)}: consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
