"""Compile a fitted pipeline to ONNX (``skl2onnx``) and check it against the pipeline.

The graph takes one input per feature, shaped ``[rows, 1]``: numbers as float64, categories as
strings with ``""`` for a missing value (ONNX string tensors have no NaN). Its outputs are the
labels and the probabilities (classifiers, no ZipMap) or the predictions (regressors).

Precision, and how it is handled. The pipeline computes in float64; some of ONNX Runtime's ML
operators only in float32 (its ``Imputer`` has no double kernel, its tree ensembles no double
outputs: checked against onnxruntime 1.32 with skl2onnx 1.20). A float32 imputer and scaler move
values by about 1e-7, enough to carry one across a tree's split. So the graph is built from a
copy of the pipeline that computes what the pipeline computes, in the same precision:

- numeric imputation is ``Where(IsNaN(x), median, x)`` in float64 (standard ONNX operators, our
  converter), and the scaler stays float64;
- before a tree ensemble, a cast to float32: exactly what scikit-learn's forests and trees do to
  their input, so both compare the same float32 values with the split thresholds (gradient
  boosting compares float64 values with float64 thresholds: a value within float32 rounding of
  a threshold can take the other branch in the graph, and then the check below refuses it);
- the categorical imputer (``missing_values=nan``, which skl2onnx cannot convert for strings)
  becomes one that reads ``""`` as missing and fills in the same learned values.

Linear models then agree to about 1e-15, trees to float32 accumulation (about 1e-7 in a
probability). The compiled model is still only kept when it agrees with the pipeline on the
check rows (``model_registry.onnx_runtime.agreement``): every label identical, every probability
within ``PROBABILITY_TOLERANCE``, every regression output within ``REGRESSION_TOLERANCE`` times
its own magnitude or the largest on the check rows, whichever is larger; and the same on edge
rows (``model_registry.values.edge_columns``), held to the check rows' largest output.
Otherwise the version is registered without ONNX, with the reason: a property of this model, not
a training failure, and the server uses the pipeline.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from model_registry.onnx_runtime import (
    MISSING_CATEGORY,
    agreement,
    disagreement,
    onnx_inputs,
    session,
    unsupported,
)

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
OPSET = {"": 18, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class OnnxExport:
    """The compiled model (``blob``) and what metadata says about it, or why there is none."""

    blob: bytes | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        """Why this version has no ONNX model (None when it has one)."""
        return None if self.blob is not None else str(self.info.get("reason"))


class FillNaN(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """A fitted numeric ``SimpleImputer`` as the graph computes it: NaN -> the learned value."""

    def __init__(self, values: np.ndarray[Any, Any] | None = None) -> None:
        self.values = values

    def fit(self, x: Any, y: Any = None) -> FillNaN:
        return self

    def transform(self, x: Any) -> Any:
        return np.where(np.isnan(x), self.values, x)


def _fill_nan_shape(operator: Any) -> None:
    width = len(operator.raw_operator.values)
    operator.outputs[0].type = operator.inputs[0].type.__class__([None, width])


def _fill_nan_converter(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.algebra.onnx_ops import OnnxIsNaN, OnnxWhere
    from skl2onnx.common.data_types import guess_numpy_type

    version = container.target_opset
    x = operator.inputs[0]
    fill = np.asarray(operator.raw_operator.values, dtype=guess_numpy_type(x.type)).reshape(1, -1)
    where = OnnxWhere(
        OnnxIsNaN(x, op_version=version),
        fill,
        x,
        op_version=version,
        output_names=operator.outputs[:1],
    )
    where.add_to(scope, container)


@functools.cache
def _register_converters() -> None:
    from skl2onnx import update_registered_converter

    update_registered_converter(
        FillNaN, "ModelServingFillNaN", _fill_nan_shape, _fill_nan_converter
    )


def _is_tree_ensemble(estimator: Any) -> bool:
    return type(estimator).__module__.startswith(("sklearn.ensemble", "sklearn.tree"))


def _graph_pipeline(pipeline: Pipeline) -> Pipeline:
    """A copy of ``pipeline`` that computes the same in the graph's terms (module docstring)."""
    from skl2onnx.sklapi import CastTransformer

    graph = copy.deepcopy(pipeline)
    prep = graph.named_steps["prep"]
    numeric = prep.named_transformers_.get("numeric")
    if numeric is not None:
        medians = np.asarray(numeric.named_steps["impute"].statistics_, dtype=np.float64)
        numeric.steps[0] = ("impute", FillNaN(medians))
    categorical = prep.named_transformers_.get("categorical")
    if categorical is not None:
        fitted: SimpleImputer = categorical.named_steps["impute"]
        twin = SimpleImputer(missing_values=MISSING_CATEGORY, strategy="most_frequent")
        statistics = np.asarray(fitted.statistics_, dtype=object)
        twin.fit(np.vstack([statistics, statistics]))  # learns exactly these fill values
        twin.statistics_ = statistics
        categorical.steps[0] = ("impute", twin)
    if _is_tree_ensemble(graph.steps[-1][1]):
        cast = CastTransformer(dtype=np.float32).fit(np.zeros((1, 1)))
        graph.steps.insert(len(graph.steps) - 1, ("float32", cast))
    return graph


