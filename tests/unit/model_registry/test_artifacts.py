"""Model files: skops round trip, untrusted types refused, pickle only on request."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression

from model_registry import UntrustedArtifact
from model_registry.artifacts import dump_model, load_model, untrusted_types


class SneakyEstimator(BaseEstimator):  # type: ignore[misc]
    """A type no registry should agree to rebuild."""

    def __init__(self, payload: str = "x") -> None:
        self.payload = payload


def fitted() -> LogisticRegression:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(60, 3))
    return LogisticRegression().fit(features, features[:, 0] > 0)


def test_skops_round_trip_predicts_identically() -> None:
    model = fitted()
    loaded = load_model(dump_model(model), "skops")
    probe = np.random.default_rng(2).normal(size=(20, 3))
    np.testing.assert_array_equal(loaded.predict_proba(probe), model.predict_proba(probe))


def test_untrusted_type_is_refused_with_its_name() -> None:
    data = dump_model(SneakyEstimator())
    assert any("SneakyEstimator" in t for t in untrusted_types(data))
    with pytest.raises(UntrustedArtifact, match="SneakyEstimator"):
        load_model(data, "skops")


def test_untrusted_type_loads_only_when_trusted_explicitly() -> None:
    data = dump_model(SneakyEstimator("ok"))
    names = [t for t in untrusted_types(data) if "SneakyEstimator" in t]
    assert load_model(data, "skops", extra_trusted=names).payload == "ok"


def test_joblib_needs_explicit_opt_in() -> None:
    data = dump_model(fitted(), "joblib")
    with pytest.raises(UntrustedArtifact, match="pickle"):
        load_model(data, "joblib")
    assert load_model(data, "joblib", allow_pickle=True).predict(np.zeros((1, 3))).shape == (1,)


def test_garbage_is_not_a_skops_file() -> None:
    with pytest.raises(UntrustedArtifact, match="not a readable skops file"):
        load_model(b"definitely not a zip", "skops")
