"""Tensor bytes: the REST binary tensor data extension and gRPC's raw contents.

Both carry a tensor as its elements in little-endian byte order, row-major, without padding;
BOOL is one byte per element and BYTES is each element's 4-byte little-endian length followed by
its bytes (Triton's "Binary Tensor Data Extension", which KServe's V2 documents as is, and
``raw_input_contents`` / ``raw_output_contents`` in KServe's ``grpc_predict_v2.proto``).

Over REST the request body is the JSON header (``Inference-Header-Content-Length`` bytes long),
then each binary input's bytes in input order, each input saying its size in the
``binary_data_size`` parameter. Everything here turns bytes into arrays (and back) and raises
``InvalidInput`` naming the input when the bytes do not match the shape and datatype.

Part of the codec: transport-free (HTTP and gRPC both call it), and it knows nothing of
models beyond the output tensors it is given.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from kserve.errors import InvalidInput

from model_server.codec_v2 import OutputTensor, check_shape

HEADER_LENGTH = "inference-header-content-length"
"""The binary extension's HTTP header: how many leading body bytes are the JSON header."""

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_LENGTH = struct.Struct("<I")


def _bytes_elements(name: str, blob: bytes | memoryview, count: int) -> np.ndarray[Any, Any]:
    """BYTES elements (4-byte length, then the bytes), decoded as UTF-8 strings."""
    view = memoryview(blob)
    values: list[str] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInput(
                f"input {name!r}: BYTES element {len(values)} is cut off in its 4-byte length"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(
                f"input {name!r}: BYTES element {len(values)} says {length} bytes but only "
                f"{len(view) - offset} remain"
            )
        try:
            values.append(str(view[offset : offset + length], "utf-8"))
        except UnicodeDecodeError as error:
            raise InvalidInput(
                f"input {name!r}: BYTES element {len(values)} is not UTF-8 text ({error.reason})"
            ) from error
        offset += length
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r} has {len(values)} BYTES elements but its shape needs {count}"
        )
    array = np.empty(count, dtype=object)
    array[:] = values
    return array


def array_from_bytes(
    name: str, datatype: Any, shape: Any, blob: bytes | memoryview
) -> np.ndarray[Any, Any]:
    """The flat array ``blob`` holds for a tensor of ``datatype`` and ``shape``."""
    dims = check_shape(name, shape)
    count = math.prod(dims)
    if datatype == "BYTES":
        return _bytes_elements(name, blob, count)
    dtype = DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInput(
            f"input {name!r} has datatype {datatype!r}; binary data takes one of "
            f"{', '.join(sorted([*DTYPES, 'BYTES']))}"
        )
    expected = count * dtype.itemsize
    if len(blob) != expected:
        raise InvalidInput(
            f"input {name!r} has {len(blob)} bytes of binary data but shape {dims} of "
            f"{datatype} needs {expected}"
        )
    return np.frombuffer(blob, dtype=dtype)


def array_to_bytes(output: OutputTensor) -> bytes:
    """An output's elements as binary tensor data."""
    if output.datatype == "BYTES":
        encoded: dict[Any, bytes] = {}  # labels repeat: each distinct one is encoded once
        parts = []
        for value in output.array.ravel().tolist():
            part = encoded.get(value)
            if part is None:
                data = value if isinstance(value, bytes) else str(value).encode()
                part = encoded[value] = _LENGTH.pack(len(data)) + data
            parts.append(part)
        return b"".join(parts)
    return np.ascontiguousarray(output.array, dtype=DTYPES[output.datatype]).tobytes()


def read_binary_request(body: bytes, header_length: str) -> Any:
    """The V2 request document of a binary-extension body, binary inputs as arrays."""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidInput(
            f"Inference-Header-Content-Length must be a number of bytes, got {header_length!r}"
        ) from None
    if not 0 < length <= len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length is {length} but the body has {len(body)} bytes"
        )
    try:
        document = orjson.loads(body[:length])
    except orjson.JSONDecodeError as error:
        raise InvalidInput(
            f"the JSON header (the first {length} bytes, per Inference-Header-Content-Length) "
            f"is malformed: {error}"
        ) from error
    binary = memoryview(body)[length:]
    inputs = document.get("inputs") if isinstance(document, dict) else None
    offset = 0
    for tensor in inputs if isinstance(inputs, list) else ():
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        name = tensor.get("name")
        size = parameters["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"input {name!r}: binary_data_size must be a number of bytes")
        if "data" in tensor:
            raise InvalidInput(f"input {name!r} has both 'data' and binary_data_size")
        if offset + size > len(binary):
            raise InvalidInput(
                f"input {name!r} says binary_data_size {size} but only "
                f"{len(binary) - offset} bytes of binary data remain"
            )
        tensor["data"] = array_from_bytes(
            name, tensor.get("datatype"), tensor.get("shape"), binary[offset : offset + size]
        )
        offset += size
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data follow the JSON header that no "
            "input claims (each binary input names its size in binary_data_size)"
        )
    return document


def binary_response(
    header: dict[str, Any], outputs: Sequence[OutputTensor], binary: frozenset[str]
) -> tuple[bytes, int | None]:
    """The response body, and its JSON header length when some outputs are binary."""
    if not binary:
        return orjson.dumps(header), None
    blobs = []
    tensors = []
    by_name = {t["name"]: t for t in header["outputs"]}
    for output in outputs:
        if output.name in binary:
            blob = array_to_bytes(output)
            blobs.append(blob)
            tensors.append(
                {
                    "name": output.name,
                    "datatype": output.datatype,
                    "shape": output.shape,
                    "parameters": {"binary_data_size": len(blob)},
                }
            )
        else:
            tensors.append(by_name[output.name])
    head = orjson.dumps({**header, "outputs": tensors})
    return b"".join([head, *blobs]), len(head)
