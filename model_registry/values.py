"""What a feature value means, and what a registered pipeline answers: one definition for the
trainer, the server's codec and both engines.

Missing values, in every encoding a client can use:

- a missing **number** is ``null`` (V1 and V2 JSON) or NaN (FP32/FP64 binary tensor data and
  gRPC contents, which have no null);
- a missing **category** is ``null`` (JSON) or ``""``, the empty string: a BYTES tensor (binary
  data or gRPC) has no null, so ``""`` is the only way to send one there, and it means missing
  in JSON too. No category can be named ``""``: the trainer reads ``""`` in training data as
  missing.

Either is accepted for every feature and imputed as training imputed it: the pipeline has an
imputer for every feature (the median for a number, the most frequent category for a text
feature), whether or not training had missing values for it, and the ONNX graph computes the same
(``trainer.onnx_export``). ``nullable`` in metadata records whether training had any; it does not
limit what a client may send.
``category_array`` is the one place a category column is normalised; the codec, the engines'
load-time check and the trainer's ONNX check all go through it.

Numbers must be finite and within the range the model computes with (``numeric_limits``): after
the pipeline's standardisation, within float32's range. A random forest compares float32 values
(scikit-learn casts its input to float32), and the ONNX graph casts to float32 before every tree
ensemble, gradient boosting included, so a value past that range overflows to infinity; no
real measurement is 3.4e38 standard deviations from its training mean, so the same limit holds
for every estimator. The server refuses values outside it (400, naming the feature and the
range) before either engine runs.

Outputs: ``pipeline_outputs`` runs a pipeline as the server's sklearn engine does, a
classifier's labels taken from its checked probabilities; ``non_finite`` says when an output
holds NaN or infinity, which is never answered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

MISSING_CATEGORY = ""
"""A missing category, where a missing value cannot be null (BYTES tensors, the ONNX graph)."""

FLOAT32_MAX = float(np.finfo(np.float32).max)
LIMIT = FLOAT32_MAX * (1 - 1e-6)
"""How far from its training mean, in training standard deviations, a number may be: float32's
range, less a margin for the rounding of ``(x - mean) / scale``."""
FLOAT64_MAX = float(np.finfo(np.float64).max)


def is_missing(value: Any) -> bool:
    """``None``, a float NaN (any float type) or ``""``."""
    if value is None or (type(value) is str and value == MISSING_CATEGORY):
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def category_array(values: Iterable[Any]) -> np.ndarray[Any, Any]:
    """A category column as the pipeline takes it: an object array of strings with NaN for each
    missing value (``None``, NaN or ``""``), as in the training data (the pipeline's imputer
    reads NaN as missing; ``None`` or ``""`` would be one-hot encoded as an unknown category)."""
    return np.array([np.nan if is_missing(v) else v for v in values], dtype=object)


def numeric_limits(pipeline: Any, numeric: Sequence[str]) -> dict[str, tuple[float, float]]:
    """For each numeric feature, the closed range of values the model computes with: those
    within ``LIMIT`` training standard deviations of the training mean (the pipeline's
    ``StandardScaler``), or within ±``LIMIT`` for a pipeline without one."""
    limits = dict.fromkeys(numeric, (-LIMIT, LIMIT))
    try:
        prep = pipeline.named_steps["prep"]
        columns = next(cols for name, _, cols in prep.transformers_ if name == "numeric")
        scaler = prep.named_transformers_["numeric"].named_steps["scale"]
        means, scales = np.asarray(scaler.mean_), np.asarray(scaler.scale_)
    except (AttributeError, KeyError, StopIteration, TypeError):
        return limits
    with np.errstate(over="ignore"):
        for name, mean, scale in zip(columns, means, scales, strict=True):
            low = max(float(mean - LIMIT * scale), -FLOAT64_MAX)
            high = min(float(mean + LIMIT * scale), FLOAT64_MAX)
            limits[str(name)] = (low, high)
    return limits


def edge_columns(
    features: Sequence[Any],
    limits: Mapping[str, tuple[float, float]],
    rows: int = 256,
    seed: int = 0,
) -> dict[str, list[Any]]:
    """Values a client may send, by feature (``metadata.features``): numbers across each
    feature's training range and 10% past it, its computable range's two ends and values near
    them, zero, whole numbers, and both ``null`` and NaN; every known category, one never seen,
    and both ``null`` and ``""``. Missing values for every feature, whether or not training had
    any (each is imputed, as training would), and a first row missing every feature. Used to
    check an ONNX model against its pipeline where they are most likely to part."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {}
    for feature in features:
        if feature.kind == "numeric":
            low = feature.min if feature.min is not None else 0.0
            high = feature.max if feature.max is not None else 1.0
            lowest, highest = limits.get(feature.name, (-LIMIT, LIMIT))
            with np.errstate(over="ignore"):  # a training range wider than float64's
                margin = 0.1 * ((high - low) or 1.0)
                start, stop = max(low - margin, lowest), min(high + margin, highest)
            if not math.isfinite(stop - start):
                start, stop = low / 2, high / 2
            values: list[Any] = rng.uniform(start, stop, rows).tolist()
            edges: list[Any] = [lowest, highest, lowest / 2, highest / 2, 0.0, -0.0]
            edges += [float(low), float(high), round(low), round(high), None, float("nan")]
        else:
            choices = [*(feature.categories or []), "never-seen-in-training"]
            values = [str(v) for v in rng.choice(choices, size=rows)]
            edges = [None, MISSING_CATEGORY, *choices]  # first: kept however many categories
        places = rng.permutation(rows - 1)[: len(edges)] + 1  # row 0: every feature missing
        for index, value in zip(places, edges, strict=False):
            values[int(index)] = value
        values[0] = None
        columns[feature.name] = values
    return columns


def frame_of(columns: Mapping[str, Sequence[Any]], categorical: Iterable[str]) -> pd.DataFrame:
    """The DataFrame the pipeline takes for client values by feature, missing values read as
    ``category_array`` and the codec read them (numbers: ``None`` is NaN)."""
    text = set(categorical)
    arrays = {
        name: category_array(values)
        if name in text
        else np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        for name, values in columns.items()
    }
    return pd.DataFrame(arrays, columns=list(columns))


def pipeline_outputs(
    pipeline: Any, frame: pd.DataFrame, classifier: bool
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
    """What the server's sklearn engine answers: a classifier's labels are the classes of its
    largest probabilities (first on a tie), so no label comes from a score that is not checked
    (``non_finite``). This is how scikit-learn's random forests predict; gradient boosting and
    logistic regression predict from their raw scores, which gives the same class except where
    two probabilities are equal in float64. A regressor's values as floats."""
    # Values near the range's ends overflow scikit-learn's quick finiteness test (a sum) before
    # its exact one passes them; and any NaN or infinity in an output is checked, not warned of.
    with np.errstate(over="ignore", invalid="ignore"):
        if classifier:
            proba = np.asarray(pipeline.predict_proba(frame), dtype=np.float64)
            labels = np.asarray(pipeline.classes_).take(np.argmax(proba, axis=1))
            return labels, proba
        return np.asarray(pipeline.predict(frame), dtype=np.float64), None


def non_finite(
    labels: np.ndarray[Any, Any], probabilities: np.ndarray[Any, Any] | None, classifier: bool
) -> int:
    """How many outputs are NaN or infinite: a classifier's probabilities, a regressor's
    values."""
    scores = probabilities if classifier else labels
    if scores is None:
        return 0
    finite = np.isfinite(scores)
    return 0 if finite.all() else int(finite.size - np.count_nonzero(finite))
