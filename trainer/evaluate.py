"""Held-out evaluation.

Accuracy, F1 and ROC AUC (and log loss) for classifiers; RMSE, MAE and R² for regressors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from trainer.data import Task

HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "f1": True,
    "roc_auc": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}


def default_primary_metric(task: Task, n_classes: int | None) -> str:
    """roc_auc for binary classifiers, f1 (macro) for multiclass, rmse for regressors."""
    if task == "regression":
        return "rmse"
    return "roc_auc" if n_classes == 2 else "f1"


def evaluate(
    task: Task, model: Any, features: pd.DataFrame, target: pd.Series, classes: list[Any] | None
) -> dict[str, float]:
    """Metrics of ``model`` on held-out ``features``/``target``. Undefined metrics are left out."""
    predicted = model.predict(features)
    if task == "regression":
        truth = target.to_numpy(dtype="float64")
        return {
            "rmse": float(math.sqrt(metrics.mean_squared_error(truth, predicted))),
            "mae": float(metrics.mean_absolute_error(truth, predicted)),
            "r2": float(metrics.r2_score(truth, predicted)),
        }
    assert classes is not None
    truth = target.to_numpy()
    binary = len(classes) == 2
    result = {
        "accuracy": float(metrics.accuracy_score(truth, predicted)),
        "f1": float(
            metrics.f1_score(
                truth,
                predicted,
                average="binary" if binary else "macro",
                pos_label=classes[1] if binary else 1,
            )
        ),
    }
    if hasattr(model, "predict_proba") and len(np.unique(truth)) == len(classes):
        proba = model.predict_proba(features)
        model_classes = list(getattr(model, "classes_", classes))
        if binary:
            result["roc_auc"] = float(metrics.roc_auc_score(truth == model_classes[1], proba[:, 1]))
        else:
            result["roc_auc"] = float(
                metrics.roc_auc_score(truth, proba, multi_class="ovr", labels=model_classes)
            )
        result["log_loss"] = float(metrics.log_loss(truth, proba, labels=model_classes))
    return result
