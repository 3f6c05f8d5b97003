"""Request decoding and validation as tables; response encoding."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kserve.errors import InvalidInput

from model_server.codec import Decoded
from model_server.codec_v1 import decode_v1, encode_v1
from model_server.codec_v2 import decode_v2, encode_v2, v2_outputs
from model_server.schema import PREDICT, PREDICT_PROBA, Columns, FeatureSchema, inputs_digest

NUMERIC = FeatureSchema(("a", "b"), frozenset(), ("no", "yes"), max_rows=10)
EMPTY = np.empty((0, 2))
MIXED = FeatureSchema(("a", "color"), frozenset({"color"}), None, max_rows=10)


def test_v1_lists_to_float_frame() -> None:
    decoded = decode_v1({"instances": [[1, 2.5], [3, 4]]}, NUMERIC)
    assert isinstance(decoded.frame, np.ndarray)  # all-numeric models get a matrix
    assert decoded.frame.dtype == np.float64
    assert decoded.frame.tolist() == [[1.0, 2.5], [3.0, 4.0]]
    assert decoded.probabilities is False


def test_v1_objects_in_model_order() -> None:
    decoded = decode_v1({"instances": [{"b": 2, "a": 1}], "return_probabilities": True}, NUMERIC)
    assert np.asarray(decoded.frame).tolist() == [[1.0, 2.0]]
    assert decoded.probabilities is True


def test_mixed_missing_and_categorical() -> None:
    decoded = decode_v1({"instances": [[None, "red"], [2, "blue"]]}, MIXED)
    assert decoded.missing == {"a": 1}
    assert isinstance(decoded.frame, Columns)  # arrays by feature: no pandas per request
    assert len(decoded.frame) == 2
    assert math.isnan(decoded.frame["a"][0])
    assert decoded.frame["color"].tolist() == ["red", "blue"]
    frame = decoded.frame.frame()  # what the scikit-learn pipeline takes
    assert list(frame.columns) == ["a", "color"]
    assert frame["a"].dtype == np.float64
    assert frame["color"].tolist() == ["red", "blue"]
    records = decoded.frame.records()
    assert math.isnan(records[0]["a"])
    assert records[1] == {"a": 2.0, "color": "blue"}


V1_ERRORS: list[tuple[FeatureSchema, Any, str]] = [
    (
        NUMERIC,
        {"instances": [[1, float("inf")]]},
        "feature 'b' of instance 0 is not a finite number",
    ),
    (
        NUMERIC,
        {"instances": [[1, 2], [3]]},
        "instance 1 has 1 values; the model takes 2 features (a, b): send one for each, in this "
        "order; a value you do not have may be null, which the model imputes as in training",
    ),
    (NUMERIC, {"instances": [[1, 2], {"a": 1, "b": 2}]}, "instance 1 is an object"),
    (NUMERIC, {"instances": [{"a": 1, "b": 2}, [1, 2]]}, "instance 1 is a list"),
    (
        NUMERIC,
        {"instances": [{"a": 1, "c": 2}]},
        "instance 0 has missing features: b (send every feature; a value you do not have may be "
        "null, which the model imputes as in training); unknown features: c",
    ),
    (NUMERIC, {"instances": [{"a": 1, "b": 2, "c": 2}]}, "instance 0 has unknown features: c"),
    (NUMERIC, {"instances": [[1, [2]]]}, "must be a number, got a list"),
    (NUMERIC, {"instances": [[1, 2]] * 11}, "batch of 11 rows is larger than the limit of 10"),
    (MIXED, {"instances": [[1, 5]]}, "must be a string (a category), got 5"),
    (MIXED, {"instances": [[float("inf"), "red"]]}, "feature 'a' of instance 0 is not a finite"),
    (MIXED, {"instances": [[1, "red"]], "return_probabilities": True}, "only for classifiers"),
]


@pytest.mark.parametrize(("schema", "body", "message"), V1_ERRORS)
def test_v1_errors(schema: FeatureSchema, body: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as error:
        decode_v1(body, schema)
    assert message in str(error.value)


def tensor(name: str, shape: list[int], datatype: str, data: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def test_v2_matrix_flat_and_nested_agree() -> None:
    flat = decode_v2({"inputs": [tensor("x", [2, 2], "FP32", [1, 2, 3, 4])]}, NUMERIC)
    nested = decode_v2({"inputs": [tensor("x", [2, 2], "FP32", [[1, 2], [3, 4]])]}, NUMERIC)
    assert isinstance(flat.frame, np.ndarray)
    assert isinstance(nested.frame, np.ndarray)
    assert np.array_equal(flat.frame, nested.frame)
    assert np.asarray(flat.frame).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert flat.outputs == (PREDICT, PREDICT_PROBA)  # no 'outputs': all of them (the spec)
    assert flat.probabilities
    assert flat.binary_outputs == frozenset()


def test_v2_per_feature_with_outputs_and_id() -> None:
    body = {
        "id": "r-1",
        "inputs": [tensor("b", [2, 1], "INT64", [3, 4]), tensor("a", [2], "FP64", [1.5, 2.5])],
        "outputs": [{"name": PREDICT_PROBA}],
    }
    decoded = decode_v2(body, NUMERIC)
    assert np.asarray(decoded.frame).tolist() == [[1.5, 3.0], [2.5, 4.0]]
    assert decoded.outputs == (PREDICT_PROBA,)
    assert decoded.probabilities
    assert decoded.request_id == "r-1"


V2_ERRORS: list[tuple[FeatureSchema, Any, str]] = [
    (NUMERIC, {"inputs": "x"}, "'inputs' must be a non-empty list"),
    (NUMERIC, {"inputs": [{"shape": [1, 2]}]}, "input 0 must be an object with a string 'name'"),
    (NUMERIC, {"inputs": [tensor("x", [1, 2], "FP64", [1, 2])], "id": 5}, "'id' must be a string"),
    (NUMERIC, {"inputs": [tensor("x", [-1, 2], "FP64", [1, 2])]}, "needs a 'shape'"),
    (NUMERIC, {"inputs": [tensor("x", [1, 2], "FP64", "12")]}, "needs 'data'"),
    (
        NUMERIC,
        {"inputs": [tensor("x", [1, 2], "BOOL", [1, 0])]},
        "is BOOL, but feature 'a' is numeric",
    ),
    (
        NUMERIC,
        {"inputs": [tensor("x", [1, 2], "FP64", [1, "2"])]},
        "feature 'b' of row 0 must be a number",
    ),
    (NUMERIC, {"inputs": [tensor("x", [1, 2], "INT32", [1, 2.5])]}, "2.5, which is not an integer"),
    (NUMERIC, {"inputs": [tensor("x", [1, 2], "UINT8", [1, -5])]}, "UINT8 (values 0 to 255)"),
    (NUMERIC, {"inputs": [tensor("x", [1, 2], "INT8", [1, 128])]}, "INT8 (values -128 to 127)"),
    (
        NUMERIC,
        {"inputs": [tensor("x", [1, 2], "UINT64", [0, 2**64])]},
        f"holds {2**64}",
    ),
    (NUMERIC, {"inputs": [tensor("x", [2], "FP64", [1, 2])]}, "one row as shape [1, 2]"),
    (
        NUMERIC,
        {
            "inputs": [tensor("x", [1, 2], "FP64", [1, 2])],
            "outputs": [{"name": PREDICT, "parameters": {"binary_data": "yes"}}],
        },
        "parameter 'binary_data' of output 'predict' must be true or false",
    ),
    (
        NUMERIC,
        {
            "inputs": [
                {"name": "x", "shape": [1, 2], "datatype": "FP64"}
                | {"parameters": {"binary_data_size": 16}}
            ]
        },
        "no Inference-Header-Content-Length",
    ),
    (NUMERIC, {"inputs": [tensor("a", [1], "FP64", [1]), tensor("a", [1], "FP64", [1])]}, "unique"),
    (
        NUMERIC,
        {"inputs": [tensor("a", [1, 2], "FP64", [1, 2]), tensor("b", [1], "FP64", [1])]},
        "send [N] or [N, 1]",
    ),
    (NUMERIC, {"inputs": [tensor("x", [1, 2], "FP64", [1, 2])], "outputs": []}, "non-empty list"),
    (
        NUMERIC,
        {"inputs": [tensor("x", [1, 2], "FP64", [1, 2])], "parameters": []},
        "'parameters' must be an object",
    ),
    (
        MIXED,
        {"inputs": [tensor("x", [1, 2], "FP64", [1, 2])]},
        "this model has both numeric and text features",
    ),
    (
        MIXED,
        {"inputs": [tensor("a", [1], "FP64", [1]), tensor("color", [1], "BYTES", [3])]},
        "must be a string",
    ),
    (
        MIXED,
        {"inputs": [tensor("a", [1], "FP64", [1])], "outputs": [{"name": PREDICT_PROBA}]},
        "this model has outputs: predict",
    ),
]


@pytest.mark.parametrize(("schema", "body", "message"), V2_ERRORS)
def test_v2_errors(schema: FeatureSchema, body: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as error:
        decode_v2(body, schema)
    assert message in str(error.value)


def test_v1_inputs_key_is_read_like_instances() -> None:
    decoded = decode_v1({"inputs": [[1, 2]]}, NUMERIC)
    assert np.asarray(decoded.frame).tolist() == [[1.0, 2.0]]
    with pytest.raises(InvalidInput, match="'inputs' must be a list of rows"):
        decode_v1({"inputs": 5}, NUMERIC)


def test_v2_arrays_from_binary_data_are_taken_as_they_are() -> None:
    matrix = np.array([1, 2, 3, 4], dtype=np.int32)
    decoded = decode_v2({"inputs": [tensor("x", [2, 2], "INT32", matrix)]}, NUMERIC)
    assert isinstance(decoded.frame, np.ndarray)
    assert decoded.frame.dtype == np.float64
    assert decoded.frame.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    columns = decode_v2(
        {
            "inputs": [
                tensor("a", [2], "FP32", np.array([1.5, np.nan], dtype=np.float32)),
                tensor("color", [2], "BYTES", np.array(["red", "blue"], dtype=object)),
            ]
        },
        MIXED,  # NaN is a missing value, as JSON's null is
    )
    assert columns.missing == {"a": 1}
    assert isinstance(columns.frame, Columns)
    assert columns.frame["color"].tolist() == ["red", "blue"]
    with pytest.raises(InvalidInput, match="feature 'b' of row 0 is not a finite number"):
        decode_v2({"inputs": [tensor("x", [1, 2], "FP64", np.array([1.0, np.inf]))]}, NUMERIC)


def test_v2_outputs_binary_flags() -> None:
    x = [tensor("x", [1, 2], "FP64", [1, 2])]
    every = decode_v2({"inputs": x, "parameters": {"binary_data_output": True}}, NUMERIC)
    assert every.binary_outputs == {PREDICT, PREDICT_PROBA}
    one = decode_v2(
        {
            "inputs": x,
            "outputs": [
                {"name": PREDICT_PROBA, "parameters": {"binary_data": True}},
                {"name": PREDICT},
            ],
        },
        NUMERIC,
    )
    assert one.outputs == (PREDICT_PROBA, PREDICT)
    assert one.binary_outputs == {PREDICT_PROBA}


def test_encoders_carry_version_and_shapes() -> None:
    labels = np.array(["no", "yes", "yes"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    v1 = encode_v1(labels, proba, NUMERIC, "m", "v3")
    assert v1 == {
        "predictions": ["no", "yes", "yes"],
        "model_name": "m",
        "model_version": "v3",
        "probabilities": proba.tolist(),
        "classes": ["no", "yes"],
    }
    decoded = Decoded(
        frame=EMPTY, probabilities=True, outputs=(PREDICT, PREDICT_PROBA), request_id="i"
    )
    v2 = encode_v2(
        outputs=v2_outputs(labels, proba, decoded),
        decoded=decoded,
        model_name="m",
        model_version="v3",
    )
    assert (v2["model_name"], v2["model_version"], v2["id"]) == ("m", "v3", "i")
    predict, probabilities = v2["outputs"]
    assert predict == {
        "name": "predict",
        "datatype": "BYTES",
        "shape": [3],
        "data": ["no", "yes", "yes"],
    }
    # The spec allows only string, number or boolean parameter values: no class list here.
    assert probabilities == {
        "name": "predict_proba",
        "datatype": "FP64",
        "shape": [3, 2],
        "data": proba.ravel().tolist(),
    }
    only = Decoded(frame=EMPTY, probabilities=False)
    regression = encode_v2(
        outputs=v2_outputs(np.array([1.5]), None, only),
        decoded=only,
        model_name="r",
        model_version="v1",
    )
    assert regression["outputs"][0]["datatype"] == "FP64"
    binary = Decoded(
        frame=EMPTY,
        probabilities=True,
        outputs=(PREDICT, PREDICT_PROBA),
        binary_outputs=frozenset({PREDICT_PROBA}),
    )
    header = encode_v2(
        outputs=v2_outputs(labels, proba, binary),
        decoded=binary,
        model_name="m",
        model_version="v3",
    )
    assert [o["name"] for o in header["outputs"]] == [PREDICT]  # tensors.py adds the binary one


def _per_feature(a: Any, b: Any, *, datatype: str = "FP64", shape: Any = None) -> dict[str, Any]:
    count = len(a) if isinstance(a, list) else 1
    return {
        "inputs": [
            {"name": "a", "datatype": datatype, "shape": shape or [count], "data": a},
            {"name": "b", "datatype": "FP64", "shape": [count], "data": b},
        ]
    }


def test_plain_per_feature_tensors_decode_to_the_checked_matrix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one-step path for plain numbers builds what the value-by-value checks build."""
    from model_server import codec_v2 as codec

    requests = [
        _per_feature([1, 2.5, -3], [4.0, 5, 6e300]),
        _per_feature([1.5], [2], datatype="FP32", shape=[1, 1]),
    ]
    plain = [decode_v2(r, NUMERIC).frame for r in requests]
    monkeypatch.setattr(codec, "_plain", lambda by_name, schema: None)
    checked = [decode_v2(r, NUMERIC).frame for r in requests]
    for fast, slow in zip(plain, checked, strict=True):
        assert isinstance(fast, np.ndarray)
        assert isinstance(slow, np.ndarray)
        assert fast.dtype == np.float64
        np.testing.assert_array_equal(fast, slow)
        assert fast[:, 0].flags.c_contiguous  # a feature's column: ONNX Runtime's input


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        (_per_feature([1.0], [True]), "feature 'b' of row 0 must be a number, got true"),
        (_per_feature(["1.5"], [2.0]), "feature 'a' of row 0 must be a number, got the string"),
        (_per_feature([1.0], [float("inf")]), "feature 'b' of row 0 is not a finite number"),
        (_per_feature([1.0], [2.0], shape=[1.0]), "input 'a' needs a 'shape'"),
        (_per_feature([1.0], [2.0], shape=[True]), "input 'a' needs a 'shape'"),
        (_per_feature([1.0, 2.0], [2.0]), "input 'b' has 1 values but its shape [2] needs 2"),
        (_per_feature([1.0], [2.0], shape=[2]), "input 'a' has 1 values but its shape [2]"),
        (_per_feature([300.0], [2.0], datatype="UINT8"), "is UINT8 (values 0 to 255)"),
        (_per_feature([1.0] * 11, [2.0] * 11), "batch of 11 rows is larger than the limit"),
        (_per_feature([[1.0]], [2.0], shape=[1, 1]), None),  # nested lists: the checked path
    ],
)
def test_what_the_plain_path_does_not_take_is_checked_as_before(
    request_body: dict[str, Any], message: str | None
) -> None:
    if message is None:
        assert np.asarray(decode_v2(request_body, NUMERIC).frame).tolist() == [[1.0, 2.0]]
        return
    with pytest.raises(InvalidInput, match=re.escape(message)):
        decode_v2(request_body, NUMERIC)


