"""Load training data from a URI or a bundled sample, and validate it before any fitting.

One meaning of a missing value, whatever the file format (``normalize_frame``, applied on
loading and again before validation): a text column is an object column of ``str`` with NaN
for each missing value, missing being what ``model_registry.values`` reads as a missing
category (``None``, NaN, ``""``; and pandas' own ``pd.NA``); a number column is float64 with NaN
when it has missing values (int64 or bool when it has none). Pandas and pyarrow give the same
table other dtypes from CSV and Parquet (``None`` or NaN, Arrow strings, categoricals, nullable
integers, float32); after this they give one frame, which trains one model.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import logging
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
import numpy as np
import pandas as pd

from model_registry.values import MISSING_CATEGORY
from trainer.errors import ConfigError, DataError
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
    empty_strings: Mapping[str, int] = field(default_factory=dict)
    """How many ``""`` each text column held in the file, read as missing values."""


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
    dropped: list[str] = field(default_factory=list)
    """Columns of the data left out of the features (``--drop``, or not named by
    ``--features``), in the data's order; the target is not among them."""
    warnings: list[str] = field(default_factory=list)
    """What the run should tell its user besides the log (columns that look like ids)."""


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


Column = np.ndarray[Any, Any] | None
"""A column's values made canonical, or None when they already are."""
NUMBER_KINDS = {"integer", "floating", "mixed-integer-float", "decimal"}
"""What ``pd.api.types.infer_dtype`` calls a column of numbers."""


