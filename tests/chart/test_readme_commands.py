"""Every ``helm`` command in the READMEs, run as written (rendered: there is no cluster here).

The console blocks of ``README.md`` and the chart's README are read in order, as a reader would
type them: shell variable assignments are remembered and expanded, and each ``helm install`` /
``helm upgrade [--install]`` is played against a record of the releases installed so far. A
release's values are what Helm itself computes (Helm 4's ``install --dry-run=client --debug``
prints them as USER-SUPPLIED VALUES): ``--reuse-values`` merges the command's values over the
release's last ones; an upgrade without it takes only the command's values over the chart's
defaults, or, given none, the release's last ones (Helm's ``pkg/action/upgrade.go``); and
``upgrade --install`` of a release that does not exist yet is a plain install, where there is
nothing to reuse. Each step then renders with
Helm 3 and Helm 4 and every object is validated strictly. A command the record cannot play (an
unknown flag, a chart other than ours, ``helm test`` of a release never installed) fails.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s_manifests import CHART, ROOT, helm, helm_template, validate

DOCS = [ROOT / "README.md", CHART / "README.md"]
CHART_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
# Flags of install/upgrade that change nothing in what is rendered.
INERT = {"--create-namespace", "--wait", "--atomic", "--force-conflicts", "--rollback-on-failure"}
WITH_VALUE = {"--timeout"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


def console_commands(path: Path) -> list[tuple[int, str]]:
    """``(line, command)`` of every ``$ `` line in the ``console`` blocks, continuations joined."""
    commands: list[tuple[int, str]] = []
    inside = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("```"):
            inside = line.strip() == "```console"
            continue
        if not inside:
            continue
        if pending is not None:
            start, text = pending
            text += " " + line.strip()
        elif line.startswith("$ "):
            start, text = number, line[2:].strip()
        else:
            continue
        if text.endswith("\\"):
            pending = (start, text[:-1].rstrip())
        else:
            pending = None
            commands.append((start, text))
    return commands


@dataclass
class Release:
    values: dict[str, Any]


@dataclass
class Reader:
    """What a reader's shell and cluster hold after the commands so far."""

    variables: dict[str, str] = field(default_factory=dict)
    releases: dict[tuple[str, str], Release] = field(default_factory=dict)
    copies: dict[str, Path] = field(default_factory=dict)

    def file(self, name: str) -> Path:
        """A values file as the reader's shell finds it: one they copied, or the checkout's."""
        path = self.copies.get(name, ROOT / name)
        assert path.is_file(), f"{name}: no such file"
        return path

    def words(self, command: str) -> list[str]:
        def expand(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name not in self.variables:
                raise AssertionError(f"${name} is used before it is set")
            return self.variables[name]

        expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", expand, command)
        return shlex.split(expanded, comments=True)


def chart_path(reference: str, version: str | None) -> Path:
    if reference in {"charts/model-serving", "./charts/model-serving"}:
        return CHART
    if reference.startswith("oci://") and reference.endswith("/model-serving"):
        assert version == CHART_VERSION, f"--version {version}: the chart is {CHART_VERSION}"
        return CHART
    raise AssertionError(f"unknown chart {reference!r}")


def user_values(chart: Path, namespace: str, files: list[Path], sets: list[str]) -> Any:
    """The values Helm computes from ``files`` then ``sets`` (its USER-SUPPLIED VALUES), after
    rendering the chart with them: a refusal fails here with Helm's own message."""
    command = [helm("helm4"), "install", "readme", str(chart), "-n", namespace]
    command += ["--dry-run=client", "--debug"]
    for values in files:
        command += ["-f", str(values)]
    for item in sets:
        command += ["--set", item]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    errors = [
        line
        for line in done.stderr.splitlines()
        if "symbolic link" not in line and not line.startswith("level=")
    ]
    assert done.returncode == 0, "\n".join(errors)
    section = done.stdout.split("USER-SUPPLIED VALUES:", 1)[1].split("COMPUTED VALUES:", 1)[0]
    return yaml.safe_load(section) or {}


@dataclass
class Invocation:
    """``helm install|upgrade`` parsed: what it names and what it changes."""

    name: str
    chart: Path
    namespace: str
    files: list[Path]
    sets: list[str]
    flags: set[str]


def parse(reader: Reader, rest: list[str]) -> Invocation:
    positional: list[str] = []
    files: list[Path] = []
    sets: list[str] = []
    flags: set[str] = set()
    namespace, version = "default", None
    words = iter(rest)
    for word in words:
        if word in {"-n", "--namespace"}:
            namespace = next(words)
        elif word in {"-f", "--values"}:
            files.append(reader.file(next(words)))
        elif word == "--set":
            sets.append(next(words))
        elif word == "--version":
            version = next(words)
        elif word in {"--install", "--reuse-values"} or word in INERT:
            flags.add(word)
        elif word in WITH_VALUE:
            next(words)
        elif word.startswith("-"):
            raise AssertionError(f"flag {word} is not played here: teach this test what it does")
        else:
            positional.append(word)
    assert len(positional) == 2, f"want RELEASE CHART, got {positional}"
    chart = chart_path(positional[1], version)
    return Invocation(positional[0], chart, namespace, files, sets, flags)


def check_installed(reader: Reader, verb: str, rest: list[str]) -> None:
    """``helm test|status|get ...|uninstall RELEASE``: the release must exist."""
    positional = [w for w in rest if not w.startswith("-")]
    namespace = rest[rest.index("-n") + 1] if "-n" in rest else "default"
    positional = [w for w in positional if w != namespace]
    release = positional[1] if verb == "get" else positional[0]  # helm get values RELEASE
    assert (release, namespace) in reader.releases, f"{release} is not installed in {namespace}"


def play_helm(reader: Reader, words: list[str]) -> None:
    verb, rest = words[1], words[2:]
    if verb in {"test", "status", "get", "uninstall", "history"}:
        check_installed(reader, verb, rest)
        return
    assert verb in {"install", "upgrade"}, f"helm {verb} is not played here"
    step = parse(reader, rest)
    key = (step.name, step.namespace)
    exists = key in reader.releases
    if verb == "install":
        assert not exists, f"{step.name} is already installed in {step.namespace}: use upgrade"
    else:
        assert exists or "--install" in step.flags, (
            f"{step.name} is not installed in {step.namespace}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        start: list[Path] = []
        given = step.files or step.sets
        if exists and ("--reuse-values" in step.flags or not given):
            previous = Path(tmp) / "previous.yaml"
            previous.write_text(yaml.safe_dump(reader.releases[key].values))
            start = [previous]
        values = user_values(step.chart, step.namespace, start + step.files, step.sets)
        computed = Path(tmp) / "values.yaml"
        computed.write_text(yaml.safe_dump(values))
        for helm_name in ("helm3", "helm4"):
            manifests = helm_template(
                helm_name, computed, release=step.name, namespace=step.namespace, chart=step.chart
            )
            assert manifests
            problems = [p for m in manifests for p in validate(m)]
            assert problems == [], problems
    reader.releases[key] = Release(values)


def play(path: Path) -> list[str]:
    """Play every command of ``path``; the helm commands it played, in order."""
    reader = Reader()
    played: list[str] = []
    for line, command in console_commands(path):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}: {command}"
        program = command.split()[0]
        if program not in {"helm", "cp"} and not ASSIGNMENT.match(program):
            continue
        words = reader.words(command)
        if all(ASSIGNMENT.match(w) for w in words):
            for word in words:
                variable, _, value = word.partition("=")
                reader.variables[variable] = value
            continue
        if program == "cp":
            source, target = words[1:]
            reader.copies[target] = reader.file(source)
            continue
        try:
            play_helm(reader, words)
        except AssertionError as failure:
            raise AssertionError(f"{where}\n{failure}") from None
        played.append(command)
    return played


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_helm_command_in_the_readme_runs_as_written(doc: Path) -> None:
    played = play(doc)
    assert any(" install " in c or "--install" in c for c in played), "no install was played"


def test_the_player_refuses_what_helm_would_refuse(tmp_path: Path) -> None:
    """The record can fail: each of these is a mistake the READMEs once had or could have."""
    image = "--set image.repository=registry.example/model-server"
    trainer = "--set trainer.image.repository=registry.example/model-trainer"
    base = "--set model.name=m,model.version=v1,registry.uri=gs://b/r " + image
    cases = {
        # the trainer is on by default and needs its data and target
        f"$ helm install m charts/model-serving -n ns {base} {trainer}": "trainer.dataUri",
        # no image repository: nothing could ever be pulled
        "$ helm install m charts/model-serving -n ns "
        "--set model.name=m,model.version=v1,registry.uri=gs://b/r,trainer.enabled=false": (
            "image.repository is required"
        ),
        # --reuse-values on a first install: there is nothing to reuse
        "$ helm upgrade --install m charts/model-serving -n ns --reuse-values "
        "--set canary.trafficPercent=10": "/model/name",
        # an upgrade of a release that was never installed
        f"$ helm upgrade m charts/model-serving -n ns {base}": "not installed",
        "$ helm test m -n ns": "not installed",
        "$ helm upgrade --install m charts/model-serving -n ns --dry-run": "--dry-run",
        "$ helm install m oci://r.example/charts/model-serving --version 9.9.9": "--version 9.9.9",
        "$ helm install m charts/model-serving --set x=$UNSET": "$UNSET",
    }
    for command, message in cases.items():
        doc = tmp_path / "README.md"
        doc.write_text(f"```console\n{command}\n```\n")
        with pytest.raises(AssertionError, match=re.escape(message)):
            play(doc)


def test_console_blocks_are_read_as_typed() -> None:
    text = (
        "```console\n$ A=1 B=2\n$ helm upgrade x charts/model-serving \\\n    -n $A  # note\n```\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        doc = Path(tmp) / "README.md"
        doc.write_text(text)
        commands = console_commands(doc)
    assert commands == [(2, "A=1 B=2"), (3, "helm upgrade x charts/model-serving -n $A  # note")]
    reader = Reader(variables={"A": "models"})
    words = ["helm", "upgrade", "x", "charts/model-serving", "-n", "models"]
    assert reader.words(commands[1][1]) == words
