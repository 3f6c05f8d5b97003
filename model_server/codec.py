"""Decode and validate V1 and V2 (Open Inference Protocol) requests; encode responses.

Every client mistake raises ``kserve.errors.InvalidInput`` (HTTP 400) with a message naming the
instance, feature or tensor at fault. Decoding is transport-free: the HTTP handlers and the
``kserve.Model.predict`` path share it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from kserve.errors import InvalidInput

from model_registry.metadata import ModelMetadata

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
V2_NUMERIC = frozenset(
    {
        "FP16",
        "FP32",
        "FP64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
    }
)
V2_INTEGER = frozenset(t for t in V2_NUMERIC if "INT" in t)
INTEGER_RANGES = {
    name: (int(np.iinfo(name.lower()).min), int(np.iinfo(name.lower()).max)) for name in V2_INTEGER
}
"""The values each integer datatype can hold (the spec's INT8..UINT64)."""
_NUMBER = (int, float)


@dataclass(frozen=True)
class FeatureSchema:
    """What the served model takes, from its registry metadata."""

    names: tuple[str, ...]
    categorical: frozenset[str]
    nullable: frozenset[str]
    classes: tuple[Any, ...] | None
    max_rows: int

    @classmethod
    def from_metadata(cls, metadata: ModelMetadata, max_rows: int) -> FeatureSchema:
        return cls(
            names=tuple(f.name for f in metadata.features),
            categorical=frozenset(f.name for f in metadata.features if f.kind == "categorical"),
            nullable=frozenset(f.name for f in metadata.features if f.nullable),
            classes=tuple(metadata.target.classes) if metadata.target.classes is not None else None,
            max_rows=max_rows,
        )

    @property
    def numeric_only(self) -> bool:
        return not self.categorical

    def outputs(self) -> tuple[str, ...]:
        """Output names this model can return."""
        return (PREDICT, PREDICT_PROBA) if self.classes is not None else (PREDICT,)


class Columns:
    """Validated rows of a model with categorical features, without pandas on the request path:
    one array per feature in model order (float64 for numbers, NaN for missing; object arrays
    of strings for categories, NaN for missing as in the training data). ``frame()`` makes the
    DataFrame the scikit-learn pipeline takes; ONNX Runtime and drift read the arrays."""

    __slots__ = ("arrays", "count")

    def __init__(self, arrays: dict[str, np.ndarray[Any, Any]], count: int) -> None:
        self.arrays = arrays
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        return self.arrays[name]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.arrays, columns=list(self.arrays))

    def records(self) -> list[dict[str, Any]]:
        """One ``{feature: value}`` per row (missing values as NaN)."""
        names = list(self.arrays)
        values = zip(*(a.tolist() for a in self.arrays.values()), strict=True)
        return [dict(zip(names, row, strict=True)) for row in values]


Rows = Columns | np.ndarray[Any, Any]
"""Validated rows in feature order: a float64 matrix for all-numeric models, else Columns."""


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


def _describe(value: Any) -> str:
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


def _check_rows(count: int, schema: FeatureSchema, what: str) -> None:
    if count == 0:
        raise InvalidInput(f"empty batch: {what} has no rows")
    if count > schema.max_rows:
        raise InvalidInput(
            f"batch of {count} rows is larger than the limit of {schema.max_rows} "
            "(split it, or raise --max-batch-rows)"
        )


def _bad_value(schema: FeatureSchema, name: str, values: Sequence[Any], where: str) -> InvalidInput:
    """The first value of feature ``name`` that the model cannot take, as an error."""
    categorical = name in schema.categorical
    nullable = name in schema.nullable
    for index, value in enumerate(values):
        place = f"feature {name!r} of {where} {index}"
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if nullable:
                continue
            return InvalidInput(
                f"{place} is missing ({_describe(value)}); the model was trained without "
                "missing values for it"
            )
        if categorical:
            if not isinstance(value, str):
                return InvalidInput(
                    f"{place} must be a string (a category), got {_describe(value)}"
                )
            continue
        if isinstance(value, bool) or not isinstance(value, _NUMBER):
            return InvalidInput(f"{place} must be a number, got {_describe(value)}")
        if not math.isfinite(value):
            return InvalidInput(f"{place} is not a finite number ({value})")
    return InvalidInput(f"feature {name!r} has a value the model cannot take")


