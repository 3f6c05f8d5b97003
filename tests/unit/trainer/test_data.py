"""Data validation: every kind of unusable data is a clear error naming the problem."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_registry.values import category_array
from tests.conftest import mixed_frame
from trainer.data import (
    Dataset,
    check_features,
    detect_task,
    load_sample,
    load_uri,
    looks_like_id,
    normalize_frame,
    prepare,
)
from trainer.errors import ConfigError, DataError


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
        "feature 'comment' is text with 200 distinct values, one per row, too many to one-hot "
        "encode (limit --max-categories 100); leave it out with --drop comment, or raise the "
        "limit to --max-categories 200",
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
    pd.testing.assert_frame_equal(from_csv.frame, from_parquet.frame, check_exact=True)
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


# -- one meaning of missing, whatever the file format -------------------------------------------

NA_WORDS = ["NA", "N/A", "None", "null", "NULL", "nan", "NaN", "#N/A", "<NA>", "n/a"]
"""What pandas' CSV reader takes for a missing value by default: text in a Parquet file."""


def one_table(rows: int = 60) -> pd.DataFrame:
    """Every kind of column a data scientist's table holds, with missing values in each."""
    rng = np.random.default_rng(3)
    text: list[Any] = list(rng.choice(["red", "green", "blue"], size=rows))
    text[:4] = [None, np.nan, "", "green"]
    words: list[Any] = list(rng.choice(["EU", "APAC", *NA_WORDS], size=rows))
    words[:3] = [None, "", "NA"]
    nullable = pd.array(rng.integers(0, 9, size=rows), dtype="Int64")
    nullable[0] = pd.NA
    flags: list[Any] = list(rng.choice([True, False], size=rows))
    flags[5] = None
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=rows),  # every value exactly, not the default parser's
            "x_missing": np.where(np.arange(rows) % 7 == 0, np.nan, rng.normal(size=rows)),
            "count": rng.integers(0, 50, size=rows),
            "count_missing": nullable,
            "small": rng.normal(size=rows).astype(np.float32),
            "flag": rng.choice([True, False], size=rows),
            "flag_missing": pd.array(flags, dtype="boolean"),
            "color": pd.Series(text, dtype=object),
            "color_str": pd.Series(text, dtype="string"),
            "color_arrow": pd.Series(text, dtype="string[pyarrow]"),
            "color_category": pd.Series(text, dtype="category"),
            "region": pd.Series(words, dtype=object),  # "NA" is North America, not missing
            "only_words": pd.Series(["NA", None] * (rows // 2), dtype=object),
            "label": rng.choice(["yes", "no"], size=rows),
        }
    )
    frame.loc[0, "x"] = 0.1 + 0.2  # 0.30000000000000004, a value parsers get wrong
    return frame


def both_formats(frame: pd.DataFrame, where: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    csv, parquet = where / "t.csv", where / "t.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet)
    return load_uri(str(csv), "label").frame, load_uri(str(parquet), "label").frame


def test_one_table_loads_as_one_frame_from_csv_and_parquet(tmp_path: Path) -> None:
    from_csv, from_parquet = both_formats(one_table(), tmp_path)
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_exact=True)
    dtypes = {name: str(dtype) for name, dtype in from_parquet.dtypes.items()}
    assert dtypes == {
        "x": "float64",
        "x_missing": "float64",
        "count": "int64",
        "count_missing": "float64",  # a number with a missing value is a float64 NaN
        "small": "float64",  # float32 read as the decimal it prints as, as CSV holds it
        "flag": "bool",
        "flag_missing": "float64",
        "color": "object",
        "color_str": "object",
        "color_arrow": "object",
        "color_category": "object",
        "region": "object",
        "only_words": "object",
        "label": "object",
    }
    for name in ("color", "color_str", "color_arrow", "color_category"):
        assert from_parquet[name].tolist()[:4] == [pytest.approx(np.nan, nan_ok=True)] * 3 + [
            "green"
        ]
        assert all(type(v) is str or (type(v) is float and np.isnan(v)) for v in from_csv[name])
    assert from_csv["region"].tolist()[:3] == [pytest.approx(np.nan, nan_ok=True)] * 2 + ["NA"]
    assert set(from_csv["region"].dropna()) <= {"EU", "APAC", *NA_WORDS}
    assert from_csv["only_words"].tolist()[:2] == ["NA", pytest.approx(np.nan, nan_ok=True)]
    assert from_csv["small"][1] == float(str(np.float32(one_table()["small"][1])))


