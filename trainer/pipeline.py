"""scikit-learn pipelines: imputation, scaling and one-hot encoding around one estimator."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from trainer.data import Task
from trainer.errors import ConfigError
from trainer.settings import Estimator

Factory = Callable[[int], BaseEstimator]

ESTIMATORS: dict[Task, dict[str, Factory]] = {
    "classification": {
        "logistic": lambda seed: LogisticRegression(max_iter=2000, random_state=seed),
        "random-forest": lambda seed: RandomForestClassifier(
            n_estimators=200, n_jobs=-1, random_state=seed
        ),
        "gradient-boosting": lambda seed: HistGradientBoostingClassifier(random_state=seed),
    },
    "regression": {
        "linear": lambda seed: LinearRegression(),
        "ridge": lambda seed: Ridge(alpha=1.0, random_state=seed),
        "random-forest": lambda seed: RandomForestRegressor(
            n_estimators=200, n_jobs=-1, random_state=seed
        ),
        "gradient-boosting": lambda seed: HistGradientBoostingRegressor(random_state=seed),
    },
}
DEFAULT_ESTIMATOR: dict[Task, str] = {"classification": "logistic", "regression": "ridge"}


def resolve_estimator(task: Task, name: Estimator) -> str:
    """The estimator name to use for ``task`` (``auto`` picks the default)."""
    if name == "auto":
        return DEFAULT_ESTIMATOR[task]
    if name not in ESTIMATORS[task]:
        allowed = ", ".join(sorted(ESTIMATORS[task]))
        raise ConfigError(f"estimator {name!r} does not do {task}; choose one of: {allowed}")
    return name


def parse_params(raw: Mapping[str, str]) -> dict[str, Any]:
    """``{"max_depth": "6", "criterion": "gini"}`` -> ``{"max_depth": 6, "criterion": "gini"}``.

    Each value is read as JSON (numbers, true/false, null) and kept as text otherwise.
    """
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def build_pipeline(
    *,
    task: Task,
    estimator: str,
    numeric: list[str],
    categorical: list[str],
    params: Mapping[str, Any],
    seed: int,
) -> Pipeline:
    """The full pipeline: ``prep`` (a ColumnTransformer) then ``model``."""
    model = ESTIMATORS[task][estimator](seed)
    valid = model.get_params(deep=False)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) for {estimator}: {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(valid))}"
        )
    model.set_params(**params)
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(
            (
                "numeric",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                ),
                numeric,
            )
        )
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        (
                            "onehot",
                            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                        ),
                    ]
                ),
                categorical,
            )
        )
    prep = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("prep", prep), ("model", model)])


def estimator_params(pipeline: Pipeline) -> dict[str, Any]:
    """The final estimator's parameters as JSON-safe values (for metadata)."""
    params = pipeline.named_steps["model"].get_params(deep=False)
    return {
        key: value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
        for key, value in sorted(params.items())
    }