def _column(schema: FeatureSchema, name: str, values: Any, where: str) -> Any:
    """A validated column: float64 array for numbers, object array of str for categories.

    ``values`` is a list (JSON) or an array (binary data); an array of numbers for a numeric
    feature is taken as is, anything else is checked value by value.
    """
    if isinstance(values, np.ndarray):
        if name not in schema.categorical and values.dtype.kind in "iuf":
            array = values.astype(np.float64)
            if np.isfinite(array).all() or (name in schema.nullable and not np.isinf(array).any()):
                return array
        values = values.tolist()
    kinds = {type(v) for v in values}
    if name in schema.categorical:
        allowed = {str, type(None)} if name in schema.nullable else {str}
        if kinds <= allowed:
            if type(None) in kinds:
                # NaN, as in the training data: the pipeline's imputer (missing_values=nan)
                # does not take None for missing, and would one-hot it as an unknown category.
                values = [np.nan if v is None else v for v in values]
            return np.array(values, dtype=object)
        raise _bad_value(schema, name, values, where)
    allowed_num = {int, float, type(None)} if name in schema.nullable else {int, float}
    if kinds <= allowed_num:
        array = np.array(values, dtype=np.float64)  # None -> nan
        finite = np.isfinite(array)
        if finite.all() or (name in schema.nullable and not np.isinf(array).any()):
            return array
    raise _bad_value(schema, name, values, where)


def _frame_from_columns(schema: FeatureSchema, columns: Sequence[Any], where: str) -> Rows:
    arrays = [
        _column(schema, name, values, where)
        for name, values in zip(schema.names, columns, strict=True)
    ]
    if schema.numeric_only:
        return np.column_stack(arrays)
    return Columns(dict(zip(schema.names, arrays, strict=True)), len(arrays[0]))


def _numeric_matrix(schema: FeatureSchema, rows: list[Any], where: str) -> Rows:
    """A list of equal-length rows of plain numbers for an all-numeric model, as a matrix."""
    kinds = {type(v) for row in rows for v in row}
    if kinds <= {int, float}:
        matrix = np.array(rows, dtype=np.float64)
        if np.isfinite(matrix).all():
            return matrix
    return _frame_from_columns(schema, list(zip(*rows, strict=True)), where)


# -- V1 --------------------------------------------------------------------------------------


def _v1_objects(instances: list[Any], schema: FeatureSchema) -> Rows:
    expected = set(schema.names)
    for index, row in enumerate(instances):
        if not isinstance(row, dict):
            raise InvalidInput(
                f"instance {index} is {_describe(row)}; every instance must be an object "
                "when the first one is"
            )
        if row.keys() != expected:
            problem = _name_mismatch(schema.names, row, "missing features", "unknown features")
            raise InvalidInput(f"instance {index} has {problem}")
    columns = [[row[name] for row in instances] for name in schema.names]
    return _frame_from_columns(schema, columns, "instance")


def _v1_lists(instances: list[Any], schema: FeatureSchema) -> Rows:
    width = len(schema.names)
    for index, row in enumerate(instances):
        if not isinstance(row, list):
            raise InvalidInput(
                f"instance {index} is {_describe(row)}; send a list of {width} feature values "
                "or an object keyed by feature name"
            )
        if len(row) != width:
            raise InvalidInput(
                f"instance {index} has {len(row)} values; the model takes {width} features "
                f"({_some(schema.names)})"
            )
    if schema.numeric_only:
        return _numeric_matrix(schema, instances, "instance")
    return _frame_from_columns(schema, list(zip(*instances, strict=True)), "instance")


def _name_mismatch(
    expected: Sequence[str], given: Iterable[str], missing_label: str, unknown_label: str
) -> str:
    """``missing ...: a, b; unknown ...: c`` for names that do not match the model's."""
    given_set = set(given)
    missing = [n for n in expected if n not in given_set]
    unknown = sorted(given_set - set(expected))
    parts = []
    if missing:
        parts.append(f"{missing_label}: {', '.join(missing)}")
    if unknown:
        parts.append(f"{unknown_label}: {', '.join(unknown)}")
    return "; ".join(parts)


def _some(names: Sequence[str], count: int = 5) -> str:
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")


