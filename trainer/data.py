"""Load training data from a URI or a bundled sample, and validate it before any fitting."""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import fsspec
import numpy as np
import pandas as pd

from model_registry.values import MISSING_CATEGORY
from trainer.errors import DataError
from trainer.settings import DataFormat, Sample, TaskChoice

log = logging.getLogger(__name__)

Task = Literal["classification", "regression"]
CLASSIFICATION_MAX_DISTINCT = 20
"""An integer target with at most this many distinct values is taken as class labels."""


@dataclass(frozen=True)
class Dataset:
    """Raw training data as loaded, with where it came from."""

    frame: pd.DataFrame
    target: str
    data_uri: str
    data_sha256: str


@dataclass(frozen=True)
class PreparedData:
    """Validated features and target, with the column roles the pipeline needs."""

    features: pd.DataFrame
    target: pd.Series
    task: Task
    numeric: list[str]
    categorical: list[str]
    classes: list[Any] | None
    source_dtypes: dict[str, str]


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def load_sample(sample: Sample) -> Dataset:
    """A dataset bundled with scikit-learn (read from the installed package; no download)."""
    from sklearn import datasets

    if sample == "breast-cancer":
        bunch = datasets.load_breast_cancer(as_frame=True)
        frame = bunch.data.rename(columns=_snake)
        names = np.asarray(bunch.target_names)
        frame["diagnosis"] = names[bunch.target.to_numpy()]
        target = "diagnosis"
    else:
        bunch = datasets.load_diabetes(as_frame=True, scaled=False)
        frame = bunch.data.rename(columns=_snake)
        frame["progression"] = bunch.target.astype("float64")
        target = "progression"
    digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    return Dataset(frame, target, f"sample:{sample}", digest)


def _format_for(uri: str, data_format: DataFormat) -> Literal["csv", "parquet"]:
    if data_format != "auto":
        return data_format
    path = uri.lower().split("?")[0]
    if path.endswith((".parquet", ".pq")):
        return "parquet"
    if path.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    raise DataError(
        [f"cannot tell the format of {uri!r} from its extension; pass --data-format csv|parquet"]
    )


