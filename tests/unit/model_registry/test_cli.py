"""``model-registry`` command line: output for people and scripts, and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from model_registry import Registry
from model_registry.__main__ import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
    HIGHER_IS_BETTER,
    main,
    primary_metric,
)
from model_registry.metadata import Task
from tests.conftest import metadata_body
from trainer import evaluate

FOREST_PARAMS = {
    "bootstrap": True,
    "class_weight": None,
    "criterion": "gini",
    "max_depth": 4,
    "max_features": "sqrt",
    "min_samples_leaf": 1,
    "n_estimators": 50,
    "n_jobs": -1,
    "oob_score": False,
    "random_state": 42,
    "verbose": 0,
    "warm_start": False,
}
FORCED_GATE = {
    "accepted": False,
    "reason": "worse than production by 0.0026: roc_auc 0.9934 vs production v1 0.9960 "
    "(higher is better, tolerance 0, compared on same-holdout)",
    "metric": "roc_auc",
    "candidate": 0.9934,
    "champion": 0.996,
    "champion_version": "v1",
    "basis": "same-holdout",
    "forced": True,
}


def trained(estimator: str, params: dict[str, Any], **training: Any) -> dict[str, Any]:
    """The training section as the trainer writes it."""
    return {
        **metadata_body()["training"],
        "estimator": estimator,
        "params": params,
        **training,
    }


@pytest.fixture
def populated(registry: Registry) -> Registry:
    registry.publish("churn", b"one", metadata_body())
    registry.publish("churn", b"two", metadata_body(metrics={"roc_auc": 0.95}))
    registry.set_alias("churn", "production", "v1")
    return registry


def run(registry: Registry, *args: str) -> int:
    return main(["--registry-uri", registry.uri, *args])


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    assert "verify" in out


def test_list_models_and_versions(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(populated, "list") == EXIT_OK
    assert capsys.readouterr().out.strip() == "churn"
    assert run(populated, "list", "churn") == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["v1", "published", lines[1].split()[2]]
    assert "production" in lines[1]
    assert "roc_auc=0.9500" in lines[2]


def test_list_shows_each_versions_estimator(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.publish("churn", b"one", metadata_body())  # registered before estimators were named
    for estimator in ("logistic", "random-forest"):
        training = {**metadata_body()["training"], "estimator": estimator}
        registry.publish("churn", estimator.encode(), metadata_body(training=training))
    assert run(registry, "list", "churn") == EXIT_OK
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == (
        ["VERSION", "STATE", "CREATED", "(UTC)", "ALIASES", "ESTIMATOR", "METRICS", "/", "PROBLEM"]
    )
    column = header.index("ESTIMATOR")
    assert [row[column:].split()[0] for row in rows] == ["-", "logistic", "random-forest"]
    assert run(registry, "-o", "json", "list", "churn") == EXIT_OK
    doc = orjson.loads(capsys.readouterr().out)
    assert [v["estimator"] for v in doc["versions"]] == [None, "logistic", "random-forest"]


def test_list_json_for_scripts(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(populated, "--output", "json", "list", "churn") == EXIT_OK
    doc = orjson.loads(capsys.readouterr().out)
    assert [v["version"] for v in doc["versions"]] == ["v1", "v2"]
    assert doc["versions"][0]["aliases"] == ["production"]
    assert doc["aliases"] == {"production": "v1"}


def test_list_all_shows_incomplete_versions(
    populated: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    populated.storage.create("churn/v3/.claim", b"{}")
    assert run(populated, "list", "churn") == EXIT_OK
    assert "v3" not in capsys.readouterr().out
    assert run(populated, "list", "churn", "--all") == EXIT_OK
    assert "incomplete" in capsys.readouterr().out


def test_show_by_alias_as_json(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(populated, "-o", "json", "show", "churn", "production") == EXIT_OK
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["version"] == "v1"
    assert doc["artifact"]["format"] == "skops"


def test_show_tells_parameters_and_gate(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    training = trained(
        "random-forest",
        FOREST_PARAMS,
        param_overrides={"max_depth": 4, "n_estimators": 50, "criterion": "1"},
        gate=FORCED_GATE,
    )
    registry.publish(
        "churn",
        b"one",
        metadata_body(
            training=training,
            primary_metric="roc_auc",
            metrics={"roc_auc": 0.9934, "log_loss": 0.122},
        ),
    )
    assert run(registry, "show", "churn") == EXIT_OK
    out = capsys.readouterr().out
    lines = {line[:13].strip(): line[13:] for line in out.splitlines() if line[:1] != " "}
    assert lines["task:"] == "classification   estimator: random-forest"
    # JSON values, as --param takes them; text that JSON would read otherwise is quoted.
    assert lines["overrides:"] == 'criterion="1" max_depth=4 n_estimators=50'
    assert lines["parameters:"].startswith("bootstrap=true class_weight=null criterion=gini ")
    wrapped = ("parameters:  " + out.split("parameters:  ")[1].split("\nartifact:")[0]).splitlines()
    assert [len(line) <= 100 for line in wrapped] == [True, True, True]
    assert [line.split()[-1] for line in wrapped] == [
        "max_features=sqrt",
        "verbose=0",
        "warm_start=false",
    ]
    assert wrapped[1].startswith(" " * 13 + "min_samples_leaf=1 ")
    assert lines["metrics:"] == (
        "log_loss=0.1220  roc_auc=0.9934  (primary: roc_auc, higher is better)"
    )
    assert lines["gate:"] == f"rejected, registered with --force: {FORCED_GATE['reason']}"


def test_show_a_version_registered_before_parameters_and_gates(
    populated: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(populated, "show", "churn", "v1") == EXIT_OK
    lines = {line[:13].strip(): line[13:] for line in capsys.readouterr().out.splitlines()}
    assert "overrides:" not in lines
    assert lines["parameters:"] == "none recorded"
    assert lines["metrics:"] == "roc_auc=0.9000  (primary: roc_auc by default, higher is better)"
    assert lines["gate:"] == "not recorded"


@pytest.mark.parametrize(
    ("gate", "text"),
    [
        ({"accepted": True, "reason": "no production version"}, "accepted: no production version"),
        ({"accepted": False, "forced": False, "reason": "worse"}, "rejected: worse"),
        ({"accepted": True}, "accepted"),
    ],
)
def test_show_gate_decisions(
    registry: Registry, capsys: pytest.CaptureFixture[str], gate: dict[str, object], text: str
) -> None:
    training = trained("logistic", {"C": 1.0}, param_overrides={}, gate=gate)
    registry.publish("churn", b"one", metadata_body(training=training))
    assert run(registry, "show", "churn") == EXIT_OK
    lines = {line[:13].strip(): line[13:] for line in capsys.readouterr().out.splitlines()}
    assert lines["gate:"] == text
    assert lines["overrides:"] == "none"
    assert lines["parameters:"] == "C=1.0"


def test_metric_directions_and_defaults_are_the_trainers(registry: Registry) -> None:
    assert HIGHER_IS_BETTER == evaluate.HIGHER_IS_BETTER
    cases: list[tuple[Task, list[int] | None]] = [
        ("classification", [0, 1]),
        ("classification", [0, 1, 2]),
        ("regression", None),
    ]
    for task, classes in cases:
        target = {"name": "y", "dtype": "int64", "classes": classes}
        meta = registry.publish("churn", b"x", metadata_body(task=task, target=target))
        default = evaluate.default_primary_metric(task, len(classes) if classes else None)
        assert primary_metric(meta) == (default, False)
    recorded = registry.publish("churn", b"x", metadata_body(primary_metric="accuracy"))
    assert primary_metric(recorded) == ("accuracy", True)


def test_alias_set_list_delete(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(populated, "alias", "churn", "production", "v2") == EXIT_OK
    assert "production -> v2" in capsys.readouterr().out
    assert run(populated, "alias", "churn") == EXIT_OK
    assert capsys.readouterr().out.strip() == "production\tv2"
    assert run(populated, "alias", "churn", "production", "--delete") == EXIT_OK
    assert populated.aliases("churn") == {}


def test_verify_exit_code_reflects_corruption(
    populated: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(populated, "verify", "churn") == EXIT_OK
    assert capsys.readouterr().out.count(": ok") == 2
    Path(populated.storage.path("churn/v2/model.skops")).write_bytes(b"TWO")
    assert run(populated, "verify", "churn") == EXIT_VERIFY_FAILED
    assert "v2: CORRUPT" in capsys.readouterr().out


def test_errors_map_to_exit_codes(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(populated, "show", "churn", "v7") == EXIT_NOT_FOUND
    assert run(populated, "show", "nope") == EXIT_NOT_FOUND
    assert run(populated, "show", "Bad_Name") == EXIT_USAGE
    assert run(populated, "alias", "churn", "latest", "v1") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no version v7" in err or "v7" in err
    assert "invalid model name" in err
    # JSON output gets the same exit code as text: a script can tell "no such model"
    assert run(populated, "list", "nope", "-o", "json") == EXIT_NOT_FOUND
    assert run(populated, "list", "nope") == EXIT_NOT_FOUND


def test_a_reader_that_stops_early_gets_no_traceback(populated: Registry) -> None:
    """`model-registry show ... | head -1`: the pipe closes before the output is written."""
    command = [sys.executable, "-m", "model_registry", "--registry-uri", populated.uri]
    process = subprocess.Popen(
        [*command, "show", "churn", "v1", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # before the process has imported anything, let alone written
    with process.stderr:
        error = process.stderr.read().decode()
    assert process.wait(timeout=60) == EXIT_OK, error
    assert "Traceback" not in error, error
    assert "BrokenPipe" not in error, error


def test_missing_version_lists_the_versions_and_aliases(
    populated: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    known = "versions: v1, v2 (aliases: production -> v1)"
    assert run(populated, "show", "churn", "v7") == EXIT_NOT_FOUND
    err = capsys.readouterr().err
    assert err == f"model-registry: not found: model 'churn' has no version v7; {known}\n"
    assert run(populated, "show", "churn", "staging") == EXIT_NOT_FOUND
    assert f"model 'churn' has no alias 'staging'; {known}" in capsys.readouterr().err
    assert run(populated, "verify", "churn", "9") == EXIT_NOT_FOUND
    assert f"has no version v9; {known}" in capsys.readouterr().err
    assert run(populated, "alias", "churn", "candidate", "v3") == EXIT_NOT_FOUND
    assert f"has no version v3; {known}" in capsys.readouterr().err
    assert run(populated, "alias", "churn", "candidate", "--delete") == EXIT_NOT_FOUND
    assert f"has no alias 'candidate'; {known}" in capsys.readouterr().err


def test_unfinished_version_says_why_it_is_missing(
    populated: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    populated.storage.create("churn/v3/.claim", b"{}")
    populated.set_alias("churn", "candidate", "v2")
    Path(populated.storage.path("churn/v2/model.skops")).write_bytes(b"longer")
    assert run(populated, "show", "churn", "v3") == EXIT_NOT_FOUND
    err = capsys.readouterr().err
    assert "model 'churn' version v3 is incomplete: no metadata.json" in err
    assert err.endswith("; versions: v1 (aliases: candidate -> v2, production -> v1)\n")
    assert run(populated, "show", "churn", "candidate") == EXIT_NOT_FOUND
    assert "version v2 (alias candidate points at it) is corrupt" in capsys.readouterr().err


def test_many_versions_are_listed_newest_first_twenty(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    for number in range(1, 23):
        registry.publish("churn", str(number).encode(), metadata_body())
    assert run(registry, "show", "churn", "v30") == EXIT_NOT_FOUND
    err = capsys.readouterr().err
    assert err.endswith(
        "versions: ..., v3, v4, " + ", ".join(f"v{n}" for n in range(5, 23)) + " (22 in all)\n"
    )


def test_unknown_model_lists_the_models(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(registry, "show", "churn") == EXIT_NOT_FOUND
    assert f"model 'churn' not found in {registry.uri}; the registry has no models" in (
        capsys.readouterr().err
    )
    for name in ["iris", "churn", *(f"m{n:02}" for n in range(25))]:
        registry.publish(name, b"x", metadata_body())
    for argv in (
        ["show", "chrun"],
        ["show", "chrun", "v1"],
        ["list", "chrun"],
        ["verify", "chrun"],
        ["alias", "chrun", "production", "v1"],
    ):
        assert run(registry, *argv) == EXIT_NOT_FOUND, argv
        err = capsys.readouterr().err
        assert f"model 'chrun' not found in {registry.uri}; models: churn, iris, m00, " in err
        assert ", m17, ... (27 in all)\n" in err


def test_global_flags_go_before_or_after_the_command(
    populated: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As with kubectl and helm: ``model-registry list --registry-uri R`` works too."""
    outputs = []
    for argv in (
        ["--registry-uri", populated.uri, "-o", "json", "list", "churn"],
        ["list", "churn", "--registry-uri", populated.uri, "-o", "json"],
        ["-o", "json", "list", "--registry-uri", populated.uri, "churn"],
        # Given twice, the one after the command wins.
        [
            "--registry-uri",
            str(tmp_path / "elsewhere"),
            "list",
            "churn",
            "--registry-uri",
            populated.uri,
            "--output",
            "json",
        ],
    ):
        assert main(argv) == EXIT_OK, argv
        outputs.append(orjson.loads(capsys.readouterr().out))
    assert all(o == outputs[0] for o in outputs)
    assert [v["version"] for v in outputs[0]["versions"]] == ["v1", "v2"]