def decode_v1(body: Any, schema: FeatureSchema) -> Decoded:
    """``{"instances" | "inputs": [[...]] | [{"feature": value}], "return_probabilities"}``.

    ``inputs`` is read like ``instances``, as KServe's own V1 servers do
    (``kserve.utils.utils.get_predict_input``).
    """
    if not isinstance(body, dict):
        raise InvalidInput('request body must be a JSON object such as {"instances": [[...]]}')
    key = "instances" if "instances" in body else "inputs"
    if key not in body:
        raise InvalidInput(
            "missing 'instances': send {\"instances\": [[v1, v2, ...], ...]} with values in "
            f"feature order ({_some(schema.names)}) or objects keyed by feature name"
        )
    instances = body[key]
    if not isinstance(instances, list):
        raise InvalidInput(f"'{key}' must be a list of rows, got {_describe(instances)}")
    _check_rows(len(instances), schema, f"'{key}'")
    probabilities = body.get("return_probabilities", False)
    if not isinstance(probabilities, bool):
        raise InvalidInput("'return_probabilities' must be true or false")
    if probabilities and schema.classes is None:
        raise InvalidInput(
            "'return_probabilities' is only for classifiers; this model is a regressor"
        )
    if isinstance(instances[0], dict):
        return Decoded(_v1_objects(instances, schema), probabilities)
    return Decoded(_v1_lists(instances, schema), probabilities)


def encode_v1(
    labels: np.ndarray[Any, Any],
    probabilities: np.ndarray[Any, Any] | None,
    schema: FeatureSchema,
    model_name: str,
    model_version: str,
) -> dict[str, Any]:
    """``{"predictions": [...], "model_name", "model_version"}`` (+ probabilities and classes)."""
    response: dict[str, Any] = {
        "predictions": labels.tolist(),
        "model_name": model_name,
        "model_version": model_version,
    }
    if probabilities is not None:
        response["probabilities"] = probabilities.tolist()
        response["classes"] = list(schema.classes or ())
    return response


# -- V2 --------------------------------------------------------------------------------------

TensorData = list[Any] | np.ndarray[Any, Any]
"""A tensor's values: a JSON list, or an array decoded from binary data (REST or gRPC)."""


def check_shape(name: Any, shape: Any) -> list[int]:
    """A tensor's shape: a non-empty list of non-negative integers, or InvalidInput."""
    if (
        not isinstance(shape, list | tuple)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidInput(f"input {name!r} needs a 'shape': a list of non-negative integers")
    return list(shape)


def _tensor_values(tensor: dict[str, Any], name: str) -> tuple[list[int], TensorData]:
    shape = check_shape(name, tensor.get("shape"))
    data = tensor.get("data")
    if isinstance(data, np.ndarray):
        values: TensorData = data.reshape(-1)
    elif isinstance(data, list):
        values = data
        if data and isinstance(data[0], list):
            flat: list[Any] = []
            stack: list[Any] = [data]
            while stack:  # flatten nested lists in row-major order
                item = stack.pop()
                if isinstance(item, list):
                    stack.extend(reversed(item))
                else:
                    flat.append(item)
            values = flat
    else:
        parameters = tensor.get("parameters")
        if isinstance(parameters, dict) and "binary_data_size" in parameters:
            raise InvalidInput(
                f"input {name!r} has binary_data_size but the request has no "
                "Inference-Header-Content-Length header to say where the binary data starts"
            )
        raise InvalidInput(f"input {name!r} needs 'data': a list of values")
    size = math.prod(shape)
    if len(values) != size:
        raise InvalidInput(
            f"input {name!r} has {len(values)} values but its shape {shape} needs {size}"
        )
    return shape, values


def _check_datatype(
    schema: FeatureSchema, tensor_name: str, datatype: Any, features: Sequence[str]
) -> None:
    if not isinstance(datatype, str):
        raise InvalidInput(f"input {tensor_name!r} needs a 'datatype' such as FP64 or BYTES")
    for feature in features:
        if feature in schema.categorical and datatype != "BYTES":
            raise InvalidInput(
                f"input {tensor_name!r} is {datatype}, but feature {feature!r} is categorical: "
                "send it as BYTES (strings)"
            )
        if feature not in schema.categorical and datatype not in V2_NUMERIC:
            raise InvalidInput(
                f"input {tensor_name!r} is {datatype}, but feature {feature!r} is numeric: send "
                f"one of {', '.join(sorted(V2_NUMERIC))}"
            )


def _check_integers(tensor_name: str, datatype: str, values: TensorData) -> None:
    """JSON values of an integer datatype must be integers the datatype can hold.

    Binary data needs no check: its bytes are read as that datatype.
    """
    if datatype not in V2_INTEGER or isinstance(values, np.ndarray):
        return
    low, high = INTEGER_RANGES[datatype]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, _NUMBER):
            continue  # reported, with its feature and row, by the column checks
        if isinstance(value, float) and not value.is_integer():
            raise InvalidInput(
                f"input {tensor_name!r} is {datatype} but holds {value}, which is not an integer"
            )
        if not low <= value <= high:
            raise InvalidInput(
                f"input {tensor_name!r} is {datatype} (values {low} to {high}) but holds {value}"
            )