def _mixed(a: list[Any], color: list[Any], color_type: str = "BYTES") -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "a", "datatype": "FP64", "shape": [len(a)], "data": a},
            {"name": "color", "datatype": color_type, "shape": [len(color)], "data": color},
        ]
    }


def test_plain_mixed_tensors_decode_to_the_checked_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from model_server import codec_v2 as codec

    request = _mixed([1, 2.5], ["red", "blue"])
    plain = decode_v2(request, MIXED).frame
    monkeypatch.setattr(codec, "_plain", lambda by_name, schema: None)
    checked = decode_v2(request, MIXED).frame
    assert isinstance(plain, Columns)
    assert isinstance(checked, Columns)
    assert len(plain) == len(checked) == 2
    for name in ("a", "color"):
        assert plain[name].dtype == checked[name].dtype
        assert plain[name].tolist() == checked[name].tolist()


@pytest.mark.parametrize(
    ("request_body", "outcome"),
    [
        (_mixed([None], ["red"]), {"a": [math.nan], "color": ["red"]}),
        (_mixed([1.0], [3]), "feature 'color' of row 0 must be a string (a category), got 3"),
        (_mixed([1.0], ["red"], "FP64"), "input 'color' is FP64, but feature 'color' is categ"),
    ],
)
def test_what_the_plain_path_does_not_take_of_a_mixed_model_is_checked_as_before(
    request_body: dict[str, Any], outcome: dict[str, list[Any]] | str
) -> None:
    if isinstance(outcome, str):
        with pytest.raises(InvalidInput, match=re.escape(outcome)):
            decode_v2(request_body, MIXED)
        return
    frame = decode_v2(request_body, MIXED).frame
    assert isinstance(frame, Columns)
    np.testing.assert_array_equal(frame["a"], np.array(outcome["a"], dtype=np.float64))
    assert frame["color"].tolist() == outcome["color"]


