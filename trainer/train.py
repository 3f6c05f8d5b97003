"""One training run: load, validate, fit, evaluate, gate, register."""

from __future__ import annotations

import logging
import platform
import subprocess
import time
from dataclasses import dataclass, field, replace
from importlib import metadata as importlib_metadata
from typing import Any, Literal

import numpy as np
import pandas as pd
import sklearn
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from model_registry import ModelMetadata, NotFound, Registry, artifacts
from model_registry.metadata import FeatureSpec
from model_registry.values import edge_columns, frame_of, numeric_limits
from trainer import data as data_mod
from trainer import onnx_export
from trainer.errors import ConfigError
from trainer.evaluate import HIGHER_IS_BETTER, default_primary_metric, evaluate
from trainer.gate import Basis, GateDecision, decide
from trainer.pipeline import build_pipeline, estimator_params, parse_params, resolve_estimator
from trainer.reference import feature_schema, reference
from trainer.settings import TrainerSettings

log = logging.getLogger(__name__)

PRODUCTION = "production"
CHECK_TRAINING_ROWS = 1000
"""Training rows the ONNX model is checked on, besides every held-out row."""
PACKAGE = "model-serving"


@dataclass
class RunResult:
    """What a run did: registered or rejected, with the numbers behind it."""

    outcome: Literal["registered", "rejected"]
    model_name: str
    metrics: dict[str, float]
    gate: GateDecision
    version: str | None = None
    promoted: bool = False
    metadata: ModelMetadata | None = None
    uri: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """What the user should look at (a feature that looks like an id), also logged."""
    dropped: list[str] = field(default_factory=list)
    """Columns of the data left out of the features."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "model_name": self.model_name,
            "version": self.version,
            "uri": self.uri,
            "promoted": self.promoted,
            "metrics": self.metrics,
            "gate": self.gate.as_dict(),
            "dropped_columns": self.dropped,
            "warnings": self.warnings,
            "timings_seconds": self.timings,
        }


def package_version() -> str:
    """This project's installed version."""
    try:
        return importlib_metadata.version(PACKAGE)
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