def _flag(parameters: Any, key: str, default: bool, where: str) -> bool:
    if parameters is None:
        return default
    if not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' of {where} must be an object")
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter {key!r} of {where} must be true or false")
    return value


def _requested_outputs(
    body: dict[str, Any], schema: FeatureSchema
) -> tuple[tuple[str, ...], frozenset[str]]:
    """The outputs to return (all when none are named, as the spec says) and which in binary."""
    binary_default = _flag(body.get("parameters"), "binary_data_output", False, "the request")
    requested = body.get("outputs")
    if requested is None:
        every = schema.outputs()
        return every, frozenset(every if binary_default else ())
    if not isinstance(requested, list) or not requested:
        raise InvalidInput("'outputs' must be a non-empty list of {\"name\": ...} objects")
    names: list[str] = []
    binary: set[str] = set()
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in schema.outputs():
            raise InvalidInput(
                f"unknown output {name!r}; this model has outputs: {', '.join(schema.outputs())}"
            )
        assert isinstance(item, dict)
        names.append(name)
        if _flag(item.get("parameters"), "binary_data", binary_default, f"output {name!r}"):
            binary.add(name)
    return tuple(dict.fromkeys(names)), frozenset(binary)


def _v2_matrix(tensor: dict[str, Any], schema: FeatureSchema) -> Rows:
    """One [N, F] tensor holding every feature in model order."""
    name = tensor["name"]
    width = len(schema.names)
    shape, values = _tensor_values(tensor, name)
    rows, columns = shape
    if columns != width:
        raise InvalidInput(
            f"input {name!r} has shape {shape}; the model takes {width} features, so send "
            f"[N, {width}] (or one [N] tensor per feature, named by feature)"
        )
    _check_rows(rows, schema, f"input {name!r}")
    _check_datatype(schema, name, tensor.get("datatype"), schema.names)
    _check_integers(name, tensor["datatype"], values)
    if isinstance(values, np.ndarray):
        if schema.numeric_only:
            matrix = values.reshape(rows, width).astype(np.float64)
            if np.isfinite(matrix).all():
                return matrix
            return _frame_from_columns(schema, list(matrix.T), "row")
        values = values.tolist()
    matrix_rows = [values[r * width : (r + 1) * width] for r in range(rows)]
    if schema.numeric_only:
        return _numeric_matrix(schema, matrix_rows, "row")
    return _frame_from_columns(schema, list(zip(*matrix_rows, strict=True)), "row")


_PLAIN_FLOATS = frozenset({"FP64", "FP32", "FP16"})
_PLAIN_KINDS = frozenset({int, float})


def _plain(by_name: dict[str, dict[str, Any]], schema: FeatureSchema) -> Rows | None:
    """The common request, decoded in one step: every feature a JSON list in a tensor of one
    shape [N] or [N, 1] within the batch limit, numbers plain and finite in an FP tensor,
    categories strings in a BYTES tensor. An all-numeric model gets a column-major matrix, so
    each feature's column (the ONNX model's input) is contiguous; others get ``Columns``.

    Anything else (None or NaN, other types, integer datatypes, binary data, a bad shape)
    returns None and goes through the checks below, which name the problem: this path accepts
    a subset of what they accept and builds the same rows."""
    data = by_name[schema.names[0]].get("data")
    if type(data) is not list or not 0 < len(data) <= schema.max_rows:
        return None
    rows = len(data)
    numbers: list[list[Any]] = []
    categories: list[list[Any]] = []
    for feature in schema.names:
        tensor = by_name[feature]
        data, shape = tensor.get("data"), tensor.get("shape")
        categorical = feature in schema.categorical
        if (
            type(data) is not list
            or len(data) != rows
            or (tensor.get("datatype") == "BYTES") is not categorical
            or (not categorical and tensor.get("datatype") not in _PLAIN_FLOATS)
            or type(shape) is not list
            or not all(type(d) is int for d in shape)
            or shape not in ([rows], [rows, 1])
        ):
            return None
        (categories if categorical else numbers).append(data)
    if not set(map(type, itertools.chain.from_iterable(numbers))) <= _PLAIN_KINDS:
        return None
    if not set(map(type, itertools.chain.from_iterable(categories))) <= {str}:
        return None
    matrix = np.array(numbers, dtype=np.float64).reshape(len(numbers), rows)
    if not np.isfinite(matrix).all():
        return None
    if schema.numeric_only:
        return matrix.T
    numeric, text = iter(matrix), iter(categories)
    arrays = {
        name: np.array(next(text), dtype=object) if name in schema.categorical else next(numeric)
        for name in schema.names
    }
    return Columns(arrays, rows)