def load_uri(uri: str, target: str, data_format: DataFormat = "auto") -> Dataset:
    """Read a CSV or Parquet file from a path, ``gs://`` or ``s3://`` URI."""
    fmt = _format_for(uri, data_format)
    try:
        with fsspec.open(uri, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError as error:
        raise DataError([f"data file not found: {uri}"]) from error
    if not raw.strip():
        raise DataError([f"data file {uri} is empty"])
    digest = hashlib.sha256(raw).hexdigest()
    try:
        if fmt == "parquet":
            # One thread: pyarrow's parquet reader threads can outlive the read and abort the
            # interpreter at exit ("terminate called without an active exception", SIGABRT;
            # apache/arrow#34314, open). Seen here in about 1 run in 12 with pyarrow 26; none
            # in 80 with use_threads=False. The file is already in memory, so little is lost.
            frame = pd.read_parquet(io.BytesIO(raw), use_threads=False)
        else:
            gzipped = uri.lower().endswith(".gz")
            frame = pd.read_csv(io.BytesIO(raw), compression="gzip" if gzipped else None)
    except (ValueError, pd.errors.ParserError, OSError) as error:
        raise DataError([f"cannot parse {uri} as {fmt}: {error}"]) from error
    return Dataset(frame, target, uri, digest)


def detect_task(target: pd.Series) -> tuple[Task, str]:
    """Decide classification or regression from the target column, and say why."""
    values = target.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "classification", f"target is {target.dtype}, not numeric"
    distinct = values.nunique()
    integral = bool(np.all(np.mod(values.to_numpy(dtype="float64"), 1) == 0))
    if integral and distinct <= CLASSIFICATION_MAX_DISTINCT:
        return "classification", f"target has {distinct} distinct whole-number values"
    return "regression", f"target is numeric with {distinct} distinct values"


def _empty_strings_as_missing(frame: pd.DataFrame, columns: list[str]) -> dict[str, int]:
    """Read ``""`` in text columns as a missing value (NaN), in place; how many, by column.

    A client can send a missing category over binary V2 or gRPC only as ``""``, and the server
    reads it as missing (``model_registry.values``); a category named ``""`` in training would
    mean something else than the same ``""`` in a request."""
    counts: dict[str, int] = {}
    for column in columns:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        empty = series.map(lambda v: type(v) is str and v == MISSING_CATEGORY).astype(bool)
        count = int(empty.sum())
        if count:
            frame[column] = series.astype(object).mask(empty, np.nan)
            counts[column] = count
            log.info(
                'feature %r: %d empty strings ("") read as missing values, as the server reads '
                "them",
                column,
                count,
            )
    return counts


def _feature_problems(
    frame: pd.DataFrame,
    columns: list[str],
    max_missing: float,
    max_categories: int,
    empty: dict[str, int] | None = None,
) -> tuple[list[str], list[str], list[str]]:
    problems: list[str] = []
    numeric: list[str] = []
    categorical: list[str] = []
    rows = len(frame)
    for column in columns:
        series = frame[column]
        missing = int(series.isna().sum())
        if missing == rows:
            problems.append(f"feature {column!r} has no values (all {rows} missing)")
            continue
        if missing and missing / rows > max_missing:
            blank = (empty or {}).get(column, 0)
            note = (
                f" ({blank} of them empty strings, which mean a missing category: clients "
                'send one as "")'
                if blank
                else ""
            )
            problems.append(
                f"feature {column!r} has {missing} missing values ({missing / rows:.1%} of rows)"
                f"{note}; fill them, or allow imputation with --max-missing-fraction "
                f"{math.ceil(missing / rows * 100) / 100:.2f}"
            )
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            if pd.api.types.is_complex_dtype(series):
                problems.append(
                    f"feature {column!r} holds complex numbers, which cannot be encoded"
                )
                continue
            values = series.to_numpy(dtype="float64", na_value=np.nan)
            infinite = int(np.isinf(values).sum())
            if infinite:
                problems.append(f"feature {column!r} has {infinite} infinite values")
            numeric.append(column)
        elif pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(
            series
        ):
            problems.append(
                f"feature {column!r} is a date/time ({series.dtype}); convert it to numbers "
                "(an age in days, a weekday) before training"
            )
        else:
            kinds = {type(v).__name__ for v in series.dropna()}
            if kinds - {"str"}:
                problems.append(
                    f"feature {column!r} mixes value types ({', '.join(sorted(kinds))}); a text "
                    "column must hold only text, a numeric column only numbers"
                )
                continue
            distinct = series.nunique()
            if distinct > max_categories:
                problems.append(
                    f"feature {column!r} is text with {distinct} distinct values, too many to "
                    f"one-hot encode (limit --max-categories {max_categories}); drop it or "
                    "raise the limit"
                )
                continue
            categorical.append(column)
    return problems, numeric, categorical


def _target_problems(target: pd.Series, task: Task, test_size: float) -> list[str]:
    name = target.name
    missing = int(target.isna().sum())
    if missing:
        return [f"target {name!r} has {missing} missing values; drop those rows first"]
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
            return [f"regression target {name!r} must be numeric, it is {target.dtype}"]
        infinite = int(np.isinf(target.to_numpy(dtype="float64")).sum())
        return [f"target {name!r} has {infinite} infinite values"] if infinite else []
    counts = target.value_counts()
    if len(counts) < 2:
        return [f"classification target {name!r} has a single class {counts.index[0]!r}"]
    problems = []
    rare = counts[counts < 2]
    if len(rare):
        problems.append(
            f"classes with fewer than 2 rows cannot be split for evaluation: "
            f"{', '.join(repr(c) for c in rare.index[:10])}"
        )
    test_rows = math.ceil(len(target) * test_size)
    if len(counts) > test_rows:
        problems.append(
            f"{len(counts)} classes but only {test_rows} held-out rows; raise --test-size or "
            "add data"
        )
    return problems


def _normalize_target(target: pd.Series, task: Task) -> pd.Series:
    if task == "regression":
        return target.astype("float64")
    if pd.api.types.is_bool_dtype(target):
        return target.astype(bool)
    if pd.api.types.is_numeric_dtype(target):
        values = target.to_numpy(dtype="float64")
        if np.all(np.mod(values, 1) == 0):
            return target.astype("int64")
        return target.astype("float64")
    return target.astype(str)


def prepare(
    dataset: Dataset,
    *,
    task: TaskChoice = "auto",
    min_rows: int = 50,
    max_missing_fraction: float = 0.0,
    max_categories: int = 100,
    test_size: float = 0.2,
) -> PreparedData:
    """Validate ``dataset`` and split it into features and target. Raises ``DataError``."""
    frame = dataset.frame
    frame.columns = [str(c) for c in frame.columns]
    where = dataset.data_uri
    if frame.shape[1] == 0 or len(frame) == 0:
        raise DataError([f"{where} has no rows"])
    duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicated:
        raise DataError([f"{where} has duplicate columns: {', '.join(duplicated)}"])
    if dataset.target not in frame.columns:
        shown = ", ".join(list(frame.columns)[:20])
        raise DataError([f"target column {dataset.target!r} is not in {where} (columns: {shown})"])
    columns = [c for c in frame.columns if c != dataset.target]
    if not columns:
        raise DataError([f"{where} has no feature columns besides the target"])
    if len(frame) < min_rows:
        raise DataError([f"{where} has {len(frame)} rows; at least {min_rows} are needed"])

    target = frame[dataset.target]
    if task == "auto":
        chosen, why = detect_task(target.dropna())
        log.info("task: %s (%s; override with --task)", chosen, why)
    else:
        chosen = task
    problems = _target_problems(target, chosen, test_size)
    empty = _empty_strings_as_missing(frame, columns)
    feature_problems, numeric, categorical = _feature_problems(
        frame, columns, max_missing_fraction, max_categories, empty
    )
    problems.extend(feature_problems)
    if problems:
        raise DataError(problems)

    features = frame[columns].copy()
    for column in numeric:
        if pd.api.types.is_bool_dtype(features[column]):
            features[column] = features[column].astype("float64")
    for column in categorical:
        # NaN for every missing value (pd.NA and None too): the imputer reads NaN as missing
        text = features[column].astype(object)
        features[column] = text.where(text.notna(), np.nan)
    y = _normalize_target(target, chosen)
    classes = sorted(y.unique().tolist()) if chosen == "classification" else None
    return PreparedData(
        features=features,
        target=y,
        task=chosen,
        numeric=numeric,
        categorical=categorical,
        classes=classes,
        source_dtypes={c: str(frame[c].dtype) for c in columns},
    )
