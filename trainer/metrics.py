"""Trainer metrics pushed to a Prometheus Pushgateway at the end of a run.

A batch job's counter cannot live in the job, so ``trainer_runs_total`` is carried forward: the
current values are read back from the Pushgateway, incremented, and pushed again with
``pushadd`` (POST), which replaces only the metric names pushed. A failed run therefore leaves
``trainer_last_success_timestamp_seconds`` as it was, so staleness alerts see the last success.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, pushadd_to_gateway
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

Outcome = str  # registered | rejected | failed


def _previous_runs(url: str, job: str, model_name: str, timeout: float) -> dict[str, float]:
    with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=timeout) as response:  # noqa: S310 (URL from settings)
        text = response.read().decode()
    runs: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "trainer_runs":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "trainer_runs_total"
                and labels.get("job") == job
                and labels.get("model_name") == model_name
            ):
                runs[labels.get("outcome", "")] = sample.value
    return runs


def push_trainer_metrics(
    url: str,
    *,
    job: str,
    model_name: str,
    outcome: Outcome,
    version: str | None = None,
    scores: Mapping[str, float] | None = None,
    timeout: float = 10.0,
) -> bool:
    """Push this run's metrics; returns False (and logs why) when the Pushgateway fails."""
    try:
        previous = _previous_runs(url, job, model_name, timeout)
    except OSError as error:
        log.warning("cannot read previous run counts from %s: %s; counting from 0", url, error)
        previous = {}
    registry = CollectorRegistry()
    runs = Counter(
        "trainer_runs_total",
        "Trainer runs by outcome (registered, rejected, failed).",
        ["model_name", "outcome"],
        registry=registry,
    )
    for name, value in previous.items():
        if name:
            runs.labels(model_name, name).inc(value)
    runs.labels(model_name, outcome).inc()
    if outcome == "registered":
        Gauge(
            "trainer_last_success_timestamp_seconds",
            "Unix time of the last run that registered a model.",
            ["model_name"],
            registry=registry,
        ).labels(model_name).set(time.time())
        score = Gauge(
            "trainer_model_score",
            "Held-out score of the last registered version, per metric.",
            ["model_name", "model_version", "metric"],
            registry=registry,
        )
        for metric, value in (scores or {}).items():
            score.labels(model_name, version or "", metric).set(value)
    try:
        pushadd_to_gateway(
            url,
            job=job,
            registry=registry,
            grouping_key={"model_name": model_name},
            timeout=timeout,
        )
    except OSError as error:
        log.error("pushing metrics to %s failed: %s", url, error)
        return False
    log.info("pushed trainer metrics to %s (outcome=%s)", url, outcome)
    return True