def _objects(values: np.ndarray[Any, Any]) -> tuple[Column, int]:
    """An object column (pandas' missing values already NaN): text, bools or numbers."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    missing = pd.isna(values)
    if kind == "string":
        # As model_registry.values.category_array reads a category (vectorised): "" is missing
        empty = values == MISSING_CATEGORY
        return np.where(empty, np.nan, values), int(empty.sum())
    if kind == "empty":
        return np.full(len(values), np.nan), 0
    if kind == "boolean":
        return values.astype(np.float64 if missing.any() else bool), 0
    if kind in NUMBER_KINDS:
        if kind == "integer" and not missing.any():
            try:
                return values.astype(np.int64), 0
            except OverflowError:  # past int64, as a CSV reader leaves it
                return None, 0
        return values.astype(np.float64), 0
    return None, 0  # mixed kinds, bytes, dates: as they are, for validation to name


def _width(dtype: Any) -> int:
    """Bytes per value of a numpy, nullable or Arrow number dtype."""
    return int(np.dtype(getattr(dtype, "numpy_dtype", dtype)).itemsize)


def _column(series: pd.Series) -> tuple[Column, int]:
    """``series``' values with one meaning of missing (or None: they have it already), and
    how many ``""`` it read as missing."""
    dtype = series.dtype
    if dtype in (np.float64, np.int64, np.bool_):
        return None, 0
    if isinstance(dtype, pd.CategoricalDtype | pd.StringDtype) or pd.api.types.is_object_dtype(
        dtype
    ):
        return _objects(series.to_numpy(dtype=object, na_value=np.nan))
    if pd.api.types.is_bool_dtype(dtype):  # a nullable boolean column
        missing = bool(series.isna().any())
        return series.to_numpy(dtype=np.float64 if missing else bool, na_value=np.nan), 0
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        if pd.api.types.is_integer_dtype(dtype) and not series.isna().any():
            values = series.to_numpy()
            if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
                return None, 0  # as a CSV reader leaves it
            return values.astype(np.int64), 0
        if pd.api.types.is_float_dtype(dtype) and _width(dtype) < 8:
            # A float32 (or float16) value means the decimal it prints as, which is what a CSV
            # file holds and what a client sends in JSON: 0.1 stays 0.1, not 0.10000000149.
            short = series.to_numpy(dtype=np.float32, na_value=np.nan)
            return short.astype(str).astype(np.float64), 0
        return series.to_numpy(dtype=np.float64, na_value=np.nan), 0
    if pd.api.types.is_string_dtype(dtype):  # Arrow-backed text
        return _objects(series.to_numpy(dtype=object, na_value=np.nan))
    return None, 0  # dates, times, complex numbers: as they are, for validation to name


def normalize_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """``frame`` with one meaning of a missing value in every column (module docstring), and
    how many ``""`` each text column read as missing. Idempotent; the input is not changed."""
    normal = frame.copy(deep=False)  # each changed column is replaced, none written into
    empty: dict[str, int] = {}
    for position in range(frame.shape[1]):
        values, count = _column(frame.iloc[:, position])
        if values is not None:
            normal.isetitem(position, values)
        if count:
            empty[str(frame.columns[position])] = count
    return normal, empty


def _read_csv(raw: bytes, gzipped: bool) -> pd.DataFrame:
    """A CSV file as pandas reads it (numbers exactly: ``round_trip``, not the default parser,
    which is off by one bit in about a third of the values), except that text columns keep
    every value as written: pandas reads ``NA``, ``None``, ``null``, ``N/A``, ``nan`` and the
    like as missing, where they are text in a Parquet file of the same table; only an empty
    field (``""``) is a missing category."""
    compression: Literal["gzip"] | None = "gzip" if gzipped else None
    frame = pd.read_csv(io.BytesIO(raw), compression=compression, float_precision="round_trip")
    candidates = [
        position
        for position in range(frame.shape[1])
        if pd.api.types.is_object_dtype(frame.dtypes.iloc[position])
        or frame.iloc[:, position].isna().all()
    ]
    if not candidates:
        return frame
    verbatim = pd.read_csv(
        io.BytesIO(raw),
        compression=compression,
        usecols=candidates,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
    )
    if verbatim.shape != (len(frame), len(candidates)):
        return frame
    for index, position in enumerate(candidates):
        parsed, written = frame.iloc[:, position], verbatim.iloc[:, index]
        present = parsed.dropna()
        if len(present):
            text = pd.api.types.infer_dtype(present, skipna=True) == "string"
        else:  # all missing to pandas: text when any field is written out (e.g. only "NA")
            text = bool((written != "").any())
        if text:
            frame.isetitem(position, written.to_numpy(dtype=object))
    return frame


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
    frame, empty = normalize_frame(frame)
    return Dataset(frame, target, f"sample:{sample}", digest, empty)


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
            frame = _read_csv(raw, gzipped=uri.lower().split("?")[0].endswith(".gz"))
    except (ValueError, pd.errors.ParserError, OSError) as error:
        raise DataError([f"cannot parse {uri} as {fmt}: {error}"]) from error
    frame, empty = normalize_frame(frame)
    return Dataset(frame, target, uri, digest, empty)


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
                each = ", one per row" if distinct == rows - missing else ""
                problems.append(
                    f"feature {column!r} is text with {distinct} distinct values{each}, too many "
                    f"to one-hot encode (limit --max-categories {max_categories}); leave it out "
                    f"with --drop {shlex.quote(column)}, or raise the limit to "
                    f"--max-categories {distinct}"
                )
                continue
            categorical.append(column)
    return problems, numeric, categorical


def _whole_numbers(values: np.ndarray[Any, Any]) -> bool:
    return bool(np.isfinite(values).all() and np.all(np.mod(values, 1) == 0))


def looks_like_id(series: pd.Series) -> str | None:
    """What makes ``series`` look like an identifier rather than a feature, or None: a whole
    number, or text, unique to each row (a customer or order number, a row index written
    out). Such a column tells a model nothing about rows it has not seen."""
    rows, head = len(series), series.head(1000)  # the first rows: a quick no for most columns
    if rows < 2 or pd.api.types.is_bool_dtype(series) or not head.is_unique:
        return None
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_complex_dtype(series):
        if not _whole_numbers(head.to_numpy(dtype=np.float64, na_value=np.nan)):
            return None
        if series.isna().any() or not _whole_numbers(series.to_numpy(dtype=np.float64)):
            return None
        kind = "a whole number"
    elif pd.api.types.infer_dtype(head, skipna=False) == "string":
        if pd.api.types.infer_dtype(series, skipna=False) != "string":
            return None
        kind = "text"
    else:
        return None
    return f"{kind} unique to each of the {rows} rows" if series.nunique() == rows else None


def _id_warnings(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    warnings = []
    for column in columns:
        why = looks_like_id(frame[column])
        if why is not None:
            warning = (
                f"feature {column!r} looks like an id ({why}): a model learns nothing from it "
                f"that holds for new rows; leave it out with --drop {shlex.quote(column)}"
            )
            log.warning("%s", warning)
            warnings.append(warning)
    return warnings


def _shown(columns: Sequence[str], limit: int = 50) -> str:
    names = ", ".join(repr(c) for c in columns[:limit])
    return names + (f", ... ({len(columns) - limit} more)" if len(columns) > limit else "")


def _unknown_columns(flag: str, names: Sequence[str], columns: Sequence[str], where: str) -> str:
    """A problem naming the columns ``flag`` names that ``where`` does not have."""
    unknown = [name for name in names if name not in columns]
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, columns, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    noun = "a column" if len(unknown) == 1 else "columns"
    return f"{flag} names {noun} not in {where}: {', '.join(hints)}; its columns: {_shown(columns)}"


def select_columns(
    columns: Sequence[str],
    target: str,
    where: str,
    *,
    drop: Sequence[str] = (),
    features: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """The feature columns and the columns left out (both in the data's order), from
    ``--features`` (only these) or ``--drop`` (all but these); the target is neither.
    Raises ``DataError`` naming any column the data does not have, with those it has, and
    ``ConfigError`` when the target is named."""
    chosen = list(features) if features else None
    named = chosen if chosen is not None else list(drop)
    flag = "--features" if chosen is not None else "--drop"
    if target in named:
        raise ConfigError(f"{flag} names the target {target!r}, which is never a feature")
    if any(name not in columns for name in named):
        raise DataError([_unknown_columns(flag, named, columns, where)])
    keep = set(chosen) if chosen is not None else {c for c in columns if c not in set(drop)}
    keep.discard(target)
    kept = [c for c in columns if c in keep]
    return kept, [c for c in columns if c not in keep and c != target]


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


def check_features(features: pd.DataFrame, numeric: list[str], categorical: list[str]) -> None:
    """What the pipeline is fitted on holds one meaning of missing: numbers as float64 or int64
    (NaN missing), categories as ``str`` or NaN. ``None`` in a category column would be one-hot
    encoded as a category of its own (scikit-learn's encoders keep ``None`` apart from NaN, and
    the imputer reads only NaN as missing), where the ONNX graph and the server impute it."""
    for column in numeric:
        if features[column].dtype not in (np.float64, np.int64):
            raise RuntimeError(f"numeric feature {column!r} is {features[column].dtype}")
    for column in categorical:
        values = features[column].to_numpy()
        missing = values[pd.isna(values)]
        if (
            values.dtype != object
            or pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty")
            or not all(type(v) is float and math.isnan(v) for v in missing)
        ):
            kinds = sorted({type(v).__name__ for v in values})
            raise RuntimeError(f"categorical feature {column!r} holds {', '.join(kinds)}")


def _check_shape(frame: pd.DataFrame, target: str, where: str) -> None:
    if frame.shape[1] == 0 or len(frame) == 0:
        raise DataError([f"{where} has no rows"])
    duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicated:
        raise DataError([f"{where} has duplicate columns: {', '.join(duplicated)}"])
    if target not in frame.columns:
        shown = ", ".join(list(frame.columns)[:20])
        raise DataError([f"target column {target!r} is not in {where} (columns: {shown})"])


def prepare(
    dataset: Dataset,
    *,
    task: TaskChoice = "auto",
    min_rows: int = 50,
    max_missing_fraction: float = 0.0,
    max_categories: int = 100,
    test_size: float = 0.2,
    drop: Sequence[str] = (),
    features: Sequence[str] | None = None,
) -> PreparedData:
    """Validate ``dataset`` and split it into features and target, leaving out ``drop`` or
    keeping only ``features`` (``select_columns``). Raises ``DataError``."""
    frame, empty = normalize_frame(dataset.frame)  # again: a Dataset may be made in memory
    empty = {**dataset.empty_strings, **empty}
    frame.columns = [str(c) for c in frame.columns]
    where = dataset.data_uri
    _check_shape(frame, dataset.target, where)
    columns, dropped = select_columns(
        list(frame.columns), dataset.target, where, drop=drop, features=features
    )
    if dropped:
        log.info("left out of the features: %s", ", ".join(dropped))
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
    for column, count in empty.items():
        if column in columns:
            log.info(
                'feature %r: %d empty strings ("") read as missing values, as the server reads '
                "them",
                column,
                count,
            )
    feature_problems, numeric, categorical = _feature_problems(
        frame, columns, max_missing_fraction, max_categories, empty
    )
    named = set(features or ())  # a column named in --features is meant to be one
    accepted = set(numeric) | set(categorical)  # not those already refused
    warnings = _id_warnings(frame, [c for c in columns if c in accepted and c not in named])
    problems.extend(feature_problems)
    if problems:
        raise DataError(problems)

    x = frame[columns].copy()
    for column in numeric:
        if x[column].dtype not in (np.float64, np.int64):  # bools, integers past int64
            x[column] = x[column].astype("float64")
    check_features(x, numeric, categorical)
    y = _normalize_target(target, chosen)
    classes = sorted(y.unique().tolist()) if chosen == "classification" else None
    return PreparedData(
        features=x,
        target=y,
        task=chosen,
        numeric=numeric,
        categorical=categorical,
        classes=classes,
        source_dtypes={c: str(frame[c].dtype) for c in columns},
        dropped=dropped,
        warnings=warnings,
    )
