"""What computes predictions: ONNX Runtime on the version's ``model.onnx``, or the pipeline.

``--engine auto`` (the default) uses ONNX Runtime when the version carries a checked ``model.onnx``
(its sha256 verified on read) that also agrees with the skops pipeline at load, on probe rows and on
edge rows (missing values for every feature in every form a client sends, unseen categories, range
ends), else the pipeline, with the reason logged. ``--engine onnx`` refuses to serve (not ready,
with the reason) without a usable ONNX model; ``--engine sklearn`` never uses it. ONNX Runtime gets
``--engine-threads`` intra-op threads (1: one core per worker). The pipeline gets ``n_jobs=1`` and
one BLAS/OpenMP thread (threadpoolctl), so workers never oversubscribe the pod's cores: a forest's
``n_jobs=-1`` from training would otherwise start a thread per core in every worker for every
request.

Part of loading: it knows the version's metadata and pipeline, and nothing of request
formats, transports or metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from model_registry.metadata import ModelMetadata
from model_registry.onnx_runtime import (
    ColumnsLike,
    agreement,
    disagreement,
    onnx_inputs,
    session,
    unsupported,
)
from model_registry.values import edge_columns, frame_of, numeric_limits

log = logging.getLogger(__name__)

PROBE_ROWS = 256


class EngineRefused(Exception):
    """The ONNX model cannot serve this version (the message says why)."""


@dataclass(frozen=True)
class OnnxEngine:
    """Predictions from an ONNX Runtime session, in the pipeline's output types."""

    runtime: Any
    numeric: list[str]
    categorical: list[str]
    classifier: bool

    @classmethod
    def open(cls, blob: bytes, metadata: ModelMetadata, pipeline: Any, threads: int) -> OnnxEngine:
        """A session on ``blob`` (already checked; see ``onnx_engine``)."""
        numeric = [f.name for f in metadata.features if f.kind == "numeric"]
        categorical = [f.name for f in metadata.features if f.kind != "numeric"]
        classifier = metadata.task == "classification" and hasattr(pipeline, "predict_proba")
        return cls(session(blob, threads), numeric, categorical, classifier)

    def predict(
        self, rows: ColumnsLike | np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        """Labels and, for a classifier, its probabilities (always: the caller checks them
        before answering a label, ``model_registry.values.non_finite``); a regressor's values."""
        outputs = self.runtime.run(None, onnx_inputs(rows, self.numeric, self.categorical))
        labels = np.asarray(outputs[0]).ravel()
        if not self.classifier:
            return labels.astype(np.float64), None
        return labels, np.asarray(outputs[1], dtype=np.float64)


def probe_rows(metadata: ModelMetadata, rows: int = PROBE_ROWS, seed: int = 0) -> pd.DataFrame:
    """Rows spanning each feature's training range (10% past each end), missing values where
    training had them, every known category, and one category never seen."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for feature in metadata.features:
        if feature.kind == "numeric":
            low = feature.min if feature.min is not None else 0.0
            high = feature.max if feature.max is not None else 1.0
            span = (high - low) or 1.0
            column = rng.uniform(low - 0.1 * span, high + 0.1 * span, size=rows)
            if feature.nullable:
                column[rng.random(rows) < 0.1] = np.nan
            columns[feature.name] = column
        else:
            choices = [*(feature.categories or []), "never-seen-in-training"]
            values = np.asarray(rng.choice(choices, size=rows), dtype=object)
            if feature.nullable:
                values[rng.random(rows) < 0.1] = np.nan  # as the codec hands it on
            columns[feature.name] = values
    return pd.DataFrame(columns)


def onnx_engine(blob: bytes, metadata: ModelMetadata, pipeline: Any, threads: int) -> OnnxEngine:
    """An engine for ``blob`` after checking it against ``pipeline`` (the trainer's check,
    ``model_registry.onnx_runtime.agreement``, on other rows): on probe rows across the
    training ranges, and apart on edge rows as a client sends them, read as the codec reads
    them (``model_registry.values.edge_columns``: missing numbers and categories as null, NaN
    and ``""`` for every feature, unseen categories, each numeric range's ends). A version the
    trainer checked before edge rows had missing values for every feature is checked on them
    here."""
    cannot = unsupported(pipeline)
    if cannot is not None:
        raise EngineRefused(cannot)
    try:
        engine = OnnxEngine.open(blob, metadata, pipeline, threads)
        limits = numeric_limits(pipeline, engine.numeric)
        edges = frame_of(edge_columns(metadata.features, limits, seed=1), engine.categorical)
        checks: dict[str, dict[str, Any]] = {}
        scale = None  # edge rows are held to the probe rows' scale (regressors)
        for where, rows in (("probe rows", probe_rows(metadata)), ("edge rows", edges)):
            labels, proba = engine.predict(rows)
            checks[where] = agreement(pipeline, rows, labels, proba, scale)
            scale = checks[where].get("scale")
    except Exception as error:  # a model ONNX Runtime cannot load or run
        raise EngineRefused(f"ONNX Runtime cannot run model.onnx: {error}") from error
    for where, check in checks.items():
        if not check["passed"]:
            raise EngineRefused(
                f"model.onnx disagrees with the pipeline on {where}: {disagreement(check)}"
            )
    return engine


def pin_threads(pipeline: Any) -> None:
    """One thread for the pipeline's estimator and for BLAS/OpenMP in this process."""
    from threadpoolctl import threadpool_limits

    estimator = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    if "n_jobs" in estimator.get_params(deep=False):
        estimator.set_params(n_jobs=1)
    threadpool_limits(limits=1)
