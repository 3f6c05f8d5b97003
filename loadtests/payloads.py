"""Random requests in a model's own feature ranges (from its registry metadata).

Kept apart from the locustfile so it can be tested without importing locust (which patches the
standard library with gevent on import).
"""

from __future__ import annotations

import random
from typing import Any

from model_registry.metadata import ModelMetadata


class Payloads:
    """Random requests in the model's own feature ranges."""

    def __init__(self, metadata: ModelMetadata, seed: int = 0) -> None:
        self.metadata = metadata
        self.random = random.Random(seed)  # noqa: S311 (test data, not security)

    def row(self) -> list[Any]:
        values: list[Any] = []
        for feature in self.metadata.features:
            if feature.kind == "categorical":
                values.append(self.random.choice(feature.categories or ["unknown"]))
            else:
                low, high = feature.min or 0.0, feature.max or 0.0
                values.append(round(self.random.uniform(low, high), 6))
        return values

    def v1(self, rows: int) -> dict[str, Any]:
        return {"instances": [self.row() for _ in range(rows)]}

    def v2(self, rows: int) -> dict[str, Any]:
        columns = list(zip(*(self.row() for _ in range(rows)), strict=True))
        return {
            "inputs": [
                {
                    "name": feature.name,
                    "shape": [rows],
                    "datatype": "BYTES" if feature.kind == "categorical" else "FP64",
                    "data": list(column),
                }
                for feature, column in zip(self.metadata.features, columns, strict=True)
            ]
        }
