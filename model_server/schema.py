"""What a loaded version takes and gives: its features (names, which are categories, each
number's computable range), its classes and outputs, and validated rows in the shape its engines
take. Any feature may be missing (``model_registry.values``): the engines impute it.

Built from the version's registry metadata. The codec produces ``Rows``, the engines and the
drift monitor consume them. This module knows nothing of request formats (V1, V2, binary
tensors), transports or how a version is loaded.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from model_registry.metadata import ModelMetadata
from model_registry.values import FLOAT64_MAX

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"


@dataclass(frozen=True)
class FeatureSchema:
    """What the served model takes, from its registry metadata."""

    names: tuple[str, ...]
    categorical: frozenset[str]
    classes: tuple[Any, ...] | None
    max_rows: int
    limits: Mapping[str, tuple[float, float]] = field(default_factory=dict, compare=False)
    """Each numeric feature's computable range (``model_registry.values.numeric_limits``);
    any finite value for a feature not named."""

    @classmethod
    def from_metadata(
        cls,
        metadata: ModelMetadata,
        max_rows: int,
        limits: Mapping[str, tuple[float, float]] | None = None,
    ) -> FeatureSchema:
        return cls(
            names=tuple(f.name for f in metadata.features),
            categorical=frozenset(f.name for f in metadata.features if f.kind == "categorical"),
            classes=tuple(metadata.target.classes) if metadata.target.classes is not None else None,
            max_rows=max_rows,
            limits=dict(limits or {}),
        )

    @property
    def numeric_only(self) -> bool:
        return not self.categorical

    def limit(self, name: str) -> tuple[float, float]:
        """The closed range of values numeric feature ``name`` may take."""
        return self.limits.get(name, (-FLOAT64_MAX, FLOAT64_MAX))

    @functools.cached_property
    def _bounds(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        pairs = [self.limit(n) for n in self.names if n not in self.categorical]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])

    def in_range(self, matrix: np.ndarray[Any, Any], *, by_feature: bool = False) -> bool:
        """True when every value of a matrix of the numeric features, in model order, is in
        its feature's range (so finite, not NaN): ``[rows, features]``, or ``[features,
        rows]`` with ``by_feature``."""
        low, high = self._bounds
        if by_feature:
            low, high = low[:, None], high[:, None]
        return bool(((matrix >= low) & (matrix <= high)).all())

    def missing_in_range(self, matrix: np.ndarray[Any, Any]) -> dict[str, int] | None:
        """For a ``[rows, features]`` matrix of an all-numeric model: when every value is in its
        feature's range or missing (NaN), how many are missing by feature (features with none
        left out); else None. Missing values are looked for only when a value is out of
        range."""
        low, high = self._bounds
        good = (matrix >= low) & (matrix <= high)
        if good.all():
            return {}
        missing = np.isnan(matrix)
        if not (good | missing).all():
            return None
        counts = np.count_nonzero(missing, axis=0).tolist()
        return {name: count for name, count in zip(self.names, counts, strict=True) if count}

    def outputs(self) -> tuple[str, ...]:
        """Output names this model can return."""
        return (PREDICT, PREDICT_PROBA) if self.classes is not None else (PREDICT,)


class Columns:
    """Validated rows of a model with categorical features, without pandas on the request path:
    one array per feature in model order (float64 for numbers, NaN for missing; object arrays
    of strings for categories, NaN for missing as in the training data). ``frame()`` makes the
    DataFrame the scikit-learn pipeline takes; ONNX Runtime and drift read the arrays."""

    __slots__ = ("arrays", "count")

    def __init__(self, arrays: dict[str, np.ndarray[Any, Any]], count: int) -> None:
        self.arrays = arrays
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        return self.arrays[name]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.arrays, columns=list(self.arrays))

    def records(self) -> list[dict[str, Any]]:
        """One ``{feature: value}`` per row (missing values as NaN)."""
        names = list(self.arrays)
        values = zip(*(a.tolist() for a in self.arrays.values()), strict=True)
        return [dict(zip(names, row, strict=True)) for row in values]


Rows = Columns | np.ndarray[Any, Any]
"""Validated rows in feature order: a float64 matrix for all-numeric models, else Columns."""


def inputs_digest(rows: Rows) -> str:
    """SHA-256 (hex) of validated rows, as the prediction log records them (``inputs_sha256``):
    the same rows give the same digest on every replica, engine and protocol, whatever the
    request's encoding (V1 lists or objects, V2 JSON, binary or gRPC).

    Numeric models: the rows as a float64 matrix, C order (missing values as NaN), after
    ``b"f64:ROWSxFEATURES:"``. Models with categorical features: per feature in model order,
    its float64 bytes (numbers) or the JSON of its values (categories; missing as null).
    """
    digest = hashlib.sha256()
    if isinstance(rows, np.ndarray):
        matrix = np.ascontiguousarray(rows, dtype=np.float64)
        digest.update(b"f64:%dx%d:" % (matrix.shape[0], matrix.shape[1] if matrix.ndim > 1 else 1))
        digest.update(matrix.tobytes())
        return digest.hexdigest()
    digest.update(b"columns:%d:" % len(rows))
    for name, array in rows.arrays.items():
        digest.update(name.encode() + b"=")
        if array.dtype == np.float64:
            digest.update(array.tobytes())
        else:
            digest.update(orjson.dumps(array.tolist()))  # NaN is written as null
        digest.update(b";")
    return digest.hexdigest()