LIMITED = FeatureSchema(
    ("a", "color", "size"),
    frozenset({"color", "size"}),
    ("no", "yes"),
    max_rows=10,
    limits={"a": (-100.0, 300.0)},
)


@pytest.mark.parametrize(
    "document",
    [
        {"instances": [[1.0, "", "s"]]},
        {"instances": [[1.0, None, "s"]]},
        {
            "inputs": [
                {"name": "a", "datatype": "FP64", "shape": [1], "data": [None]},
                {"name": "color", "datatype": "BYTES", "shape": [1], "data": [None]},
                {"name": "size", "datatype": "BYTES", "shape": [1], "data": ["s"]},
            ]
        },
        {
            "inputs": [
                {"name": "a", "datatype": "FP64", "shape": [1], "data": [1.0]},
                {"name": "color", "datatype": "BYTES", "shape": [1], "data": [""]},
                {"name": "size", "datatype": "BYTES", "shape": [1], "data": ["s"]},
            ]
        },
    ],
)
def test_an_empty_category_is_missing_like_null(document: dict[str, Any]) -> None:
    """ "" and null are both a missing category (NaN, which the pipeline's imputer reads), in
    V1 and in V2's one-tensor and per-feature forms."""
    decode = decode_v1 if "instances" in document else decode_v2
    frame = decode(document, LIMITED).frame
    assert isinstance(frame, Columns)
    assert math.isnan(frame["color"][0])
    assert frame["size"].tolist() == ["s"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"instances": [[1e308, "red", "s"]]},
            "feature 'a' of instance 0 is 1e+308, outside the range this model computes with, "
            "-100 to 300",
        ),
        (
            {"instances": [[-100.5, "red", "s"]]},
            "feature 'a' of instance 0 is -100.5, outside the range",
        ),
    ],
)
def test_numbers_out_of_range_are_refused(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        decode_v1(document, LIMITED)


def test_numbers_at_the_range_ends_are_taken_on_every_path() -> None:
    numeric = FeatureSchema(("a", "b"), frozenset(), None, 10, limits={"a": (-1.0, 1.0)})
    taken = decode_v1({"instances": [[1.0, 1e300], [-1.0, -1e300]]}, numeric).frame
    assert isinstance(taken, np.ndarray)
    assert taken.tolist() == [[1.0, 1e300], [-1.0, -1e300]]
    tensor = {"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [1.0000001, 0.0]}
    with pytest.raises(InvalidInput, match=r"feature 'a' of row 0 is 1\.0000001, outside"):
        decode_v2({"inputs": [tensor]}, numeric)
    binary = {**tensor, "data": np.array([[1.5, 0.0]])}
    with pytest.raises(InvalidInput, match=r"feature 'a' of row 0 is 1\.5, outside"):
        decode_v2({"inputs": [binary]}, numeric)


# -- a missing value for any feature: taken in every encoding, counted by feature -----------


def _kserve_request(columns: dict[str, list[Any]], schema: FeatureSchema, matrix: bool) -> Any:
    """KServe's client request for ``columns``: a missing number is NaN and a missing category
    ``""``, as binary data and gRPC carry them (no null there)."""
    from kserve import InferInput, InferRequest

    def array(name: str) -> np.ndarray[Any, Any]:
        values = columns[name]
        if name in schema.categorical:
            return np.array(["" if v is None else v for v in values], dtype=object)
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)

    if matrix:
        tensors = [("input-0", "FP64", np.column_stack([array(n) for n in schema.names]))]
    else:
        tensors = [
            (n, "BYTES" if n in schema.categorical else "FP64", array(n)) for n in schema.names
        ]
    inputs = []
    for name, datatype, values in tensors:
        tensor = InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=True)
        inputs.append(tensor)
    return InferRequest(model_name="m", infer_inputs=inputs)


