"""The contract of a registered ``model.onnx``: its inputs, and how it is run.

One input per feature, shaped ``[rows, 1]``: numbers as float64, categories as strings with
``""`` for a missing value (ONNX string tensors have no NaN; ``model_registry.values`` says what
a missing value is everywhere else). Outputs: the labels and the class
probabilities (classifiers, no ZipMap), or the predictions (regressors). The trainer writes
graphs to this contract (``trainer.onnx_export``); the server feeds them by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from model_registry.values import MISSING_CATEGORY, non_finite, pipeline_outputs

__all__ = [
    "MISSING_CATEGORY",
    "agreement",
    "checked_on",
    "disagreement",
    "largest_size",
    "onnx_inputs",
    "session",
    "unsupported",
]

PROBABILITY_TOLERANCE = 1e-4
"""Largest difference allowed between a probability from ONNX and from the pipeline."""
REGRESSION_TOLERANCE = 1e-5
"""Largest difference allowed for a regression output, relative to the output itself or to the
largest output on ordinary rows (``scale``), whichever is larger: edge rows, whose outputs can
reach 1e38, are held to the ordinary rows' scale, not to their own largest."""


class ColumnsLike(Protocol):
    """Rows by feature name: a DataFrame, or the server's ``schema.Columns``."""

    def __getitem__(self, name: str, /) -> Any: ...


def _category(value: Any) -> str:
    if type(value) is str:
        return value
    return MISSING_CATEGORY if pd.isna(value) else str(value)


def onnx_inputs(
    rows: ColumnsLike | np.ndarray[Any, Any], numeric: Sequence[str], categorical: Sequence[str]
) -> dict[str, np.ndarray[Any, Any]]:
    """The graph's inputs for ``rows``: columns by feature name, or an all-numeric matrix in
    feature order."""
    if isinstance(rows, np.ndarray):
        # Views, not copies (contiguous when the matrix is column-major, as the codec makes
        # it): ONNX Runtime takes them as they are.
        matrix = np.asarray(rows, dtype=np.float64)
        return {name: matrix[:, i : i + 1] for i, name in enumerate(numeric)}
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    for name in numeric:
        feeds[name] = np.asarray(rows[name], dtype=np.float64).reshape(-1, 1)
    for name in categorical:
        text = [_category(v) for v in np.asarray(rows[name], dtype=object).tolist()]
        feeds[name] = np.array(text, dtype=object).reshape(-1, 1)
    return feeds


def unsupported(pipeline: Any) -> str | None:
    """Why ONNX Runtime cannot compute exactly what ``pipeline`` computes, or None.

    scikit-learn's HistGradientBoosting compares float64 values with float64 thresholds.
    ONNX Runtime's tree ensembles take float32 thresholds, or double ones only with float
    outputs, which it refuses ("Type (tensor(double)) of output arg ... does not match expected
    type (tensor(float))", onnxruntime 1.32): a value within float32 rounding of a threshold then
    takes the other branch. The engines' differential test found 5 such rows in 600,000 random
    ones (probabilities up to 0.04 apart, labels flipped), none of them in the check rows. So
    these models are served by the pipeline. Random forests cast their input to float32
    themselves, as the graph does: those agree."""
    estimator = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    if type(estimator).__name__.startswith("HistGradientBoosting"):
        return (
            "gradient boosting (HistGradientBoosting) compares float64 values with float64 "
            "split thresholds, and ONNX Runtime's tree ensembles compare in float32: answers "
            "would differ for values within float32 rounding of a threshold"
        )
    return None


def session(blob: bytes, threads: int = 1) -> Any:
    """An ONNX Runtime session on the CPU with ``threads`` intra-op threads (one inter-op)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(blob, options, providers=["CPUExecutionProvider"])


def agreement(
    pipeline: Any,
    rows: pd.DataFrame,
    labels: np.ndarray[Any, Any],
    probabilities: np.ndarray[Any, Any] | None,
    scale: float | None = None,
) -> dict[str, Any]:
    """How the ONNX model's ``labels`` (or values) and ``probabilities`` for ``rows`` agree with
    ``pipeline`` as the server's sklearn engine runs it (``values.pipeline_outputs``): every label
    identical, probabilities within ``PROBABILITY_TOLERANCE``, each regression output within
    ``REGRESSION_TOLERANCE`` of its size or of ``scale`` (by default the largest output here, at
    least 1; for edge rows, the ordinary rows' ``scale`` from their check), and none NaN or
    infinite on either side. The trainer records this check in metadata; the server repeats it
    at load."""
    labels = np.asarray(labels).ravel()
    classifier = probabilities is not None
    regression = not classifier
    over = 0
    expected_labels, expected_proba = pipeline_outputs(pipeline, rows, classifier)
    if probabilities is not None:
        assert expected_proba is not None
        flipped = int(np.sum(labels.astype(str) != expected_labels.astype(str)))
        difference = float(np.max(np.abs(probabilities - expected_proba)))
        tolerance = PROBABILITY_TOLERANCE
    else:
        flipped = 0
        gaps = np.abs(labels.astype(np.float64) - expected_labels)
        difference = float(np.max(gaps))
        if scale is None:
            scale = largest_size(expected_labels)
        allowed = REGRESSION_TOLERANCE * np.maximum(scale, np.abs(expected_labels))
        over = int(np.count_nonzero(~(gaps <= allowed)))  # NaN is over
        tolerance = REGRESSION_TOLERANCE * scale
    broken = non_finite(labels, probabilities, classifier) + non_finite(
        expected_labels, expected_proba, classifier
    )
    check: dict[str, Any] = {
        "rows": len(rows),
        "labels_differing": flipped,
        "max_abs_difference": difference if math.isfinite(difference) else None,
        "tolerance": tolerance,
        "passed": flipped == 0
        and not broken
        and (over == 0 if regression else difference <= tolerance),
    }
    if regression:
        check["values_over_tolerance"] = over
        check["scale"] = scale
    if broken:
        check["non_finite_outputs"] = broken
    return check


def largest_size(values: np.ndarray[Any, Any]) -> float:
    """The largest finite magnitude among ``values``, at least 1."""
    finite = np.abs(values[np.isfinite(values)])
    return max(1.0, float(np.max(finite))) if finite.size else 1.0


def checked_on(check: dict[str, Any]) -> str:
    """What a passed check (metadata's ``onnx.check``) covered, in words: ``checked on 569 rows
    and 256 edge rows, largest difference 3.33e-16``."""
    edge_rows = (check.get("edges") or {}).get("rows")
    edges = f" and {edge_rows} edge rows" if edge_rows else ""
    return (
        f"checked on {check.get('rows')} rows{edges}, largest difference "
        f"{check.get('max_abs_difference') or 0:.3g}"
    )


def disagreement(check: dict[str, Any]) -> str:
    """Why a failed ``agreement`` check failed, in words."""
    if check.get("non_finite_outputs"):
        return f"{check['non_finite_outputs']} outputs are NaN or infinite"
    if check.get("values_over_tolerance"):
        return (
            f"{check['values_over_tolerance']} of {check['rows']} values differ by more than "
            f"{REGRESSION_TOLERANCE:g} of their size (largest difference "
            f"{check['max_abs_difference']:.3g})"
        )
    if check["labels_differing"]:
        return f"{check['labels_differing']} of {check['rows']} labels differ"
    return (
        f"largest difference {check['max_abs_difference']:.3g} is over the tolerance "
        f"{check['tolerance']:.3g}"
    )
