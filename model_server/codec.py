"""What V1 and V2 decoding share: the decoded request, and the checks that turn values a client
sent into validated rows (``model_server.schema.Rows``).

Every client mistake raises ``kserve.errors.InvalidInput`` (HTTP 400) with a message naming the
instance, feature or tensor at fault. A missing value (``model_registry.values``) is not a mistake,
whatever the feature: it is taken, imputed by either engine as in training, and counted by feature
in the decoded request (``Decoded.missing``). ``codec_v1`` and ``codec_v2`` decode and encode each
protocol's documents with these checks. Decoding is transport-free: it knows nothing of HTTP, gRPC,
bodies or headers, nor of how a model is loaded or run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

from model_registry.values import LIMIT, MISSING_CATEGORY, category_array, is_missing
from model_server.schema import PREDICT, Columns, FeatureSchema, Rows

NUMBER = (int, float)
IMPUTED = "which the model imputes as in training"
JSON_MISSING = f"a value you do not have may be null, {IMPUTED}"
"""What a V1 client may send for a value it does not have."""
TENSOR_MISSING = (
    'a value you do not have may be null (NaN in binary data and gRPC contents, "" for a text '
    f"feature), {IMPUTED}"
)
"""What a V2 client may send for a value it does not have, in each encoding."""

Missing = dict[str, int]
"""How many values of each feature a request left missing (each imputed as in training);
features with none are left out."""
Checked = tuple[Rows, Missing]
"""Validated rows and their missing values."""


@dataclass(frozen=True)
class Decoded:
    """A validated request: its rows, and what to return."""

    frame: Rows
    probabilities: bool
    outputs: tuple[str, ...] = (PREDICT,)
    request_id: str | None = None
    parameters: dict[str, Any] | None = None
    binary_outputs: frozenset[str] = frozenset()
    """Outputs to return as binary tensor data (REST binary extension)."""
    missing: Missing = field(default_factory=dict)
    """Missing values by feature, imputed by the engine as in training."""


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list | dict):
        return "a list" if isinstance(value, list) else "an object"
    return repr(value)


def check_rows(count: int, schema: FeatureSchema, what: str) -> None:
    if count == 0:
        raise InvalidInput(f"empty batch: {what} has no rows")
    if count > schema.max_rows:
        raise InvalidInput(
            f"batch of {count} rows is larger than the limit of {schema.max_rows} "
            "(split it, or raise --max-batch-rows)"
        )


def _outside(schema: FeatureSchema, name: str, value: float) -> str | None:
    """Why ``value`` is outside feature ``name``'s computable range, or None."""
    low, high = schema.limit(name)
    if low <= value <= high:
        return None
    return (
        f"is {value!r}, outside the range this model computes with, {low:.4g} to {high:.4g} "
        f"(within {LIMIT:.3g} training standard deviations of the feature's mean: past it, "
        "the model's float32 arithmetic overflows)"
    )


def _bad_value(schema: FeatureSchema, name: str, values: Sequence[Any], where: str) -> InvalidInput:
    """The first value of feature ``name`` that the model cannot take, as an error (a missing
    value it takes, whatever the feature)."""
    categorical = name in schema.categorical
    for index, value in enumerate(values):
        place = f"feature {name!r} of {where} {index}"
        if is_missing(value) and (categorical or not isinstance(value, str)):
            continue
        if categorical:
            if not isinstance(value, str):
                return InvalidInput(f"{place} must be a string (a category), got {describe(value)}")
            continue
        if isinstance(value, bool) or not isinstance(value, NUMBER):
            return InvalidInput(f"{place} must be a number, got {describe(value)}")
        if not math.isfinite(value):
            return InvalidInput(f"{place} is not a finite number ({value})")
        outside = _outside(schema, name, float(value))
        if outside is not None:
            return InvalidInput(f"{place} {outside}")
    return InvalidInput(f"feature {name!r} has a value the model cannot take")


def _missing_numbers(schema: FeatureSchema, name: str, array: np.ndarray[Any, Any]) -> int | None:
    """How many values of a float64 column are missing (NaN), or None when another is outside
    its feature's range. Nothing more is computed when every value is in range."""
    low, high = schema.limit(name)
    good = (array >= low) & (array <= high)
    if good.all():
        return 0
    missing = np.isnan(array)
    return int(np.count_nonzero(missing)) if (good | missing).all() else None


def _column(
    schema: FeatureSchema, name: str, values: Any, where: str
) -> tuple[np.ndarray[Any, Any], int]:
    """A validated column, and how many of its values are missing: float64 array for numbers,
    object array of str for categories (NaN for a missing value, which ``null``, NaN and ``""``
    are: ``model_registry.values``).

    ``values`` is a list (JSON) or an array (binary data); an array of numbers for a numeric
    feature is taken as is, anything else is checked value by value.
    """
    if isinstance(values, np.ndarray):
        if name not in schema.categorical and values.dtype.kind in "iuf":
            array = values.astype(np.float64)
            missing = _missing_numbers(schema, name, array)
            if missing is not None:
                return array, missing
        values = values.tolist()
    kinds = {type(v) for v in values}
    if name in schema.categorical:
        if kinds <= {str, type(None)}:
            missing = values.count(None) + values.count(MISSING_CATEGORY)
            return category_array(values), missing
        raise _bad_value(schema, name, values, where)
    if kinds <= {int, float, type(None)}:
        array = np.array(values, dtype=np.float64)  # None -> nan
        missing = _missing_numbers(schema, name, array)
        if missing is not None:
            return array, missing
    raise _bad_value(schema, name, values, where)


def rows_from_columns(schema: FeatureSchema, columns: Sequence[Any], where: str) -> Checked:
    arrays = []
    missing: Missing = {}
    for name, values in zip(schema.names, columns, strict=True):
        array, count = _column(schema, name, values, where)
        arrays.append(array)
        if count:
            missing[name] = count
    if schema.numeric_only:
        return np.column_stack(arrays), missing
    return Columns(dict(zip(schema.names, arrays, strict=True)), len(arrays[0])), missing


def numeric_matrix(schema: FeatureSchema, rows: list[Any], where: str) -> Checked:
    """A list of equal-length rows of plain numbers or nulls for an all-numeric model, as a
    matrix, and its missing values."""
    kinds = {type(v) for row in rows for v in row}
    if kinds <= {int, float, type(None)}:
        matrix = np.array(rows, dtype=np.float64)  # None -> nan
        missing = schema.missing_in_range(matrix)
        if missing is not None:
            return matrix, missing
    return rows_from_columns(schema, list(zip(*rows, strict=True)), where)


def name_mismatch(
    expected: Sequence[str],
    given: Iterable[str],
    missing_label: str,
    unknown_label: str,
    missing_hint: str = "",
) -> str:
    """``missing ...: a, b (hint); unknown ...: c`` for names that do not match the model's."""
    given_set = set(given)
    missing = [n for n in expected if n not in given_set]
    unknown = sorted(given_set - set(expected))
    parts = []
    if missing:
        hint = f" ({missing_hint})" if missing_hint else ""
        parts.append(f"{missing_label}: {', '.join(missing)}{hint}")
    if unknown:
        parts.append(f"{unknown_label}: {', '.join(unknown)}")
    return "; ".join(parts)


def some_names(names: Sequence[str], count: int = 5) -> str:
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")
