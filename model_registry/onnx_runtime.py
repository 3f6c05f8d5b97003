"""The contract of a registered ``model.onnx``: its inputs, and how it is run.

One input per feature, shaped ``[rows, 1]``: numbers as float64, categories as strings with
``""`` for a missing value (ONNX string tensors have no NaN). Outputs: the labels and the class
probabilities (classifiers, no ZipMap), or the predictions (regressors). The trainer writes
graphs to this contract (``trainer.onnx_export``); the server feeds them by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

MISSING_CATEGORY = ""


def onnx_inputs(
    rows: pd.DataFrame | np.ndarray[Any, Any], numeric: Sequence[str], categorical: Sequence[str]
) -> dict[str, np.ndarray[Any, Any]]:
    """The graph's inputs for ``rows`` (a frame, or an all-numeric matrix in feature order)."""
    if isinstance(rows, np.ndarray):
        matrix = np.asarray(rows, dtype=np.float64)
        return {name: matrix[:, [i]] for i, name in enumerate(numeric)}
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    for name in numeric:
        feeds[name] = rows[name].to_numpy(dtype=np.float64).reshape(-1, 1)
    for name in categorical:
        values = rows[name].astype(object)
        text = values.where(values.notna(), MISSING_CATEGORY).astype(str)
        feeds[name] = text.to_numpy(dtype=object).reshape(-1, 1)
    return feeds


def session(blob: bytes, threads: int = 1) -> Any:
    """An ONNX Runtime session on the CPU with ``threads`` intra-op threads (one inter-op)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
