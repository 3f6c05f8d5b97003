"""Trainer metrics pushed to a real Prometheus Pushgateway on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from trainer.metrics import push_trainer_metrics

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("trainer_"):
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "instance"))
                samples[(sample.name, labels)] = sample.value
    return samples


def runs(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], model: str
) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples.items()
        if name == "trainer_runs_total" and dict(labels)["model_name"] == model
    }


def test_counts_accumulate_across_runs_and_failures_keep_last_success(pushgateway: str) -> None:
    model = "pg-accumulate"
    assert push_trainer_metrics(
        pushgateway,
        job="model-trainer",
        model_name=model,
        outcome="registered",
        version="v1",
        scores={"roc_auc": 0.97, "accuracy": 0.93},
    )
    first = scrape(pushgateway)
    success_key = (
        "trainer_last_success_timestamp_seconds",
        (("job", "model-trainer"), ("model_name", model)),
    )
    last_success = first[success_key]
    assert first[
        (
            "trainer_model_score",
            (
                ("job", "model-trainer"),
                ("metric", "roc_auc"),
                ("model_name", model),
                ("model_version", "v1"),
            ),
        )
    ] == pytest.approx(0.97)

    for outcome in ("rejected", "failed", "failed"):
        assert push_trainer_metrics(
            pushgateway, job="model-trainer", model_name=model, outcome=outcome
        )
    after = scrape(pushgateway)
    assert runs(after, model) == {"registered": 1.0, "rejected": 1.0, "failed": 2.0}
    assert after[success_key] == last_success  # failures do not reset freshness

    assert push_trainer_metrics(
        pushgateway,
        job="model-trainer",
        model_name=model,
        outcome="registered",
        version="v2",
        scores={"roc_auc": 0.98},
    )
    final = scrape(pushgateway)
    assert runs(final, model)["registered"] == 2.0
    assert final[success_key] >= last_success
    versions = {
        dict(labels).get("model_version")
        for (name, labels) in final
        if name == "trainer_model_score" and dict(labels)["model_name"] == model
    }
    assert versions == {"v2"}


def test_unreachable_pushgateway_does_not_fail_the_run() -> None:
    assert not push_trainer_metrics(
        "http://127.0.0.1:9", job="model-trainer", model_name="m", outcome="failed", timeout=2
    )


def test_trainer_cli_pushes_its_outcome(pushgateway: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "--sample",
            "diabetes",
            "--model-name",
            "pg-cli",
            "--registry-uri",
            str(tmp_path / "r"),
            "--pushgateway-url",
            pushgateway,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    samples = scrape(pushgateway)
    assert runs(samples, "pg-cli") == {"registered": 1.0}
    scores = {
        dict(labels)["metric"]: value
        for (name, labels), value in samples.items()
        if name == "trainer_model_score" and dict(labels)["model_name"] == "pg-cli"
    }
    assert set(scores) == {"rmse", "mae", "r2"}
