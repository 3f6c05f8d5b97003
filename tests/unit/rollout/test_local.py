"""What both rehearsals share: registry URIs that mean the same in every child, the registry
checked before anything starts, and children whose logs are kept and named when they fail."""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import pytest

from model_registry import Registry
from rollout.local import (
    PROGRESS_SECONDS,
    ChildExited,
    Children,
    RehearsalError,
    absolute_uri,
    resolve_versions,
)
from rollout.output import EXIT_ERROR, EXIT_USAGE, Printer
from tests.conftest import metadata_body


def test_a_local_registry_path_is_made_absolute_where_it_was_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_uri("./registry") == str(tmp_path.resolve() / "registry")
    assert absolute_uri("registry/") == str(tmp_path.resolve() / "registry")
    assert absolute_uri("../elsewhere") == str(tmp_path.resolve().parent / "elsewhere")
    assert absolute_uri("file://registry") == f"file://{tmp_path.resolve() / 'registry'}"
    assert absolute_uri("file:///srv/registry") == "file:///srv/registry"
    assert absolute_uri("/srv/registry") == "/srv/registry"
    for remote in ("gs://bucket/registry", "s3://bucket/prefix/registry"):
        assert absolute_uri(remote) == remote
    with pytest.raises(argparse.ArgumentTypeError):
        absolute_uri(" ")


def test_the_rehearsals_parse_a_relative_registry_as_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rollout.__main__ import build_parser

    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    canary = parser.parse_args(["rehearse", "--control", "v1", "--treatment", "v2"])
    assert canary.registry_uri == str(tmp_path.resolve() / "registry")  # the default too
    experiment = parser.parse_args(
        ["experiment", "rehearse", "--registry-uri", "reg", "--control", "v1", "--treatment", "v2"]
    )
    assert experiment.registry_uri == str(tmp_path.resolve() / "reg")


@pytest.fixture
def churn(tmp_path: Path) -> str:
    """A registry with churn v1 (production) and v2, and a v3 whose artifact is missing."""
    uri = str(tmp_path / "registry")
    registry = Registry(uri)
    for artifact in (b"one", b"two", b"three"):
        registry.publish("churn", artifact, metadata_body())
    registry.set_alias("churn", "production", "v1")
    (tmp_path / "registry" / "churn" / "v3" / "model.skops").unlink()
    return uri


def test_versions_are_resolved_before_anything_starts(churn: str) -> None:
    assert resolve_versions(churn, "churn", {"control": "production", "treatment": "2"}) == {
        "control": "v1",
        "treatment": "v2",
    }


@pytest.mark.parametrize(
    ("refs", "model", "says"),
    [
        ({"control": "v1", "treatment": "v9"}, "churn", "--treatment v9: model 'churn' has no "
         "version v9 in {uri}; it has v1, v2"),
        ({"control": "v1", "treatment": "v3"}, "churn", "--treatment v3: model 'churn' has no "
         "version v3 in {uri} (corrupt: artifact model.skops is missing); it has v1, v2"),
        ({"control": "canary", "treatment": "v2"}, "churn", "--control canary: model 'churn' "
         "has no alias 'canary' (aliases: production=v1); it has v1, v2"),
        ({"control": "v1", "treatment": "v2"}, "fraud", "model 'fraud' has no versions in "
         "{uri} (models there: churn)"),
        ({"control": "v1", "treatment": "1"}, "churn", "control and treatment are the same"),
    ],
)  # fmt: skip
def test_a_missing_model_or_version_fails_fast_naming_what_there_is(
    churn: str, refs: dict[str, str], model: str, says: str
) -> None:
    with pytest.raises(RehearsalError) as refused:
        resolve_versions(churn, model, refs)
    assert says.format(uri=churn) in str(refused.value)
    assert refused.value.code == EXIT_USAGE


