"""The server's Prometheus metrics (DESIGN.md, "Metrics") and the ``/metrics`` exposition.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` is set before this module is
imported, so every worker writes its values to files there and ``/metrics`` (served by any
worker) merges them all: the scrape sees every worker's counts.

Metrics are defined here only, bound to a model version by ``ModelMetrics`` and
``ExperimentMetrics``; this module knows nothing of requests, transports or how a model is
loaded (callers pass names, versions and numbers).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from model_server.worker_state import metrics_lock

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series add only noise

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
MAX_CLASS_LABELS = 50
"""Classifiers with more classes than this get no per-class prediction counter."""

REQUESTS = Counter(
    "model_server_requests_total",
    "Inference requests by protocol and HTTP status code.",
    ["model_name", "model_version", "protocol", "code"],
)
REQUESTS_SHED = Counter(
    "model_server_requests_shed_total",
    "Inference requests turned away with a 503 because the worker was at --max-concurrency "
    "(also counted in model_server_requests_total with code 503).",
    ["model_name", "model_version", "protocol"],
)
REQUEST_DURATION = Histogram(
    "model_server_request_duration_seconds",
    "Inference request latency, from the handler receiving the request to the response.",
    ["model_name", "model_version", "protocol"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_DURATION = Histogram(
    "model_server_inference_duration_seconds",
    "Time in the model's predict (and predict_proba) alone.",
    ["model_name", "model_version"],
    buckets=LATENCY_BUCKETS,
)
BATCH_ROWS = Histogram(
    "model_server_batch_rows",
    "Rows per inference request.",
    ["model_name", "model_version"],
    buckets=ROW_BUCKETS,
)
PREDICTIONS = Counter(
    "model_server_predictions_total",
    "Predictions by predicted class (classifiers with at most 50 classes).",
    ["model_name", "model_version", "predicted_class"],
)
MISSING_VALUES = Counter(
    "model_server_missing_values_total",
    'Missing values in answered requests (null, NaN, or "" for a text feature), each imputed '
    "as in training, by feature: whether or not training had missing values for it.",
    ["model_name", "model_version", "feature"],
)
FEEDBACK = Counter(
    "model_server_feedback_total",
    "Ground truth received for earlier predictions: correct/incorrect (classifiers) or observed.",
    ["model_name", "model_version", "outcome"],
)
FEEDBACK_ABS_ERROR = Histogram(
    "model_server_feedback_abs_error",
    "Absolute error of regressor predictions, from feedback.",
    ["model_name", "model_version"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
)
FEATURE_DRIFT = Gauge(
    "model_server_feature_drift_score",
    "PSI of recent inputs (and of predictions, feature=__prediction__) against training data.",
    ["model_name", "model_version", "feature"],
    multiprocess_mode="max",
)
MODEL_INFO = Gauge(
    "model_server_model_info",
    "The model version this server serves (value 1).",
    ["model_name", "model_version", "revision", "sklearn_version", "engine"],
    multiprocess_mode="max",
)
EXPERIMENT_SHARE = Gauge(
    "model_server_experiment_treatment_share",
    "The running experiment: its versions, and the share of users (0..1) assigned to the "
    "treatment. Alerts and the rollout tool read the configured split from it.",
    ["model_name", "experiment", "control_version", "treatment_version"],
    multiprocess_mode="max",
)
EXPERIMENT_EXPOSURES = Counter(
    "model_server_experiment_exposures_total",
    "Inference requests assigned by user key and answered (2xx), by variant.",
    ["model_name", "model_version", "experiment", "variant"],
)
EXPERIMENT_UNASSIGNED = Counter(
    "model_server_experiment_unassigned_total",
    "Inference requests without a user key: answered by the control, or refused.",
    ["model_name", "experiment", "outcome"],
)
EXPERIMENT_OUTCOMES = Counter(
    "model_server_experiment_outcomes_total",
    "Conversion outcomes reported through feedback (success or failure), by variant.",
    ["model_name", "model_version", "experiment", "variant", "outcome"],
)
EXPERIMENT_VALUES = Counter(
    "model_server_experiment_value_count_total",
    "Numeric outcomes reported through feedback, by variant.",
    ["model_name", "model_version", "experiment", "variant"],
)
EXPERIMENT_VALUE_SUM = Counter(
    "model_server_experiment_value_sum_total",
    "Sum of the numeric outcomes (non-negative) reported through feedback.",
    ["model_name", "model_version", "experiment", "variant"],
)
EXPERIMENT_VALUE_SQUARES = Counter(
    "model_server_experiment_value_squares_total",
    "Sum of the squared numeric outcomes: with the count and sum, the variance a t-test needs.",
    ["model_name", "model_version", "experiment", "variant"],
)

PREDICTION_LOG_RECORDS = Counter(
    "model_server_prediction_log_records_total",
    "Records written to the prediction log (kind: predictions or outcomes).",
    ["model_name", "kind"],
)
PREDICTION_LOG_DROPPED = Counter(
    "model_server_prediction_log_dropped_total",
    "Records the prediction log dropped: buffer_full (the sink was slow or down and the "
    "buffer at --prediction-log-max-buffered), write_failed (a payload that could not be "
    "encoded, or still unwritten at a stop: counted as the process exits, see the log).",
    ["model_name", "kind", "reason"],
)
PREDICTION_LOG_WRITE_ERRORS = Counter(
    "model_server_prediction_log_write_errors_total",
    "Failed writes of a prediction log file (its records are held and retried).",
    ["model_name", "kind"],
)


class PredictionLogMetrics:
    """The prediction log writer's events (``prediction_log.writer.LogEvents``) as metrics."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name

    def started(self) -> None:
        """At the process's first record, not before: a process that records nothing (the
        parent of --workers N without gRPC traffic) writes no metric file."""
        model_name = self.model_name
        for kind in ("predictions", "outcomes"):  # at 0 from the start: rate() sees the first
            PREDICTION_LOG_RECORDS.labels(model_name, kind)
            PREDICTION_LOG_WRITE_ERRORS.labels(model_name, kind)
            for reason in ("buffer_full", "write_failed"):
                PREDICTION_LOG_DROPPED.labels(model_name, kind, reason)

    def written(self, kind: str, records: int) -> None:
        PREDICTION_LOG_RECORDS.labels(self.model_name, kind).inc(records)

    def dropped(self, kind: str, reason: str, records: int) -> None:
        PREDICTION_LOG_DROPPED.labels(self.model_name, kind, reason).inc(records)

    def write_failed(self, kind: str) -> None:
        PREDICTION_LOG_WRITE_ERRORS.labels(self.model_name, kind).inc()