@pytest.mark.parametrize(
    ("values", "dtype", "expected", "expected_dtype"),
    [
        (["a", None, np.nan, "", pd.NA], object, ["a", None, None, None, None], "object"),
        (["a", None, ""], "string", ["a", None, None], "object"),
        (["a", None, ""], "string[pyarrow]", ["a", None, None], "object"),
        (["a", None, ""], "category", ["a", None, None], "object"),
        ([1, None, 3], object, [1.0, None, 3.0], "float64"),
        ([1, 2, 3], object, [1, 2, 3], "int64"),
        ([1, None], "Int64", [1.0, None], "float64"),
        ([1, 2], "Int32", [1, 2], "int64"),
        ([0.5, None], "Float64", [0.5, None], "float64"),
        ([0.1, None], "Float32", [0.1, None], "float64"),  # the decimal a float32 prints as
        ([0.1, np.nan], np.float32, [0.1, None], "float64"),
        ([True, None], "boolean", [1.0, None], "float64"),
        ([True, None], object, [1.0, None], "float64"),
        ([True, False], object, [True, False], "bool"),
        ([None, None], object, [None, None], "float64"),
        (["a", 1], object, ["a", 1], "object"),  # mixed: left for validation to name
    ],
)
def test_one_meaning_of_missing_in_every_dtype(
    values: list[Any], dtype: Any, expected: list[Any], expected_dtype: str
) -> None:
    given = pd.DataFrame({"c": pd.Series(values, dtype=dtype)})
    before = given.copy()
    frame, _ = normalize_frame(given)
    pd.testing.assert_frame_equal(given, before)  # the input is left as it was
    column = frame["c"]
    assert str(column.dtype) == expected_dtype
    for got, want in zip(column.tolist(), expected, strict=True):
        if want is None:
            assert type(got) is float, got  # NaN: what the imputers read
            assert np.isnan(got)
        else:
            assert type(got) is type(want), (got, want)
            assert got == want
    again, _ = normalize_frame(frame)
    pd.testing.assert_frame_equal(again, frame, check_exact=True)


def test_empty_strings_are_counted_for_the_message() -> None:
    frame, empty = normalize_frame(pd.DataFrame({"c": ["", "a", "", None], "n": [1.0, 2, 3, 4]}))
    assert empty == {"c": 2}
    assert int(frame["c"].isna().sum()) == 3


TEXT = st.text(alphabet="abcxyz é,\"'-.;\n", min_size=1, max_size=6)
CELL = st.one_of(TEXT, st.sampled_from([*NA_WORDS, "", "True", "1.5"]), st.none())
NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda v: round(v, 3)),
    st.none(),
)


@st.composite
def tables(draw: st.DrawFn) -> pd.DataFrame:
    rows = draw(st.integers(min_value=1, max_value=12))
    columns: dict[str, Any] = {}
    for index in range(draw(st.integers(min_value=1, max_value=4))):
        if draw(st.booleans()):
            cells = draw(st.lists(CELL, min_size=rows, max_size=rows))
            cells[draw(st.integers(0, rows - 1))] = "text"  # a text column, to any reader
            columns[f"t{index}"] = pd.Series(cells, dtype=object)
        else:
            numbers = draw(st.lists(NUMBER, min_size=rows, max_size=rows))
            columns[f"n{index}"] = pd.Series(numbers, dtype="float64")
    columns["label"] = ["yes"] * rows
    return pd.DataFrame(columns)


@settings(max_examples=60, deadline=None, database=None)
@given(table=tables())
def test_any_table_loads_alike_from_csv_and_parquet(table: pd.DataFrame) -> None:
    with tempfile.TemporaryDirectory() as where:
        from_csv, from_parquet = both_formats(table, Path(where))
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_exact=True)
    for name in table.columns:
        if name.startswith("t"):
            assert all(
                (type(v) is str and v != "") or (type(v) is float and np.isnan(v))
                for v in from_csv[name]
            )


def test_prepared_features_hold_only_text_or_nan() -> None:
    """A ``None`` that reached the pipeline would be one-hot encoded as a category of its own
    (scikit-learn keeps None apart from NaN), where the ONNX graph and the server impute it:
    what made a Parquet file train another model than its CSV, and ONNX disagree."""
    features = pd.DataFrame({"c": pd.Series(["a", None], dtype=object), "n": [1.0, 2.0]})
    with pytest.raises(RuntimeError, match="categorical feature 'c' holds NoneType, str"):
        check_features(features, ["n"], ["c"])
    check_features(normalize_frame(features)[0], ["n"], ["c"])


# -- which columns are features: --drop, --features, and columns that look like ids ------------


def with_ids(rows: int = 200) -> pd.DataFrame:
    frame = mixed_frame(rows)
    frame.insert(0, "customer_id", [f"C{i:05d}" for i in range(rows)])
    frame["order_no"] = np.arange(10_000, 10_000 + rows)[::-1]
    return frame


