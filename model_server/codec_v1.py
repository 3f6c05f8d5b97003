"""The V1 protocol (KServe's ``:predict``): decode a request document into validated rows,
encode labels and probabilities as its response.

``{"instances": [[...]] | [{"feature": value}]}`` in; ``{"predictions": [...]}`` out, with the
answering version. Transport-free, like ``model_server.codec``, whose checks it uses: it knows
nothing of HTTP, gRPC or bodies, nor of how a model is loaded or run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from kserve.errors import InvalidInput

from model_server.codec import (
    JSON_MISSING,
    Checked,
    Decoded,
    check_rows,
    describe,
    name_mismatch,
    numeric_matrix,
    rows_from_columns,
    some_names,
)
from model_server.schema import FeatureSchema


def _v1_objects(instances: list[Any], schema: FeatureSchema) -> Checked:
    expected = set(schema.names)
    for index, row in enumerate(instances):
        if not isinstance(row, dict):
            raise InvalidInput(
                f"instance {index} is {describe(row)}; every instance must be an object "
                "when the first one is"
            )
        if row.keys() != expected:
            problem = name_mismatch(
                schema.names,
                row,
                "missing features",
                "unknown features",
                f"send every feature; {JSON_MISSING}",
            )
            raise InvalidInput(f"instance {index} has {problem}")
    columns = [[row[name] for row in instances] for name in schema.names]
    return rows_from_columns(schema, columns, "instance")


def _v1_lists(instances: list[Any], schema: FeatureSchema) -> Checked:
    width = len(schema.names)
    for index, row in enumerate(instances):
        if not isinstance(row, list):
            raise InvalidInput(
                f"instance {index} is {describe(row)}; send a list of {width} feature values "
                "or an object keyed by feature name"
            )
        if len(row) != width:
            raise InvalidInput(
                f"instance {index} has {len(row)} values; the model takes {width} features "
                f"({some_names(schema.names)}): send one for each, in this order; "
                f"{JSON_MISSING}"
            )
    if schema.numeric_only:
        return numeric_matrix(schema, instances, "instance")
    return rows_from_columns(schema, list(zip(*instances, strict=True)), "instance")


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
            f"feature order ({some_names(schema.names)}) or objects keyed by feature name"
        )
    instances = body[key]
    if not isinstance(instances, list):
        raise InvalidInput(f"'{key}' must be a list of rows, got {describe(instances)}")
    check_rows(len(instances), schema, f"'{key}'")
    probabilities = body.get("return_probabilities", False)
    if not isinstance(probabilities, bool):
        raise InvalidInput("'return_probabilities' must be true or false")
    if probabilities and schema.classes is None:
        raise InvalidInput(
            "'return_probabilities' is only for classifiers; this model is a regressor"
        )
    if isinstance(instances[0], dict):
        rows, missing = _v1_objects(instances, schema)
    else:
        rows, missing = _v1_lists(instances, schema)
    return Decoded(rows, probabilities, missing=missing)


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