class ModelMetrics:
    """Pre-bound metric children for one served model version (no label lookups per request)."""

    def __init__(
        self,
        model_name: str,
        model_version: str,
        classes: Iterable[Any] | None,
        features: Iterable[str] = (),
    ) -> None:
        self.model_name, self.model_version = model_name, model_version
        self._durations = {  # gRPC's child is made on its first request, when it is on
            p: REQUEST_DURATION.labels(model_name, model_version, p) for p in ("v1", "v2")
        }
        self._requests: dict[tuple[str, str], Any] = {}
        self.inference = INFERENCE_DURATION.labels(model_name, model_version)
        self.rows = BATCH_ROWS.labels(model_name, model_version)
        class_list = list(classes) if classes is not None else []
        self._classes = (
            {str(c): PREDICTIONS.labels(model_name, model_version, str(c)) for c in class_list}
            if 0 < len(class_list) <= MAX_CLASS_LABELS
            else {}
        )
        self._missing = {  # every feature at 0 from the start: the model's names only
            str(f): MISSING_VALUES.labels(model_name, model_version, str(f)) for f in features
        }

    def missing(self, counts: Mapping[str, int]) -> None:
        """Count the missing values of one answered request, by feature."""
        for feature, count in counts.items():
            child = self._missing.get(feature)
            if child is not None:
                child.inc(count)

    def feedback(self, correct: int, incorrect: int, abs_errors: list[float]) -> None:
        """Count feedback outcomes; observe regressors' absolute errors."""
        name, version = self.model_name, self.model_version
        if correct:
            FEEDBACK.labels(name, version, "correct").inc(correct)
        if incorrect:
            FEEDBACK.labels(name, version, "incorrect").inc(incorrect)
        if abs_errors:
            FEEDBACK.labels(name, version, "observed").inc(len(abs_errors))
            histogram = FEEDBACK_ABS_ERROR.labels(name, version)
            for error in abs_errors:
                histogram.observe(error)

    def drift(self, scores: dict[str, float]) -> None:
        """Publish drift scores (PSI) per feature."""
        for feature, value in scores.items():
            FEATURE_DRIFT.labels(self.model_name, self.model_version, feature).set(value)

    def request(self, protocol: str, code: int | str, seconds: float | None) -> None:
        """Count one inference request and its latency (``None``: refused before handling)."""
        key = (protocol, str(code))
        counter = self._requests.get(key)
        if counter is None:
            counter = REQUESTS.labels(self.model_name, self.model_version, protocol, str(code))
            self._requests[key] = counter
        counter.inc()
        if seconds is None:
            return
        duration = self._durations.get(protocol)
        if duration is None:
            duration = REQUEST_DURATION.labels(self.model_name, self.model_version, protocol)
            self._durations[protocol] = duration
        duration.observe(seconds)

    def shed(self, protocol: str) -> None:
        """Count one inference request turned away at --max-concurrency (a 503)."""
        self.request(protocol, 503, None)
        REQUESTS_SHED.labels(self.model_name, self.model_version, protocol).inc()

    def predicted(self, labels: np.ndarray[Any, Any], seconds: float) -> None:
        """Record one batch's inference time, size and predicted classes."""
        self.inference.observe(seconds)
        self.rows.observe(len(labels))
        if self._classes and len(labels) == 1:
            child = self._classes.get(str(labels[0]))
            if child is not None:
                child.inc()
        elif self._classes:
            # Counter, not np.unique: labels are often strings, which np.unique sorts (5x slower
            # for 1,000 labels).
            for value, count in collections.Counter(labels.tolist()).items():
                child = self._classes.get(str(value))
                if child is not None:
                    child.inc(count)


