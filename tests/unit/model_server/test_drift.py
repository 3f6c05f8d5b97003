"""PSI against hand-computed values, binning, and the bounded window."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_registry.metadata import BinnedDistribution, ModelMetadata
from model_server.drift import Binner, DriftMonitor, psi
from tests.conftest import metadata_body


def test_identical_distributions_have_zero_psi() -> None:
    assert psi([0.25, 0.25, 0.5], [0.25, 0.25, 0.5]) == pytest.approx(0.0)


def test_psi_matches_the_formula() -> None:
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected)
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.8789, abs=1e-4)


def test_empty_bins_give_a_large_finite_score() -> None:
    assert 0.2 < psi([0.5, 0.5, 0.0], [0.5, 0.0, 0.5]) < 100


NUMERIC = BinnedDistribution(kind="numeric", edges=[0.0, 1.0], fractions=[0.25, 0.5, 0.25])


def test_numeric_binning_counts_out_of_range_values_in_the_end_bins() -> None:
    binner = Binner(NUMERIC)
    shares = binner.shares(np.array([-100.0, -0.5, 0.5, 0.7, 50.0, np.nan]))
    assert shares is not None
    assert shares.tolist() == [0.4, 0.4, 0.2]  # the NaN is skipped, nothing else is dropped


def test_numeric_shift_is_detected() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=5000)
    edges = np.quantile(reference, np.linspace(0, 1, 11)[1:-1]).tolist()
    binner = Binner(BinnedDistribution(kind="numeric", edges=edges, fractions=[0.1] * 10))
    same = binner.psi(rng.normal(size=1000))
    shifted = binner.psi(rng.normal(loc=1.0, size=1000))
    assert same is not None
    assert shifted is not None
    assert same < 0.05
    assert shifted > 0.2


def test_unseen_categories_count_as_other() -> None:
    binner = Binner(
        BinnedDistribution(
            kind="categorical", categories=["red", "blue"], fractions=[0.5, 0.5, 0.0]
        )
    )
    shares = binner.shares(np.array(["red", "violet", "violet", "blue"], dtype=object))
    assert shares is not None
    assert shares.tolist() == [0.25, 0.25, 0.5]
    assert (binner.psi(np.array(["violet"] * 10, dtype=object)) or 0) > 0.2


def test_window_is_bounded_by_rows_and_waits_for_enough_rows() -> None:
    metadata = ModelMetadata.model_validate(
        {
            **metadata_body(
                features=[{"name": "x", "dtype": "float64", "kind": "numeric", "min": 0, "max": 1}],
                reference={"rows": 10, "bins": 3, "features": {"x": NUMERIC.model_dump()}},
            ),
            "model_name": "m",
            "version": "v1",
            "created_at": "2026-01-01T00:00:00Z",
            "artifact": {
                "file": "model.skops",
                "format": "skops",
                "sha256": "0" * 64,
                "size_bytes": 1,
            },
        }
    )
    monitor = DriftMonitor(metadata, window_rows=100, window_seconds=3600, min_rows=50)
    monitor.observe(np.full((40, 1), 0.5), np.zeros(40))
    assert monitor.scores() == {}
    for _ in range(10):
        monitor.observe(np.full((40, 1), 5.0), np.zeros(40))
    assert monitor._rows <= 140  # bounded: old batches dropped
    assert monitor.scores()["x"] > 0.2  # everything left is out of the training range
