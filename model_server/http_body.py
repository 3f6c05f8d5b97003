"""Request bodies over HTTP: how large they may be, reading them within that limit, content
types and encodings, and the JSON or binary tensor document they hold.

A body is read only up to the limit (a declared or streamed excess is a 413), inflated when it
says ``Content-Encoding: gzip|deflate`` without inflating past the limit (a zip bomb is a 413),
and parsed as JSON or, with ``Inference-Header-Content-Length``, as the binary tensor extension
(``model_server.tensors``). Part of the HTTP transport: it knows ASGI's receive messages and
HTTP headers, and nothing of models, metrics or how a document is answered.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from kserve.errors import InvalidInput

from model_server import tensors
from model_server.errors import Refused
from model_server.settings import ModelServerSettings

JSON = "application/json"
BINARY = "application/octet-stream"
_BODY_TYPES = (
    "application/json",
    # KServe's REST client and tritonclient send binary tensor requests as octet-stream.
    BINARY,
    # `curl -d` sends this; KServe's own endpoints read any body as JSON, and so do we.
    "application/x-www-form-urlencoded",
)
BYTES_PER_VALUE = 128
"""Room per feature value in the default body limit: a JSON number, or a category, with
separators and a V1 object's key."""
MIN_BODY_LIMIT = 1024 * 1024


def body_limit(settings: ModelServerSettings, features: int) -> int:
    """``--max-request-bytes``, or room for the largest batch of ``features`` as JSON."""
    if settings.max_request_bytes is not None:
        return settings.max_request_bytes
    largest = settings.max_batch_rows * max(features, 1) * BYTES_PER_VALUE + 64 * 1024
    return max(largest, MIN_BODY_LIMIT)


def too_large(size: int, limit: int, *, more: bool = False) -> str:
    """A 413's message for a body of ``size`` bytes (``more``: cut off there)."""
    amount = f"more than {limit} bytes" if more else f"{size} bytes"
    return (
        f"request body of {amount} is larger than the limit of {limit} "
        "(split the batch, or raise --max-request-bytes)"
    )


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` inflated, refusing to inflate past ``limit`` bytes (a zip bomb is a 413)."""
    # gzip: a gzip header; deflate: HTTP means the zlib format, but some clients send raw
    # deflate, which zlib's wbits=-15 reads.
    gzip_bits, zlib_bits, raw_bits = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS
    attempts = (zlib_bits, raw_bits) if encoding == "deflate" else (gzip_bits,)
    for wbits in attempts:
        inflater = zlib.decompressobj(wbits)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as error:
            last = error
            continue
        if len(data) > limit or inflater.unconsumed_tail:
            raise Refused(
                413,
                f"the {encoding} request body inflates past the limit of {limit} bytes "
                "(split the batch, or raise --max-request-bytes)",
            )
        if not inflater.eof:
            raise InvalidInput(f"the {encoding} body is cut off before its end")
        return data
    raise InvalidInput(f"the body is not valid {encoding} data ({last})")


def inflate(headers: Mapping[str, str], body: bytes, limit: int) -> bytes:
    """The request body, decompressed when it says ``Content-Encoding: gzip|deflate``; a 415
    for a content type or encoding this server does not read."""
    content_type = headers.get("content-type", JSON).split(";")[0].strip().lower()
    if content_type not in _BODY_TYPES and not content_type.endswith("+json"):
        raise Refused(
            415,
            f"content type {content_type!r} is not supported; send application/json "
            "(or application/octet-stream with binary tensor data)",
        )
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in {"gzip", "x-gzip", "deflate"}:
        return decompress(body, encoding, limit)
    if encoding != "identity":
        raise Refused(
            415, f"content encoding {encoding!r} is not supported; send gzip, deflate or none"
        )
    return body


def parse_document(headers: Mapping[str, str], body: bytes, protocol: Literal["v1", "v2"]) -> Any:
    """The request's JSON document, binary tensor inputs as arrays; or InvalidInput."""
    header_length = headers.get(tensors.HEADER_LENGTH)
    if header_length is not None:
        if protocol != "v2":
            raise InvalidInput("binary tensor data is a V2 extension; V1 takes JSON only")
        return tensors.read_binary_request(body, header_length)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"malformed JSON: {error}") from error


async def bounded_body(scope: Any, receive: Any, limit: int) -> bytes | str | None:
    """The request body if it is at most ``limit`` bytes; else why not (a 413's message), or
    None when the client went away. A declared Content-Length over the limit is refused
    before any of the body is read; a streamed body is counted as it arrives and cut there."""
    declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return too_large(size, limit, more=True)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
