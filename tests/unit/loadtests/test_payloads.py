"""Load-test payloads stay inside the model's feature ranges and categories."""

from __future__ import annotations

from pathlib import Path

from loadtests.payloads import Payloads
from model_registry import Registry
from tests.conftest import mixed_frame
from trainer.settings import TrainerSettings
from trainer.train import run


def test_rows_within_the_training_ranges(tmp_path: Path) -> None:
    data = tmp_path / "shop.csv"
    mixed_frame(200).to_csv(data, index=False)
    uri = str(tmp_path / "registry")
    run(TrainerSettings(data_uri=str(data), target="label", model_name="shop", registry_uri=uri))
    metadata = Registry(uri).get("shop", "latest")
    payloads = Payloads(metadata, seed=1)
    for _ in range(200):
        for feature, value in zip(metadata.features, payloads.row(), strict=True):
            if feature.kind == "categorical":
                assert value in (feature.categories or [])
            else:
                assert feature.min is not None
                assert feature.max is not None
                assert feature.min <= value <= feature.max
    v2 = payloads.v2(3)
    assert [i["name"] for i in v2["inputs"]] == metadata.feature_names
    assert all(i["shape"] == [3] and len(i["data"]) == 3 for i in v2["inputs"])
    assert len(payloads.v1(4)["instances"]) == 4