def _v2_per_feature(inputs: list[dict[str, Any]], schema: FeatureSchema) -> Rows:
    """One [N] (or [N, 1]) tensor per feature, named by feature."""
    by_name = {t["name"]: t for t in inputs}
    if len(by_name) != len(inputs):
        raise InvalidInput("input names must be unique")
    width = len(schema.names)
    if by_name.keys() != set(schema.names):
        only = inputs[0]
        if len(inputs) == 1 and width > 1 and only.get("shape") == [width]:
            raise InvalidInput(
                f"input {only['name']!r} has shape [{width}]: one value per feature? Send one "
                f"row as shape [1, {width}], N rows as [N, {width}] (or one [N] tensor per "
                "feature, named by feature)"
            )
        problem = _name_mismatch(
            schema.names, by_name, "missing inputs for features", "unknown inputs"
        )
        raise InvalidInput(
            f"{problem}. Send one [N] tensor per feature, or one [N, {width}] tensor"
        )
    plain = _plain(by_name, schema)
    if plain is not None:
        return plain
    columns = []
    rows = None
    for feature in schema.names:
        tensor = by_name[feature]
        shape, values = _tensor_values(tensor, feature)
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInput(f"input {feature!r} has shape {shape}; send [N] or [N, 1]")
        if rows is None:
            rows = shape[0]
            _check_rows(rows, schema, f"input {feature!r}")
        elif shape[0] != rows:
            raise InvalidInput(
                f"input {feature!r} has {shape[0]} rows but input {schema.names[0]!r} has {rows}"
            )
        _check_datatype(schema, feature, tensor.get("datatype"), (feature,))
        _check_integers(feature, tensor["datatype"], values)
        columns.append(values)
    return _frame_from_columns(schema, columns, "row")


def decode_v2(body: Any, schema: FeatureSchema) -> Decoded:
    """Open Inference Protocol request: one [N, F] tensor, or one [N] tensor per feature.

    Tensor ``data`` is a JSON list, or an array the binary tensor extension or gRPC decoded.
    """
    if not isinstance(body, dict):
        raise InvalidInput('request body must be a JSON object such as {"inputs": [...]}')
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    parameters = body.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    outputs, binary = _requested_outputs(body, schema)
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InvalidInput(f"input {index} must be an object with a string 'name'")
    first = inputs[0]
    if len(inputs) == 1 and isinstance(first.get("shape"), list) and len(first["shape"]) == 2:
        frame = _v2_matrix(first, schema)
    else:
        frame = _v2_per_feature(inputs, schema)
    return Decoded(frame, PREDICT_PROBA in outputs, outputs, request_id, parameters, binary)


@dataclass(frozen=True)
class OutputTensor:
    """One V2 output: JSON, binary data and gRPC encode it from here."""

    name: str
    datatype: str
    array: np.ndarray[Any, Any]

    @property
    def shape(self) -> list[int]:
        return list(self.array.shape)


def _v2_datatype(array: np.ndarray[Any, Any]) -> str:
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    return "BYTES"


def v2_outputs(
    labels: np.ndarray[Any, Any],
    probabilities: np.ndarray[Any, Any] | None,
    decoded: Decoded,
) -> list[OutputTensor]:
    """The requested outputs, in the order they were asked for."""
    outputs = []
    for name in decoded.outputs:
        if name == PREDICT:
            datatype = _v2_datatype(labels)
            array = labels
            if datatype == "INT64":
                array = labels.astype(np.int64, copy=False)
            elif datatype == "FP64":
                array = labels.astype(np.float64, copy=False)
            outputs.append(OutputTensor(PREDICT, datatype, array))
        elif probabilities is not None:
            outputs.append(
                OutputTensor(PREDICT_PROBA, "FP64", probabilities.astype(np.float64, copy=False))
            )
    return outputs


def encode_v2(
    *,
    outputs: Sequence[OutputTensor],
    decoded: Decoded,
    model_name: str,
    model_version: str,
) -> dict[str, Any]:
    """Open Inference Protocol JSON response, outputs flattened row-major.

    Outputs the request wants as binary data are left out here: ``model_server.tensors`` adds
    them. Parameter values are scalars only, as the spec requires; the class order of
    ``predict_proba`` is in the model metadata.
    """
    tensors = [
        {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
            "data": output.array.ravel().tolist(),
        }
        for output in outputs
        if output.name not in decoded.binary_outputs
    ]
    response: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": tensors,
    }
    if decoded.request_id is not None:
        response["id"] = decoded.request_id
    return response