def _encoded(encoding: str, columns: dict[str, list[Any]], schema: FeatureSchema) -> Decoded:
    """``columns`` sent in ``encoding`` and decoded as the server decodes it."""
    from model_server.grpc_service import request_document
    from model_server.tensors import read_binary_request

    rows = [list(r) for r in zip(*(columns[n] for n in schema.names), strict=True)]
    matrix = encoding.endswith("matrix")
    if encoding == "v1-lists":
        return decode_v1({"instances": rows}, schema)
    if encoding == "v1-objects":
        return decode_v1(
            {"instances": [dict(zip(schema.names, r, strict=True)) for r in rows]}, schema
        )
    if encoding == "v2-json":
        inputs = [
            tensor(n, [len(rows)], "BYTES" if n in schema.categorical else "FP64", columns[n])
            for n in schema.names
        ]
        return decode_v2({"inputs": inputs}, schema)
    if encoding == "v2-json-matrix":
        flat = [v for r in rows for v in r]
        return decode_v2(
            {"inputs": [tensor("x", [len(rows), len(schema.names)], "FP64", flat)]}, schema
        )
    request = _kserve_request(columns, schema, matrix)
    if encoding.startswith("v2-binary"):
        body, length = request.to_rest()
        return decode_v2(read_binary_request(body, str(length)), schema)
    message = request.to_grpc()
    if encoding.startswith("grpc-typed"):
        del message.raw_input_contents[:]
        for each, values in zip(
            message.inputs, [i.as_numpy() for i in request.inputs], strict=True
        ):
            if each.datatype == "BYTES":
                each.contents.bytes_contents.extend(
                    v if isinstance(v, bytes) else str(v).encode() for v in values.ravel()
                )
            else:
                each.contents.fp64_contents.extend(values.ravel().tolist())
    return decode_v2(request_document(message), schema)


