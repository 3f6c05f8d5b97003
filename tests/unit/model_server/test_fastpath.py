"""The fast path predicts exactly as the pipeline does, or is not used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from model_registry import Registry
from model_server.fastpath import compile_fast_path
from model_server.model import SklearnModel
from model_server.settings import ModelServerSettings
from tests.conftest import mixed_frame
from trainer.settings import TrainerSettings
from trainer.train import run


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("fast") / "registry"
    uri = str(root)
    run(TrainerSettings(sample="breast-cancer", registry_uri=uri))
    run(
        TrainerSettings(
            sample="breast-cancer",
            model_name="forest",
            estimator="random-forest",
            param={"n_estimators": "20"},
            registry_uri=uri,
            force=True,
        )
    )
    run(TrainerSettings(sample="diabetes", registry_uri=uri))
    data = root.parent / "gaps.csv"
    frame = mixed_frame(300).drop(columns="color")
    frame.loc[::10, "x2"] = np.nan
    frame.to_csv(data, index=False)
    run(
        TrainerSettings(
            data_uri=str(data),
            target="label",
            model_name="gaps",
            max_missing_fraction=0.2,
            registry_uri=uri,
        )
    )
    mixed = root.parent / "mixed.csv"
    mixed_frame(300).to_csv(mixed, index=False)
    run(TrainerSettings(data_uri=str(mixed), target="label", model_name="mixed", registry_uri=uri))
    return Registry(uri)


@pytest.mark.parametrize("name", ["breast-cancer", "forest", "diabetes", "gaps"])
def test_fast_path_equals_pipeline(registry: Registry, name: str) -> None:
    metadata, pipeline = registry.load_model(name)
    fast = compile_fast_path(pipeline, metadata)
    assert fast is not None
    rng = np.random.default_rng(7)
    lows = np.array([f.min for f in metadata.features])
    highs = np.array([f.max for f in metadata.features])
    rows = rng.uniform(lows, highs, size=(300, len(lows)))
    if name == "gaps":
        rows[::3, 1] = np.nan
    frame = pd.DataFrame(rows, columns=metadata.feature_names)
    classifier = metadata.task == "classification"
    labels, proba = fast.predict(rows, classifier)
    np.testing.assert_array_equal(labels, pipeline.predict(frame))
    if classifier:
        assert proba is not None
        np.testing.assert_allclose(proba, pipeline.predict_proba(frame), rtol=0, atol=1e-12)


def test_no_fast_path_for_categorical_features(registry: Registry) -> None:
    metadata, pipeline = registry.load_model("mixed")
    assert compile_fast_path(pipeline, metadata) is None


def test_no_fast_path_for_a_pipeline_of_another_shape(registry: Registry) -> None:
    metadata, pipeline = registry.load_model("breast-cancer")
    assert compile_fast_path(pipeline.steps[-1][1], metadata) is None


def test_a_fast_path_that_disagrees_is_refused(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_server import fastpath

    metadata, pipeline = registry.load_model("breast-cancer")
    original = fastpath.FastPath.transform

    def off_by_a_bit(self: fastpath.FastPath, matrix: np.ndarray[Any, Any]) -> Any:
        return original(self, matrix) + 0.5

    monkeypatch.setattr(fastpath.FastPath, "transform", off_by_a_bit)
    assert compile_fast_path(pipeline, metadata) is None


def test_server_uses_the_verified_fast_path_and_can_turn_it_off(
    registry: Registry, tmp_path: Path
) -> None:
    def model(**values: Any) -> SklearnModel:
        settings = ModelServerSettings(
            registry_uri=registry.uri, model_name="breast-cancer", model_version="latest", **values
        )
        loaded = SklearnModel(settings)
        assert loaded.load()
        return loaded

    fast, slow = model(engine="sklearn"), model(engine="sklearn", fast_path=False)
    assert fast.fast_path is not None
    assert slow.fast_path is None
    rows = np.tile([f.min for f in fast.metadata.features], (3, 1))  # type: ignore[union-attr]
    np.testing.assert_array_equal(fast.infer(rows, True)[1], slow.infer(rows, True)[1])


def test_kserve_data_plane_path_predicts_like_the_http_handlers(registry: Registry) -> None:
    """KServe's own data plane (gRPC, its REST routes) calls ``predict`` with its types."""
    import asyncio

    from kserve import InferInput, InferRequest, InferResponse

    settings = ModelServerSettings(
        registry_uri=registry.uri, model_name="breast-cancer", model_version="latest"
    )
    model = SklearnModel(settings)
    assert model.load()
    assert model.metadata is not None
    row = [f.min for f in model.metadata.features]
    request = InferRequest(
        model_name="breast-cancer",
        infer_inputs=[InferInput("input-0", [1, len(row)], "FP64", data=[row])],
        request_id="dp-1",
    )
    v2 = asyncio.run(model.predict(request))
    v1 = asyncio.run(model.predict({"instances": [row]}))
    assert isinstance(v2, InferResponse)
    assert isinstance(v1, dict)
    assert v2.outputs[0].data == v1["predictions"]
    assert v1["model_version"] == model.version
    # All outputs by default, and binary tensor data in (set_data_from_numpy's default).
    assert [o.name for o in v2.outputs] == ["predict", "predict_proba"]
    binary_input = InferInput("input-0", [1, len(row)], "FP64")
    binary_input.set_data_from_numpy(np.array([row]), binary_data=True)
    binary = asyncio.run(
        model.predict(InferRequest(model_name="breast-cancer", infer_inputs=[binary_input]))
    )
    assert isinstance(binary, InferResponse)
    assert binary.outputs[1].data == v2.outputs[1].data