def convert(
    pipeline: Pipeline, numeric: list[str], categorical: list[str], classifier: bool
) -> bytes:
    """The ONNX model of ``pipeline`` (raises when skl2onnx cannot convert it)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    _register_converters()
    types = [(name, DoubleTensorType([None, 1])) for name in numeric]
    types += [(name, StringTensorType([None, 1])) for name in categorical]
    options = {"zipmap": False} if classifier else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skl2onnx's notes on opsets and dtypes
        model = to_onnx(
            _graph_pipeline(pipeline), initial_types=types, target_opset=OPSET, options=options
        )
    return bytes(model.SerializeToString())


def compare(  # noqa: PLR0917 (the check's inputs)
    pipeline: Pipeline,
    blob: bytes,
    rows: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    scale: float | None = None,
) -> dict[str, Any]:
    """How the ONNX model and the pipeline agree on ``rows``: the check metadata records
    (``scale``: a regressor's ordinary scale, for edge rows)."""
    outputs = session(blob).run(None, onnx_inputs(rows, numeric, categorical))
    classifier = hasattr(pipeline, "predict_proba")
    return agreement(pipeline, rows, outputs[0], outputs[1] if classifier else None, scale)


def export(
    pipeline: Pipeline,
    rows: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    edges: pd.DataFrame | None = None,
) -> OnnxExport:
    """Convert ``pipeline`` and check it on ``rows`` and, apart, on ``edges`` (held to the
    scale of ``rows``' outputs, not to the extremes' own); no ONNX (with the reason) if either
    fails."""
    import onnxruntime
    import skl2onnx

    started = time.perf_counter()
    versions = {"skl2onnx": skl2onnx.__version__, "onnxruntime": onnxruntime.__version__}
    classifier = hasattr(pipeline, "predict_proba")
    cannot = unsupported(pipeline)
    if cannot is not None:
        return OnnxExport(None, {"reason": f"not compiled: {cannot}", **versions})
    try:
        blob = convert(pipeline, numeric, categorical, classifier)
        check = compare(pipeline, blob, rows, numeric, categorical)
        if edges is not None:
            scale = check.get("scale")  # the ordinary rows' (regressors)
            check["edges"] = compare(pipeline, blob, edges, numeric, categorical, scale)
    except Exception as error:  # any converter or runtime failure: no ONNX, with the reason
        reason = f"cannot convert to ONNX: {type(error).__name__}: {str(error)[:300]}"
        return OnnxExport(None, {"reason": reason, **versions})
    seconds = round(time.perf_counter() - started, 3)
    edge_check = check.get("edges")
    if not check["passed"] or (edge_check is not None and not edge_check["passed"]):
        if check["passed"] and edge_check is not None:
            where = " on edge rows (missing values, unseen categories, range ends)"
            reason = f"ONNX disagrees with the pipeline{where}: {disagreement(edge_check)}"
        else:
            reason = f"ONNX disagrees with the pipeline: {disagreement(check)}"
        return OnnxExport(None, {"reason": reason, "check": check, **versions})
    info = {
        "file": ONNX_FILE,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size_bytes": len(blob),
        "opset": dict(OPSET),
        **versions,
        "check": check,
        "export_seconds": seconds,
    }
    return OnnxExport(blob, info)