def set_model_info(
    model_name: str, model_version: str, revision: str, sklearn: str, engine: str
) -> None:
    """Publish the served version and the engine computing it (the ``_info`` gauge, value 1)."""
    MODEL_INFO.labels(model_name, model_version, revision, sklearn, engine).set(1)


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric: merged across workers in multiprocess mode."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        with metrics_lock(Path(directory), exclusive=False):  # not while a worker is archived
            return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class ExperimentMetrics:
    """Pre-bound experiment counters for one variant's version."""

    def __init__(self, model_name: str, model_version: str, experiment: str, variant: str) -> None:
        labels = (model_name, model_version, experiment, variant)
        self.exposures = EXPERIMENT_EXPOSURES.labels(*labels)
        self.successes = EXPERIMENT_OUTCOMES.labels(*labels, "success")
        self.failures = EXPERIMENT_OUTCOMES.labels(*labels, "failure")
        self.values = EXPERIMENT_VALUES.labels(*labels)
        self.value_sum = EXPERIMENT_VALUE_SUM.labels(*labels)
        self.value_squares = EXPERIMENT_VALUE_SQUARES.labels(*labels)

    def outcomes(self, successes: int, failures: int, values: list[float]) -> None:
        """Count reported outcomes (each counter only when it moves)."""
        if successes:
            self.successes.inc(successes)
        if failures:
            self.failures.inc(failures)
        if values:
            self.values.inc(len(values))
            self.value_sum.inc(sum(values))
            self.value_squares.inc(sum(v * v for v in values))


def set_experiment(
    model_name: str, experiment: str, control: str, treatment: str, percent: float
) -> None:
    """Publish the running experiment and its configured treatment share."""
    EXPERIMENT_SHARE.labels(model_name, experiment, control, treatment).set(percent / 100)


def count_unassigned(model_name: str, experiment: str, refused: bool) -> None:
    """Count one inference request that carried no user key."""
    EXPERIMENT_UNASSIGNED.labels(model_name, experiment, "refused" if refused else "control").inc()