def test_drop_leaves_columns_out_and_says_which() -> None:
    prepared = prepare(dataset(with_ids()), drop=["customer_id", "order_no"])
    assert list(prepared.features.columns) == ["x1", "x2", "color"]
    assert prepared.dropped == ["customer_id", "order_no"]
    assert prepared.warnings == []


def test_features_keep_only_the_columns_named() -> None:
    prepared = prepare(dataset(with_ids()), features=["color", "x1"])
    assert list(prepared.features.columns) == ["x1", "color"]  # in the data's order
    assert prepared.dropped == ["customer_id", "x2", "order_no"]


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (
            {"drop": ["custmer_id"]},
            "--drop names a column not in mem://test.csv: 'custmer_id' (did you mean "
            "'customer_id'?); its columns: 'customer_id', 'x1', 'x2', 'color', 'label', "
            "'order_no'",
        ),
        (
            {"features": ["x1", "size", "colour"]},
            "--features names columns not in mem://test.csv: 'size', 'colour' (did you mean "
            "'color'?); its columns:",
        ),
    ],
)
def test_naming_a_column_the_data_lacks_is_a_data_error(
    selection: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(DataError) as error:
        prepare(dataset(with_ids()), **selection)  # type: ignore[arg-type]
    assert error.value.problems[0].startswith(message), error.value.problems


@pytest.mark.parametrize("selection", [{"drop": ["label"]}, {"features": ["x1", "label"]}])
def test_the_target_is_never_a_feature(selection: dict[str, list[str]]) -> None:
    with pytest.raises(ConfigError, match="names the target 'label', which is never a feature"):
        prepare(dataset(with_ids()), **selection)  # type: ignore[arg-type]


def test_too_many_categories_names_the_drop_flag() -> None:
    frame = with_ids(2000)
    with pytest.raises(DataError) as error:
        prepare(dataset(frame))
    assert error.value.problems == [
        "feature 'customer_id' is text with 2000 distinct values, one per row, too many to "
        "one-hot encode (limit --max-categories 100); leave it out with --drop customer_id, "
        "or raise the limit to --max-categories 2000"
    ]
    frame = frame.rename(columns={"customer_id": "customer id"})
    with pytest.raises(DataError, match="leave it out with --drop 'customer id', or"):
        prepare(dataset(frame))


def test_a_column_that_looks_like_an_id_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    prepared = prepare(dataset(with_ids()), drop=["customer_id"])
    warning = (
        "feature 'order_no' looks like an id (a whole number unique to each of the 200 rows): "
        "a model learns nothing from it that holds for new rows; leave it out with "
        "--drop order_no"
    )
    assert prepared.warnings == [warning]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [warning]
    assert "order_no" in prepared.numeric  # a warning, not a refusal


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (np.arange(50), "a whole number unique to each of the 50 rows"),
        (np.arange(50, dtype=np.float64) * 7, "a whole number unique to each of the 50 rows"),
        ([f"u{i}" for i in range(50)], "text unique to each of the 50 rows"),
        (np.linspace(0, 1, 50), None),  # measurements, not ids
        (np.arange(50) % 10, None),  # repeats
        ([*range(49), None], None),  # a missing value: not a key
        ([True, False] * 25, None),
    ],
)
def test_what_looks_like_an_id(values: Any, why: str | None) -> None:
    assert looks_like_id(normalize_frame(pd.DataFrame({"c": values}))[0]["c"]) == why


def test_text_unique_per_row_within_the_limit_is_warned_of() -> None:
    frame = mixed_frame(60)
    frame["ticket"] = [f"T-{i}" for i in range(60)]
    prepared = prepare(dataset(frame))
    assert prepared.warnings == [
        "feature 'ticket' looks like an id (text unique to each of the 60 rows): a model learns "
        "nothing from it that holds for new rows; leave it out with --drop ticket"
    ]


def test_a_column_named_in_features_is_not_warned_of() -> None:
    prepared = prepare(dataset(with_ids()), features=["x1", "order_no"])
    assert prepared.warnings == []


def test_text_reads_missing_as_the_server_does() -> None:
    """One meaning: a text column's missing values are those ``category_array`` (the codec's,
    the engines' and the ONNX check's) reads as missing."""
    values = ["a", "", None, np.nan, "b", " ", "none", "NA"]
    frame, _ = normalize_frame(pd.DataFrame({"c": pd.Series(values, dtype=object)}))
    expected = category_array(values)
    got = frame["c"].to_numpy()
    assert [isinstance(v, float) for v in got] == [isinstance(v, float) for v in expected]
    assert [v for v in got if isinstance(v, str)] == [v for v in expected if isinstance(v, str)]