def git_sha() -> str | None:
    """HEAD of the git checkout the trainer runs from, if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 (git from PATH, read-only)
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def step(self, name: str) -> _Step:
        return _Step(self, name)


class _Step:
    def __init__(self, timer: _Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.timings[self.name] = round(time.perf_counter() - self.start, 4)


@dataclass(frozen=True)
class _Fitted:
    """A fitted candidate and the data it was fitted and scored on."""

    prepared: data_mod.PreparedData
    dataset: data_mod.Dataset
    pipeline: Pipeline
    estimator: str
    params: dict[str, Any]
    metric: str
    scores: dict[str, float]
    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def _load(settings: TrainerSettings) -> data_mod.Dataset:
    if settings.sample:
        log.info("loading bundled sample %s", settings.sample)
        dataset = data_mod.load_sample(settings.sample)
    else:
        if not (settings.data_uri and settings.target):
            raise ConfigError("--data-uri and --target are both required")
        log.info("loading %s", settings.data_uri)
        dataset = data_mod.load_uri(settings.data_uri, settings.target, settings.data_format)
    log.info(
        "loaded %d rows x %d columns (sha256 %s)",
        len(dataset.frame),
        dataset.frame.shape[1],
        dataset.data_sha256[:12],
    )
    return dataset


def _fit(settings: TrainerSettings, dataset: data_mod.Dataset, timer: _Timer) -> _Fitted:
    with timer.step("validate"):
        prepared = data_mod.prepare(
            dataset,
            task=settings.task,
            min_rows=settings.min_rows,
            max_missing_fraction=settings.max_missing_fraction,
            max_categories=settings.max_categories,
            test_size=settings.test_size,
            drop=settings.drop,
            features=settings.features,
        )
    estimator = resolve_estimator(prepared.task, settings.estimator)
    params = parse_params(settings.param)
    n_classes = len(prepared.classes) if prepared.classes else None
    metric = settings.primary_metric or default_primary_metric(prepared.task, n_classes)
    if metric not in HIGHER_IS_BETTER:
        raise ConfigError(f"unknown --primary-metric {metric!r}; one of {sorted(HIGHER_IS_BETTER)}")
    x_train, x_test, y_train, y_test = train_test_split(
        prepared.features,
        prepared.target,
        test_size=settings.test_size,
        random_state=settings.seed,
        stratify=prepared.target if prepared.task == "classification" else None,
    )
    pipeline = build_pipeline(
        task=prepared.task,
        estimator=estimator,
        numeric=prepared.numeric,
        categorical=prepared.categorical,
        params=params,
        seed=settings.seed,
    )
    log.info(
        "fitting %s (%s) on %d rows x %d features (%d numeric, %d categorical)",
        estimator,
        prepared.task,
        len(x_train),
        x_train.shape[1],
        len(prepared.numeric),
        len(prepared.categorical),
    )
    with timer.step("fit"):
        try:
            pipeline.fit(x_train, y_train)
        except ValueError as error:
            if type(error).__name__ == "InvalidParameterError":
                raise ConfigError(f"invalid --param for {estimator}: {error}") from error
            raise
    with timer.step("evaluate"):
        scores = evaluate(prepared.task, pipeline, x_test, y_test, prepared.classes)
    if metric not in scores:
        raise ConfigError(f"--primary-metric {metric} is not defined here; got {sorted(scores)}")
    log.info("held-out %s", " ".join(f"{k}={v:.4f}" for k, v in sorted(scores.items())))
    return _Fitted(
        prepared,
        dataset,
        pipeline,
        estimator,
        params,
        metric,
        scores,
        x_train,
        x_test,
        y_train,
        y_test,
    )


def _champion_score(
    registry: Registry, model_name: str, fitted: _Fitted, *, allow_pickle: bool
) -> tuple[float | None, str | None, Basis]:
    """Score of the production version: on this run's held-out rows when it can take them."""
    try:
        champion_meta, champion = registry.load_model(
            model_name, PRODUCTION, allow_pickle=allow_pickle
        )
    except NotFound:
        return None, None, "no-champion"
    version, metric, prepared = champion_meta.version, fitted.metric, fitted.prepared
    same_schema = champion_meta.task == prepared.task and champion_meta.feature_names == list(
        prepared.features.columns
    )
    if same_schema:
        try:
            scores = evaluate(
                prepared.task, champion, fitted.x_test, fitted.y_test, prepared.classes
            )
        except ValueError as error:  # e.g. the champion knows other classes
            log.warning("cannot score production %s on this data (%s)", version, error)
        else:
            if metric in scores:
                return scores[metric], version, "same-holdout"
    recorded = champion_meta.metrics.get(metric)
    if recorded is None:
        raise ConfigError(
            f"production {version} has no recorded {metric!r} and cannot be scored on this "
            "data; pick another --primary-metric, or --force"
        )
    log.info("comparing with production %s's recorded %s (schemas differ)", version, metric)
    return recorded, version, "recorded-metrics"


def _gate(
    settings: TrainerSettings, registry: Registry, model_name: str, fitted: _Fitted
) -> GateDecision:
    champion, champion_version, basis = _champion_score(
        registry, model_name, fitted, allow_pickle=settings.allow_pickle
    )
    gate = decide(
        metric=fitted.metric,
        higher_is_better=HIGHER_IS_BETTER[fitted.metric],
        candidate=fitted.scores[fitted.metric],
        champion=champion,
        champion_version=champion_version,
        tolerance=settings.tolerance,
        basis=basis,
    )
    if gate.accepted:
        log.info("champion gate passed: %s", gate.reason)
    elif settings.force:
        log.warning(
            "champion gate rejected the model; registering anyway (--force): %s", gate.reason
        )
        gate = replace(gate, forced=True)
    else:
        log.warning(
            "champion gate rejected the model: %s; nothing registered. %s", gate.reason, gate.remedy
        )
    return gate


def _serialize(settings: TrainerSettings, fitted: _Fitted) -> bytes:
    """The model file, after checking that it loads back and predicts the same."""
    blob = artifacts.dump_model(fitted.pipeline, settings.artifact_format)
    reloaded = artifacts.load_model(
        blob, settings.artifact_format, allow_pickle=settings.allow_pickle
    )
    probe = fitted.x_test.head(256)
    expected, got = fitted.pipeline.predict(probe), reloaded.predict(probe)
    if got.dtype.kind == "f":
        # A forest with n_jobs > 1 sums its trees on several threads in no fixed order, so the
        # same model can differ from itself in the last bits of a regression output.
        same = bool(np.allclose(got, expected, rtol=1e-9, atol=0.0))
    else:
        same = bool(np.array_equal(got, expected))
    if not same:
        raise RuntimeError("the saved model predicts differently from the fitted one")
    return blob