ENCODINGS = ["v1-lists", "v1-objects", "v2-json", "v2-binary", "grpc-raw", "grpc-typed"]
MATRIX_ENCODINGS = ["v2-json-matrix", "v2-binary-matrix", "grpc-raw-matrix", "grpc-typed-matrix"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_missing_number_and_category_are_taken_and_counted_in_every_encoding(
    encoding: str,
) -> None:
    """Whatever the feature (the schema no longer knows which had missing values in training):
    null, NaN or "" is a missing value, imputed by the engine, counted by feature."""
    columns: dict[str, list[Any]] = {
        "a": [None, 2.0, None, 4.0],
        "color": ["red", None, "", "blue"],
    }
    if encoding.startswith(("v2-binary", "grpc")):
        columns["color"] = ["red", "", "", "blue"]  # a BYTES tensor has no null
    decoded = _encoded(encoding, columns, MIXED)
    assert decoded.missing == {"a": 2, "color": 2}
    frame = decoded.frame
    assert isinstance(frame, Columns)
    assert np.isnan(frame["a"]).tolist() == [True, False, True, False]
    assert frame["a"][1] == 2.0
    assert [v if isinstance(v, str) else "missing" for v in frame["color"]] == [
        "red",
        "missing",
        "missing",
        "blue",
    ]


@pytest.mark.parametrize("encoding", ENCODINGS + MATRIX_ENCODINGS)
def test_missing_numbers_of_an_all_numeric_model_are_counted_in_every_encoding(
    encoding: str,
) -> None:
    decoded = _encoded(encoding, {"a": [None, 1.0, 2.5], "b": [None, None, 3.0]}, NUMERIC)
    assert decoded.missing == {"a": 1, "b": 2}
    assert isinstance(decoded.frame, np.ndarray)
    assert np.isnan(decoded.frame).tolist() == [[True, True], [False, True], [False, False]]
    assert decoded.frame[2].tolist() == [2.5, 3.0]


@pytest.mark.parametrize("encoding", ENCODINGS + MATRIX_ENCODINGS)
def test_requests_with_nothing_missing_count_nothing(encoding: str) -> None:
    decoded = _encoded(encoding, {"a": [0.5, 1.0], "b": [2, 3.0]}, NUMERIC)
    assert decoded.missing == {}
    if encoding in ENCODINGS:
        mixed = _encoded(encoding, {"a": [0.5, 1.0], "color": ["red", "x"]}, MIXED)
        assert mixed.missing == {}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"instances": [[None, "red", "s"], [1e308, "", "s"]]}, "feature 'a' of instance 1 is"),
        ({"instances": [["", None, ""]]}, "feature 'a' of instance 0 must be a number, got the"),
        ({"instances": [[None, None, 5]]}, "feature 'size' of instance 0 must be a string"),
    ],
)
def test_a_missing_value_does_not_hide_a_bad_one(document: dict[str, Any], message: str) -> None:
    """A missing value is taken; anything else wrong in the request is still a 400 naming it
    ("" is missing only for a text feature: for a number it is not a number)."""
    with pytest.raises(InvalidInput, match=re.escape(message)):
        decode_v1(document, LIMITED)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"inputs": [tensor("a", [1], "FP64", [1.0])]},
            "missing inputs for features: color (send a tensor for every feature; a value you do "
            'not have may be null (NaN in binary data and gRPC contents, "" for a text feature), '
            "which the model imputes as in training). Send one [N] tensor per feature, named by "
            "feature (BYTES for the text features; a tensor has one datatype, so one [N, 2] "
            "tensor cannot hold both numbers and text)",
        ),
        (
            {"inputs": [tensor("a", [1], "FP64", [1.0]), tensor("c", [1], "BYTES", ["x"])]},
            "missing inputs for features: color (send a tensor for every feature; ",
        ),
    ],
)
def test_a_missing_tensor_says_a_missing_value_may_be_sent(
    document: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        decode_v2(document, MIXED)


def test_a_model_with_text_features_is_never_told_to_send_one_matrix() -> None:
    """A tensor has one datatype: a mixed model cannot take an [N, F] tensor."""
    for document in (
        {"inputs": [tensor("x", [1, 2], "FP64", [1.0, 2.0])]},
        {"inputs": [tensor("x", [3], "FP64", [1.0, 2.0, 3.0])]},
        {"inputs": [tensor("a", [1], "FP64", [1.0])]},
    ):
        with pytest.raises(InvalidInput) as error:
            decode_v2(document, MIXED)
        assert "cannot hold both numbers and text" in str(error.value), error.value
        assert "or one [N, 2] tensor" not in str(error.value), error.value


def test_a_matrix_of_the_wrong_width_says_a_missing_value_may_be_sent() -> None:
    with pytest.raises(InvalidInput) as error:
        decode_v2({"inputs": [tensor("x", [1, 3], "FP64", [1.0, 2.0, 3.0])]}, NUMERIC)
    assert str(error.value) == (
        "input 'x' has shape [1, 3]; the model takes 2 features, so send one [N, 2] tensor, or "
        "one [N] tensor per feature, named by feature; a value you do not have may be null (NaN in "
        'binary data and gRPC contents, "" for a text feature), which the model imputes as in '
        "training"
    )


def test_a_missing_value_does_not_hide_a_number_out_of_range_in_a_matrix() -> None:
    numeric = FeatureSchema(("a", "b"), frozenset(), None, 10, limits={"a": (-1.0, 1.0)})
    for document in (
        {"instances": [[None, 0.0], [2.0, None]]},
        {"inputs": [tensor("x", [2, 2], "FP64", [None, 0.0, 2.0, None])]},
        {"inputs": [tensor("x", [2, 2], "FP64", np.array([np.nan, 0.0, 2.0, np.nan]))]},
    ):
        decode = decode_v1 if "instances" in document else decode_v2
        with pytest.raises(InvalidInput, match=r"feature 'a' of (instance|row) 1 is 2\.0, outside"):
            decode(document, numeric)
    taken = decode_v1({"instances": [[None, 0.0], [1.0, None]]}, numeric)
    assert taken.missing == {"a": 1, "b": 1}


# -- the prediction log's inputs digest: the same rows, the same digest, whatever the encoding --

_NUMBER = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
    st.integers(min_value=-(2**53), max_value=2**53),
)
_CATEGORY = st.one_of(st.none(), st.sampled_from(["red", "blue", "ünïcode", "a b"]))


