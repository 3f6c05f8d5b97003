"""Fixtures shared by unit and integration tests: small registries, data and metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from model_registry import Registry


def metadata_body(**overrides: Any) -> dict[str, Any]:
    """A complete metadata document, minus the fields the registry fills in."""
    body: dict[str, Any] = {
        "task": "classification",
        "features": [
            {"name": "x1", "dtype": "float64", "kind": "numeric", "min": 0.0, "max": 1.0},
            {"name": "color", "dtype": "object", "kind": "categorical", "categories": ["r", "g"]},
        ],
        "target": {"name": "y", "dtype": "int64", "classes": [0, 1]},
        "metrics": {"roc_auc": 0.9},
        "training": {
            "rows": 100,
            "data_uri": "file:///data.csv",
            "data_sha256": "0" * 64,
            "params": {},
            "duration_seconds": 1.0,
        },
        "provenance": {
            "git_sha": None,
            "image_digest": None,
            "python": "3.11",
            "sklearn": "1.9",
            "package_version": "0.1.0",
        },
        "reference": {
            "rows": 100,
            "bins": 2,
            "features": {"x1": {"kind": "numeric", "edges": [0.5], "fractions": [0.5, 0.5]}},
        },
    }
    body.update(overrides)
    return body


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """An empty local registry."""
    return Registry(str(tmp_path / "registry"))


def mixed_frame(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    """Numeric and categorical features with a learnable binary target ``label``."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.uniform(0, 10, size=rows)
    color = rng.choice(["red", "green", "blue"], size=rows)
    logit = 2 * x1 + 0.3 * (x2 - 5) + np.where(color == "red", 1.5, -0.5)
    label = np.where(logit + rng.normal(scale=0.5, size=rows) > 0, "yes", "no")
    return pd.DataFrame({"x1": x1, "x2": x2, "color": color, "label": label})


def training_fill(pipeline: Any) -> dict[str, Any]:
    """What the pipeline's imputers put in place of a missing value, by feature: the training
    median of a number, the most frequent category of a text feature."""
    prep = pipeline.named_steps["prep"]
    return {
        column: value
        for name, transformer, columns in prep.transformers_
        if name in ("numeric", "categorical")
        for column, value in zip(
            columns, transformer.named_steps["impute"].statistics_, strict=True
        )
    }
