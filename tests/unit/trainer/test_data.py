"""Data validation: every kind of unusable data is a clear error naming the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import mixed_frame
from trainer.data import Dataset, detect_task, load_sample, load_uri, prepare
from trainer.errors import DataError


def dataset(frame: pd.DataFrame, target: str = "label") -> Dataset:
    return Dataset(frame, target, "mem://test.csv", "0" * 64)


def with_column(name: str, values: Any, rows: int = 200) -> pd.DataFrame:
    frame = mixed_frame(rows)
    frame[name] = values
    return frame


BAD_DATA = [
    ("no rows", pd.DataFrame({"x1": [], "label": []}), "label", "has no rows"),
    ("no target", mixed_frame(), "churned", "target column 'churned' is not in"),
    ("only target", mixed_frame()[["label"]], "label", "no feature columns"),
    ("too few rows", mixed_frame(20), "label", "has 20 rows; at least 50"),
    (
        "nan in feature",
        with_column("x1", [np.nan] * 10 + [1.0] * 190),
        "label",
        "feature 'x1' has 10 missing values (5.0% of rows)",
    ),
    ("all-missing feature", with_column("x3", np.nan), "label", "feature 'x3' has no values"),
    (
        "nan in target",
        with_column("label", ["yes", None] * 100),
        "label",
        "target 'label' has 100 missing values",
    ),
    (
        "infinite feature",
        with_column("x2", [np.inf] + [1.0] * 199),
        "label",
        "feature 'x2' has 1 infinite values",
    ),
    (
        "datetime feature",
        with_column("when", pd.date_range("2024-01-01", periods=200)),
        "label",
        "feature 'when' is a date/time",
    ),
    (
        "mixed types",
        with_column("code", ["a", 1] * 100),
        "label",
        "feature 'code' mixes value types (int, str)",
    ),
    (
        "free text",
        with_column("comment", [f"note {i}" for i in range(200)]),
        "label",
        "feature 'comment' is text with 200 distinct values, too many",
    ),
    ("single class", with_column("label", "yes"), "label", "has a single class 'yes'"),
    (
        "singleton class",
        with_column("label", ["a"] * 199 + ["b"]),
        "label",
        "classes with fewer than 2 rows",
    ),
]


@pytest.mark.parametrize(
    ("frame", "target", "message"),
    [case[1:] for case in BAD_DATA],
    ids=[case[0] for case in BAD_DATA],
)
def test_bad_data_is_a_clear_error(frame: pd.DataFrame, target: str, message: str) -> None:
    with pytest.raises(DataError) as error:
        prepare(dataset(frame, target))
    assert any(message in problem for problem in error.value.problems), error.value.problems


def test_every_problem_is_reported_at_once() -> None:
    frame = with_column("x1", [np.nan] * 10 + [1.0] * 190)
    frame["when"] = pd.date_range("2024-01-01", periods=200)
    with pytest.raises(DataError) as error:
        prepare(dataset(frame))
    assert len(error.value.problems) == 2


def test_regression_target_must_be_numeric() -> None:
    with pytest.raises(DataError, match="regression target 'label' must be numeric"):
        prepare(dataset(mixed_frame()), task="regression")


def test_missing_values_allowed_up_to_the_fraction() -> None:
    frame = with_column("x1", [np.nan] * 10 + [1.0] * 190)
    prepared = prepare(dataset(frame), max_missing_fraction=0.1)
    assert prepared.features["x1"].isna().sum() == 10


def test_roles_and_classes() -> None:
    prepared = prepare(dataset(mixed_frame()))
    assert prepared.task == "classification"
    assert prepared.numeric == ["x1", "x2"]
    assert prepared.categorical == ["color"]
    assert prepared.classes == ["no", "yes"]


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b"] * 50, "classification"),
        ([True, False] * 50, "classification"),
        ([0, 1, 2] * 30, "classification"),
        ([0.0, 1.0] * 50, "classification"),
        (list(range(100)), "regression"),
        (list(np.linspace(0, 1, 100)), "regression"),
    ],
)
def test_detect_task(values: list[object], task: str) -> None:
    assert detect_task(pd.Series(values))[0] == task


def test_samples_load_without_network() -> None:
    cancer = load_sample("breast-cancer")
    assert cancer.frame.shape == (569, 31)
    assert set(cancer.frame["diagnosis"]) == {"benign", "malignant"}
    assert "mean_radius" in cancer.frame.columns
    diabetes = load_sample("diabetes")
    assert diabetes.frame.shape == (442, 11)
    assert load_sample("diabetes").data_sha256 == diabetes.data_sha256


def test_csv_and_parquet_files_load_with_their_checksum(tmp_path: Path) -> None:
    frame = mixed_frame()
    csv, parquet = tmp_path / "d.csv", tmp_path / "d.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet)
    from_csv = load_uri(str(csv), "label")
    from_parquet = load_uri(str(parquet), "label")
    pd.testing.assert_frame_equal(from_csv.frame, from_parquet.frame, check_exact=False)
    import hashlib

    assert from_csv.data_sha256 == hashlib.sha256(csv.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "is empty"),
        ("data.json", b"{}", "cannot tell the format"),
        ("bad.parquet", b"not parquet", "cannot parse"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_uri(str(path), "label")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_uri(str(tmp_path / "nope.csv"), "label")


def test_an_empty_string_in_a_text_column_is_a_missing_value() -> None:
    """Clients send a missing category as "" over binary V2 and gRPC, and the server reads it
    as missing; so does the trainer, and no category can be named ""."""
    frame = mixed_frame()
    frame["color"] = frame["color"].astype(object)
    frame.loc[:4, "color"] = ""
    frame.loc[5:7, "color"] = None
    with pytest.raises(DataError) as refused:
        prepare(dataset(frame.copy()))
    message = str(refused.value)
    assert "feature 'color' has 8 missing values" in message
    assert '5 of them empty strings, which mean a missing category: clients send one as ""' in (
        message
    )
    prepared = prepare(dataset(frame.copy()), max_missing_fraction=0.1)
    color = prepared.features["color"]
    assert int(color.isna().sum()) == 8
    assert "" not in set(color.dropna())
    missing = [v for v in color if not isinstance(v, str)]
    assert all(isinstance(v, float) and np.isnan(v) for v in missing)  # what the imputer reads
