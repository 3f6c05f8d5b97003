"""Feature and prediction drift: population stability index (PSI) against the training reference.

Requests only append their already-validated rows and predictions to a bounded window (by row
count and by age); a background task recomputes the PSI of each feature and of the predicted
classes (``feature="__prediction__"``) every few seconds and sets
``model_server_feature_drift_score``. Nothing is computed on the request path.

Bins come from the version's ``metadata.json`` (``reference``): numeric features use the training
quantile edges with open-ended first and last bins, so values outside the training range are
counted; categorical features count unseen categories in the trailing "other" bin.

With several workers each keeps its own window (each sees a random share of the traffic), and the
gauge is exported in prometheus_client's ``max`` multiprocess mode: the scrape reports the largest
drift any worker sees, which errs towards alerting. Per-worker windows need no cross-process
state, and with windows of hundreds of rows the estimates agree closely.

Part of the service core; it takes rows and a publish callback, and knows nothing of
transports or of where the scores go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from model_registry.metadata import BinnedDistribution, ModelMetadata

log = logging.getLogger(__name__)

PREDICTION = "__prediction__"
EPSILON = 1e-4
"""Floor for empty bins, so a bin seen on one side only gives a large but finite PSI."""


def psi(
    expected: Sequence[float] | np.ndarray[Any, Any], actual: Sequence[float] | np.ndarray[Any, Any]
) -> float:
    """Population stability index of ``actual`` shares against ``expected`` shares."""
    e = np.clip(np.asarray(expected, dtype=np.float64), EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


class Binner:
    """Counts values into the bins of one reference distribution."""

    def __init__(self, reference: BinnedDistribution) -> None:
        self.expected = np.asarray(reference.fractions, dtype=np.float64)
        self.edges = (
            np.asarray(reference.edges, dtype=np.float64) if reference.kind == "numeric" else None
        )
        categories = reference.categories or []
        self.index = {str(c): i for i, c in enumerate(categories)}

    def shares(self, values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
        """Share of ``values`` in each bin; None when no value can be binned."""
        bins = len(self.expected)
        if self.edges is not None:
            numbers = np.asarray(values, dtype=np.float64)
            numbers = numbers[~np.isnan(numbers)]
            if not len(numbers):
                return None
            counts = np.bincount(np.searchsorted(self.edges, numbers, side="left"), minlength=bins)
        else:
            other = bins - 1
            positions = [  # a missing category is NaN (or None)
                self.index.get(str(v), other) for v in values if not pd.isna(v)
            ]
            if not positions:
                return None
            counts = np.bincount(np.asarray(positions), minlength=bins)
        shares: np.ndarray[Any, Any] = counts[:bins] / counts[:bins].sum()
        return shares

    def psi(self, values: np.ndarray[Any, Any]) -> float | None:
        shares = self.shares(values)
        return None if shares is None else psi(self.expected, shares)


class DriftMonitor:
    """A bounded window of recent rows and predictions, and the PSI of each against training."""

    def __init__(
        self,
        metadata: ModelMetadata,
        *,
        window_rows: int,
        window_seconds: float,
        min_rows: int,
    ) -> None:
        self.names = metadata.feature_names
        reference = metadata.reference
        self.binners = {name: Binner(reference.features[name]) for name in self.names}
        self.prediction = Binner(reference.prediction) if reference.prediction else None
        self.window_rows = window_rows
        self.window_seconds = window_seconds
        self.min_rows = min_rows
        self._batches: deque[tuple[float, Any, np.ndarray[Any, Any]]] = deque()
        self._rows = 0

    def observe(self, rows: Any, predictions: np.ndarray[Any, Any]) -> None:
        """Add one request's rows (cheap: a reference is kept, nothing is computed)."""
        self._batches.append((time.monotonic(), rows, predictions))
        self._rows += len(predictions)
        while self._batches and self._rows - len(self._batches[0][2]) >= self.window_rows:
            self._rows -= len(self._batches.popleft()[2])

    def _expire(self) -> None:
        deadline = time.monotonic() - self.window_seconds
        while self._batches and self._batches[0][0] < deadline:
            self._rows -= len(self._batches.popleft()[2])

    def scores(self) -> dict[str, float]:
        """PSI per feature and for predictions; empty until the window holds ``min_rows``."""
        self._expire()
        if self._rows < self.min_rows:
            return {}
        batches = list(self._batches)
        columns: dict[str, list[Any]] = {name: [] for name in self.names}
        for _, rows, _ in batches:
            if isinstance(rows, np.ndarray):
                for index, name in enumerate(self.names):
                    columns[name].append(rows[:, index])
            else:
                for name in self.names:
                    columns[name].append(np.asarray(rows[name]))
        result = {}
        for name in self.names:
            value = self.binners[name].psi(np.concatenate(columns[name]))
            if value is not None:
                result[name] = value
        if self.prediction is not None:
            value = self.prediction.psi(np.concatenate([p for _, _, p in batches]))
            if value is not None:
                result[PREDICTION] = value
        return result

    async def run(self, interval: float, publish: Any) -> None:
        """Recompute every ``interval`` seconds and hand the scores to ``publish``."""
        while True:
            await asyncio.sleep(interval)
            try:
                scores = self.scores()
            except Exception:  # never let drift take the server down
                log.exception("drift computation failed")
                continue
            if scores:
                publish(scores)