@settings(max_examples=40, deadline=None)
@given(data=st.data(), count=st.integers(min_value=1, max_value=6))
def test_the_inputs_digest_is_the_same_in_every_encoding(data: Any, count: int) -> None:
    """What a prediction record's ``inputs_sha256`` promises: equal rows, equal digests,
    across V1 lists and objects, V2 JSON, binary and gRPC (numbers as large as the models
    take, negative zero, missing values); different rows, different digests."""
    numbers = data.draw(st.lists(_NUMBER, min_size=count, max_size=count))
    more = data.draw(st.lists(_NUMBER, min_size=count, max_size=count))
    categories = data.draw(st.lists(_CATEGORY, min_size=count, max_size=count))
    numeric = {"a": numbers, "b": more}
    digests = {
        inputs_digest(_encoded(encoding, numeric, NUMERIC).frame)
        for encoding in ENCODINGS + MATRIX_ENCODINGS
    }
    assert len(digests) == 1
    mixed = {"a": numbers, "color": categories}
    binary = {"a": numbers, "color": ["" if c is None else c for c in categories]}
    mixed_digests = {
        inputs_digest(
            _encoded(
                encoding, binary if encoding.startswith(("v2-binary", "grpc")) else mixed, MIXED
            ).frame
        )
        for encoding in ENCODINGS
    }
    assert len(mixed_digests) == 1
    changed = [1.0 if v is None or v != 1.0 else 2.0 for v in numbers]
    other = inputs_digest(_encoded("v1-lists", {"a": changed, "b": more}, NUMERIC).frame)
    assert other not in digests


def test_the_inputs_digest_covers_the_shape_and_the_feature_names() -> None:
    rows = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert inputs_digest(rows) != inputs_digest(rows.reshape(1, 4))
    left = Columns({"a": np.array([1.0]), "color": np.array(["x"], dtype=object)}, 1)
    right = Columns({"b": np.array([1.0]), "color": np.array(["x"], dtype=object)}, 1)
    assert inputs_digest(left) != inputs_digest(right)