def _export_onnx(fitted: _Fitted) -> onnx_export.OnnxExport:
    """The pipeline compiled to ONNX and checked on the held-out rows, up to 1,000 training
    rows and edge rows as a client sends them (``model_registry.values.edge_columns``: missing
    numbers and categories as ``null``, NaN and ``""``, unseen categories, the range's ends),
    read as the server's codec reads them; without ONNX (and the reason, logged) when it
    cannot convert or disagrees."""
    prepared = fitted.prepared
    features = [FeatureSpec(**entry) for entry in feature_schema(prepared, fitted.x_train)]
    limits = numeric_limits(fitted.pipeline, prepared.numeric)
    edges = frame_of(edge_columns(features, limits), prepared.categorical)
    rows = pd.concat([fitted.x_test, fitted.x_train.head(CHECK_TRAINING_ROWS)])
    compiled = onnx_export.export(
        fitted.pipeline, rows, prepared.numeric, prepared.categorical, edges
    )
    if compiled.blob is None:
        log.warning("no ONNX model for this version: %s", compiled.reason)
    else:
        check = compiled.info["check"]
        log.info(
            "ONNX model checked on %d rows and %d edge rows: labels identical, largest "
            "difference %.3g",
            check["rows"],
            len(edges),
            check["max_abs_difference"],
        )
    return compiled


def _metadata(
    settings: TrainerSettings, fitted: _Fitted, gate: GateDecision, started: float
) -> dict[str, Any]:
    prepared, dataset = fitted.prepared, fitted.dataset
    classes = prepared.classes
    return {
        "task": prepared.task,
        "features": feature_schema(prepared, fitted.x_train),
        "target": {
            "name": dataset.target,
            "dtype": str(prepared.target.dtype),
            "classes": (
                [c.item() if isinstance(c, np.generic) else c for c in classes]
                if classes is not None
                else None
            ),
        },
        "metrics": fitted.scores,
        "primary_metric": fitted.metric,
        "training": {
            "rows": len(fitted.x_train),
            "test_rows": len(fitted.x_test),
            "test_size": settings.test_size,
            "seed": settings.seed,
            "data_uri": dataset.data_uri,
            "data_sha256": dataset.data_sha256,
            "dropped_columns": prepared.dropped,
            "estimator": fitted.estimator,
            "params": estimator_params(fitted.pipeline),
            "param_overrides": fitted.params,
            "duration_seconds": round(time.perf_counter() - started, 3),
            "gate": gate.as_dict(),
        },
        "provenance": {
            "git_sha": settings.git_sha or git_sha(),
            "image_digest": settings.image_digest,
            "python": platform.python_version(),
            "sklearn": sklearn.__version__,
            "package_version": package_version(),
        },
        "reference": reference(prepared, fitted.x_train, fitted.y_train, settings.reference_bins),
    }


def run(settings: TrainerSettings, registry: Registry | None = None) -> RunResult:
    """Train, evaluate and (if the gate passes) register one version. Raises on failure."""
    timer = _Timer()
    started = time.perf_counter()
    model_name = settings.resolved_model_name
    registry = registry or Registry(settings.registry_uri)

    with timer.step("load"):
        dataset = _load(settings)
    fitted = _fit(settings, dataset, timer)
    with timer.step("gate"):
        gate = _gate(settings, registry, model_name, fitted)
    if not (gate.accepted or gate.forced):
        timer.timings["total"] = round(time.perf_counter() - started, 4)
        return RunResult(
            "rejected",
            model_name,
            fitted.scores,
            gate,
            timings=timer.timings,
            warnings=fitted.prepared.warnings,
            dropped=fitted.prepared.dropped,
        )

    with timer.step("serialize"):
        blob = _serialize(settings, fitted)
    with timer.step("onnx"):
        compiled = _export_onnx(fitted)
    with timer.step("profile"):
        meta = _metadata(settings, fitted, gate, started)
        meta["onnx"] = compiled.info
    log.info("registering %s in %s (%d bytes)", model_name, registry.uri, len(blob))
    with timer.step("register"):
        published = registry.publish(
            model_name,
            blob,
            meta,
            artifact_format=settings.artifact_format,
            onnx=compiled.blob,
        )
    promoted = False
    if settings.promote:
        registry.set_alias(model_name, PRODUCTION, published.version)
        promoted = True
        log.info("production -> %s", published.version)
    timer.timings["total"] = round(time.perf_counter() - started, 4)
    return RunResult(
        "registered",
        model_name,
        fitted.scores,
        gate,
        version=published.version,
        promoted=promoted,
        metadata=published,
        uri=registry.version_uri(model_name, published.version),
        timings=timer.timings,
        warnings=fitted.prepared.warnings,
        dropped=fitted.prepared.dropped,
    )
