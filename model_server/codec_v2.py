"""The V2 protocol (Open Inference Protocol) documents: decode a request's input tensors into
validated rows, and build its output tensors and JSON response.

Tensor ``data`` is a JSON list, or an array the binary tensor extension (``tensors``) or gRPC
decoded: both become the same document here, so every transport validates alike.
Transport-free, like ``model_server.codec``, whose checks it uses: it knows nothing of HTTP,
gRPC or bodies, nor of how a model is loaded or run.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

from model_registry.values import MISSING_CATEGORY
from model_server.codec import (
    NUMBER,
    TENSOR_MISSING,
    Checked,
    Decoded,
    check_rows,
    name_mismatch,
    numeric_matrix,
    rows_from_columns,
)
from model_server.schema import PREDICT, PREDICT_PROBA, Columns, FeatureSchema

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
        if isinstance(value, bool) or not isinstance(value, NUMBER):
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


def _layouts(schema: FeatureSchema) -> str:
    """The request layouts this model takes, for error messages. A tensor has one datatype, so
    a model with text features cannot take its rows as one [N, F] tensor."""
    width = len(schema.names)
    if schema.numeric_only:
        return f"one [N, {width}] tensor, or one [N] tensor per feature, named by feature"
    return (
        "one [N] tensor per feature, named by feature (BYTES for the text features; a tensor has "
        f"one datatype, so one [N, {width}] tensor cannot hold both numbers and text)"
    )


def _v2_matrix(tensor: dict[str, Any], schema: FeatureSchema) -> Checked:
    """One [N, F] tensor holding every feature in model order."""
    name = tensor["name"]
    width = len(schema.names)
    if 0 < len(schema.categorical) < width:
        raise InvalidInput(
            f"input {name!r} is one [N, F] tensor, but this model has both numeric and text "
            f"features: send {_layouts(schema)}"
        )
    shape, values = _tensor_values(tensor, name)
    rows, columns = shape
    if columns != width:
        raise InvalidInput(
            f"input {name!r} has shape {shape}; the model takes {width} features, so send "
            f"{_layouts(schema)}; {TENSOR_MISSING}"
        )
    check_rows(rows, schema, f"input {name!r}")
    _check_datatype(schema, name, tensor.get("datatype"), schema.names)
    _check_integers(name, tensor["datatype"], values)
    if isinstance(values, np.ndarray):
        if schema.numeric_only:
            matrix = values.reshape(rows, width).astype(np.float64)
            missing = schema.missing_in_range(matrix)
            if missing is not None:
                return matrix, missing
            return rows_from_columns(schema, list(matrix.T), "row")
        values = values.tolist()
    matrix_rows = [values[r * width : (r + 1) * width] for r in range(rows)]
    if schema.numeric_only:
        return numeric_matrix(schema, matrix_rows, "row")
    return rows_from_columns(schema, list(zip(*matrix_rows, strict=True)), "row")


_PLAIN_FLOATS = frozenset({"FP64", "FP32", "FP16"})
_PLAIN_KINDS = frozenset({int, float})


def _plain(by_name: dict[str, dict[str, Any]], schema: FeatureSchema) -> Checked | None:
    """The common request, decoded in one step: every feature a JSON list in a tensor of one
    shape [N] or [N, 1] within the batch limit, numbers plain and finite in an FP tensor,
    categories strings in a BYTES tensor. An all-numeric model gets a column-major matrix, so
    each feature's column (the ONNX model's input) is contiguous; others get ``Columns``.

    Anything else (None, NaN or "", numbers out of range, other types, integer datatypes,
    binary data, a bad shape) returns None and goes through the checks below, which name the
    problem: this path accepts a subset of what they accept and builds the same rows, none
    missing."""
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
    if any(MISSING_CATEGORY in values for values in categories):  # a missing category
        return None
    matrix = np.array(numbers, dtype=np.float64).reshape(len(numbers), rows)
    if not schema.in_range(matrix, by_feature=True):
        return None
    if schema.numeric_only:
        return matrix.T, {}
    numeric, text = iter(matrix), iter(categories)
    arrays = {
        name: np.array(next(text), dtype=object) if name in schema.categorical else next(numeric)
        for name in schema.names
    }
    return Columns(arrays, rows), {}


def _v2_per_feature(inputs: list[dict[str, Any]], schema: FeatureSchema) -> Checked:
    """One [N] (or [N, 1]) tensor per feature, named by feature."""
    by_name = {t["name"]: t for t in inputs}
    if len(by_name) != len(inputs):
        raise InvalidInput("input names must be unique")
    width = len(schema.names)
    if by_name.keys() != set(schema.names):
        only = inputs[0]
        if len(inputs) == 1 and width > 1 and only.get("shape") == [width]:
            rows_as = f"one row as shape [1, {width}], N rows as [N, {width}] (or one [N] tensor "
            raise InvalidInput(
                f"input {only['name']!r} has shape [{width}]: one value per feature? Send "
                + (rows_as + "per feature)" if schema.numeric_only else _layouts(schema))
            )
        problem = name_mismatch(
            schema.names,
            by_name,
            "missing inputs for features",
            "unknown inputs",
            f"send a tensor for every feature; {TENSOR_MISSING}",
        )
        raise InvalidInput(f"{problem}. Send {_layouts(schema)}")
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
            check_rows(rows, schema, f"input {feature!r}")
        elif shape[0] != rows:
            raise InvalidInput(
                f"input {feature!r} has {shape[0]} rows but input {schema.names[0]!r} has {rows}"
            )
        _check_datatype(schema, feature, tensor.get("datatype"), (feature,))
        _check_integers(feature, tensor["datatype"], values)
        columns.append(values)
    return rows_from_columns(schema, columns, "row")


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
        frame, missing = _v2_matrix(first, schema)
    else:
        frame, missing = _v2_per_feature(inputs, schema)
    return Decoded(
        frame, PREDICT_PROBA in outputs, outputs, request_id, parameters, binary, missing
    )


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
