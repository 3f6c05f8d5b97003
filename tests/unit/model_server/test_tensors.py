"""Binary tensor data (REST extension and gRPC raw contents): bytes to arrays and back."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
from kserve.errors import InvalidInput

from model_server.codec_v2 import OutputTensor
from model_server.tensors import (
    array_from_bytes,
    array_to_bytes,
    binary_response,
    read_binary_request,
)


def _bytes_tensor(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _request(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(header)
    return head + b"".join(blobs), str(len(head))


def test_numbers_bool_and_bytes_round_trip() -> None:
    floats = np.array([[1.5, -2.0]], dtype="<f4")
    assert array_from_bytes("x", "FP32", [1, 2], floats.tobytes()).tolist() == [1.5, -2.0]
    assert array_from_bytes("b", "BOOL", [2], b"\x01\x00").tolist() == [True, False]
    assert array_from_bytes("s", "BYTES", [2], _bytes_tensor(b"red", b"")).tolist() == ["red", ""]
    labels = OutputTensor("predict", "BYTES", np.array(["no", "yes"], dtype=object))
    assert array_to_bytes(labels) == _bytes_tensor(b"no", b"yes")
    ints = OutputTensor("predict", "INT64", np.array([1, 2]))
    assert array_to_bytes(ints) == np.array([1, 2], dtype="<i8").tobytes()


BAD: list[tuple[str, list[int], bytes, str]] = [
    ("FP64", [1, 2], b"\x00" * 15, "has 15 bytes of binary data but shape [1, 2] of FP64 needs 16"),
    ("FP64", [-1], b"", "needs a 'shape'"),
    ("COMPLEX", [1], b"\x00", "has datatype 'COMPLEX'"),
    ("BYTES", [2], _bytes_tensor(b"a"), "has 1 BYTES elements but its shape needs 2"),
    ("BYTES", [1], b"\x05\x00\x00\x00ab", "says 5 bytes but only 2 remain"),
    ("BYTES", [1], b"\x05\x00", "cut off in its 4-byte length"),
    ("BYTES", [1], _bytes_tensor(b"\xff"), "is not UTF-8 text"),
]


@pytest.mark.parametrize(("datatype", "shape", "blob", "message"), BAD)
def test_bytes_that_do_not_match_the_tensor_are_named(
    datatype: str, shape: list[int], blob: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput) as error:
        array_from_bytes("x", datatype, shape, blob)
    assert message in str(error.value)


def test_a_request_mixing_json_and_binary_inputs() -> None:
    header = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}},
            {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]},
            {"name": "b", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
        ]
    }
    body, length = _request(
        header, np.array([1.0, 2.0]).tobytes(), np.array([3, 4], dtype="<i4").tobytes()
    )
    document = read_binary_request(body, length)
    a, color, b = document["inputs"]
    assert a["data"].tolist() == [1.0, 2.0]
    assert color["data"] == ["red", "blue"]
    assert b["data"].tolist() == [3, 4]


def test_a_header_that_is_the_whole_body_is_plain_json() -> None:
    header = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    body, length = _request(header)
    assert read_binary_request(body, length) == header


def _binary_input(size: int) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "x",
                "shape": [2],
                "datatype": "FP64",
                "parameters": {"binary_data_size": size},
            }
        ]
    }


BAD_REQUESTS: list[tuple[bytes, str, str]] = [
    (b'{"inputs": []}', "99", "Inference-Header-Content-Length is 99 but the body has 14 bytes"),
    (b'{"inputs": []}', "ten", "must be a number of bytes"),
    (b'{"inputs": [}', "13", "the JSON header (the first 13 bytes"),
    (*_request(_binary_input(16), b"\x00" * 8), "says binary_data_size 16 but only 8 bytes"),
    (*_request(_binary_input(16), b"\x00" * 24), "8 bytes of binary data follow the JSON header"),
    (*_request(_binary_input(-1)), "binary_data_size must be a number of bytes"),
]


@pytest.mark.parametrize(("body", "length", "message"), BAD_REQUESTS)
def test_binary_requests_that_do_not_add_up_are_refused(
    body: bytes, length: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as error:
        read_binary_request(body, length)
    assert message in str(error.value)


def test_binary_response_puts_the_asked_outputs_after_the_header() -> None:
    labels = OutputTensor("predict", "INT64", np.array([0, 1]))
    proba = OutputTensor("predict_proba", "FP64", np.array([[0.9, 0.1], [0.2, 0.8]]))
    header = {
        "model_name": "m",
        "model_version": "v1",
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 1]}],
    }
    body, length = binary_response(header, [labels, proba], frozenset({"predict_proba"}))
    assert length is not None
    head = orjson.loads(body[:length])
    assert head["outputs"][1] == {
        "name": "predict_proba",
        "datatype": "FP64",
        "shape": [2, 2],
        "parameters": {"binary_data_size": 32},
    }
    assert np.frombuffer(body[length:], "<f8").tolist() == [0.9, 0.1, 0.2, 0.8]
    assert binary_response(header, [labels], frozenset()) == (orjson.dumps(header), None)


def test_the_default_body_limit_fits_the_largest_batch() -> None:
    from model_server.http_body import body_limit
    from model_server.settings import ModelServerSettings

    def settings(**values: Any) -> ModelServerSettings:
        return ModelServerSettings(model_dir="/mnt/models", **values)

    # 1000 rows x 30 features x 128 bytes + 64 KiB.
    assert body_limit(settings(), 30) == 1000 * 30 * 128 + 64 * 1024
    assert body_limit(settings(max_batch_rows=10), 3) == 1024 * 1024  # never under 1 MiB
    assert body_limit(settings(max_request_bytes=5000), 30) == 5000