def test_an_unreadable_registry_is_an_error_not_a_usage_mistake(tmp_path: Path) -> None:
    with pytest.raises(RehearsalError) as refused:
        resolve_versions(str(tmp_path), "Not A Name", {"control": "v1", "treatment": "v2"})
    assert "cannot read the registry" in str(refused.value)
    assert refused.value.code == EXIT_ERROR


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_failure_keeps_the_logs_and_names_each_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with Children("rehearse-") as children:
        children.start(
            "control", python("import time; print('control up', flush=True); time.sleep(60)")
        )
        control_log = children.work / "control.log"
        deadline = time.monotonic() + 60  # the child's interpreter starting, on a busy machine
        while "control up" not in control_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        children.start("locust", python("print('no such registry'); raise SystemExit(3)"))
        children.processes["locust"].wait()
        assert children.exited() == "locust"
        assert children.fail("no load reached the servers", "locust") == EXIT_ERROR
    err = capsys.readouterr().err
    work = children.work
    assert work.is_dir()  # kept
    assert "model-rollout: error: no load reached the servers" in err
    assert f"last lines of {work / 'locust.log'}:\n  no such registry" in err
    assert f"logs (kept in {work}):" in err
    for name in ("control", "locust"):
        assert f"  {name}: {work / name}.log" in err
    assert err.count(f"kept in {work}") == 1  # said once
    assert (work / "control.log").read_text() == "control up\n"
    assert children.processes["control"].poll() is not None  # stopped all the same


def test_a_rehearsal_that_ends_well_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with Children("rehearse-") as children:
        children.start("server", python("import time; time.sleep(60)"))
    assert not children.work.exists()
    assert children.processes["server"].poll() is not None
    assert capsys.readouterr().err == ""
    with Children("rehearse-", keep=True) as kept:
        kept.start("server", python("pass"))
    assert kept.work.is_dir()
    assert capsys.readouterr().err == (
        f"logs (kept in {kept.work}):\n  server: {kept.work / 'server.log'}\n"
    )


def test_an_interrupted_rehearsal_keeps_its_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    children = Children("rehearse-")

    def interrupted() -> None:
        with children:
            children.start("server", python("import time; time.sleep(60)"))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert children.work.is_dir()
    assert f"  server: {children.work / 'server.log'}" in capsys.readouterr().err


class Clock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waiting_says_what_it_waits_for_at_least_every_ten_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    clock, out = Clock(), io.StringIO()
    printer = Printer("json", out)
    with Children("rehearse-") as children:
        children.start("server", python("import time; time.sleep(60)"))
        loaded_at = 35.0

        def loading() -> str | None:
            return None if clock.now >= loaded_at else "HTTP 503: loading v2"

        why = children.wait(
            "servers loading", loading, printer, 120, sleep=clock.sleep, clock=clock
        )
        assert why is None
        lines = [line for line in out.getvalue().splitlines() if '"waiting"' in line]
        assert len(lines) == int(loaded_at // PROGRESS_SECONDS) == 3
        assert '"servers loading (10s): HTTP 503: loading v2"' in lines[0]
        assert '"servers loading (30s): ' in lines[2]

        clock.now, loaded_at = 0.0, 1e9
        why = children.wait("the first requests", loading, printer, 60, sleep=clock.sleep,
                            clock=clock)  # fmt: skip
        assert why == "nothing after 60s (HTTP 503: loading v2)"


def test_waiting_stops_when_a_child_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with Children("rehearse-") as children:
        children.start("treatment", python("raise SystemExit(7)")).wait()
        why = children.wait("servers loading", lambda: "loading", Printer("text", io.StringIO()), 1)
        assert why == "the treatment process exited (code 7)"
        children.keep()


def test_the_analysis_stops_when_a_child_it_needs_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with Children("rehearse-") as children:
        children.start("control", python("import time; time.sleep(60)"))
        children.sleep(0)  # all up: nothing to say
        children.start("locust", python("raise SystemExit(2)")).wait()
        with pytest.raises(ChildExited) as gone:
            children.sleep(0)
        assert (gone.value.name, gone.value.code) == ("locust", 2)
        assert str(gone.value) == "the locust process exited (code 2)"
