"""The feature schema and the reference distributions stored in ``metadata.json``.

Drift is measured against these (population stability index): numeric features are cut at
quantiles of the training data, categorical ones keep their category shares. Bins at both ends
are open, so values outside the training range are counted rather than dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trainer.data import PreparedData

OTHER = "__other__"


def _round(values: np.ndarray[Any, Any] | list[float], digits: int = 6) -> list[float]:
    return [round(float(v), digits) for v in values]


def numeric_distribution(values: pd.Series, bins: int) -> dict[str, Any]:
    """Quantile edges of ``values`` and the share of values in each bin."""
    data = values.dropna().to_numpy(dtype="float64")
    inner = np.unique(np.quantile(data, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(inner, data, side="left"), minlength=len(inner) + 1)
    return {"kind": "numeric", "edges": _round(inner), "fractions": _round(counts / len(data))}


def categorical_distribution(values: pd.Series, categories: list[Any]) -> dict[str, Any]:
    """Share of each of ``categories`` in ``values`` and, last, the share of anything else."""
    data = values.dropna()
    shares = data.value_counts(normalize=True)
    fractions = [float(shares.get(c, 0.0)) for c in categories]
    fractions.append(max(0.0, 1.0 - sum(fractions)))
    return {"kind": "categorical", "categories": categories, "fractions": _round(fractions)}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def feature_schema(data: PreparedData, train: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per feature, in model order: name, dtype, kind, range or categories."""
    schema = []
    for name in data.features.columns:
        column = train[name]
        entry: dict[str, Any] = {
            "name": name,
            "dtype": data.source_dtypes[name],
            "nullable": bool(data.features[name].isna().any()),
        }
        if name in data.numeric:
            entry.update(
                kind="numeric", min=float(column.min(skipna=True)), max=float(column.max())
            )
        else:
            entry.update(
                kind="categorical",
                categories=sorted(str(v) for v in column.dropna().unique()),
            )
        schema.append(entry)
    return schema


def reference(
    data: PreparedData, train: pd.DataFrame, target: pd.Series, bins: int
) -> dict[str, Any]:
    """Training-data distributions per feature, and of the target (``prediction``)."""
    features: dict[str, Any] = {}
    for name in data.features.columns:
        if name in data.numeric:
            features[name] = numeric_distribution(train[name], bins)
        else:
            categories = sorted(str(v) for v in train[name].dropna().unique())
            features[name] = categorical_distribution(train[name].astype(str), categories)
    if data.task == "classification":
        assert data.classes is not None
        classes = [_plain(c) for c in data.classes]
        prediction = categorical_distribution(target, classes)
    else:
        prediction = numeric_distribution(target, bins)
    return {"rows": len(train), "bins": bins, "features": features, "prediction": prediction}
