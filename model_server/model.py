"""``SklearnModel``: the ``kserve.Model`` that answers V1 and V2 request documents with one
loaded version (``model_server.loading``).

``answer`` decodes and validates a document (``codec_v1``, ``codec_v2``), infers, and returns an
``Answer``: the labels and probabilities, and each protocol's encoding of them, made when a
transport asks. ``predict`` is KServe's data-plane entry for callers of ``kserve.Model`` itself,
on the same codec. This module knows nothing of transports (HTTP, gRPC), metrics, experiments
or how requests reach it.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Literal

import numpy as np
from kserve.protocol.infer_type import InferRequest, InferResponse

from model_server import codec_v1, codec_v2
from model_server.codec import Decoded
from model_server.loading import ModelVersion
from model_server.schema import Rows
from model_server.tensors import read_binary_request


class Answer:
    """One answered request: what each transport encodes, and what metrics and drift need."""

    def __init__(  # noqa: PLR0917 (one answer's parts)
        self,
        model: SklearnModel,
        protocol: Literal["v1", "v2"],
        decoded: Decoded,
        labels: np.ndarray[Any, Any],
        probabilities: np.ndarray[Any, Any] | None,
        inference_seconds: float,
    ) -> None:
        self.model = model
        self.protocol = protocol
        self.decoded = decoded
        self.labels = labels
        self.probabilities = probabilities
        self.inference_seconds = inference_seconds

    @property
    def rows(self) -> Rows:
        return self.decoded.frame

    @functools.cached_property
    def outputs(self) -> list[codec_v2.OutputTensor]:
        """The V2 output tensors (all, or the ones the request named)."""
        return codec_v2.v2_outputs(self.labels, self.probabilities, self.decoded)

    @functools.cached_property
    def body(self) -> dict[str, Any]:
        """The JSON response (for V2 without the outputs the request wants in binary)."""
        model, schema = self.model, self.model.schema
        assert schema is not None
        if self.protocol == "v1":
            return codec_v1.encode_v1(
                self.labels, self.probabilities, schema, model.name, model.version
            )
        return codec_v2.encode_v2(
            outputs=self.outputs,
            decoded=self.decoded,
            model_name=model.name,
            model_version=model.version,
        )

    @functools.cached_property
    def json_body(self) -> dict[str, Any]:
        """The response with every output as JSON, binary ones included (what the prediction
        log's payloads record: the whole answer, whatever encoding the client asked for)."""
        if self.protocol == "v1" or not self.decoded.binary_outputs:
            return self.body
        return codec_v2.encode_v2(
            outputs=self.outputs,
            decoded=dataclasses.replace(self.decoded, binary_outputs=frozenset()),
            model_name=self.model.name,
            model_version=self.model.version,
        )


class SklearnModel(ModelVersion):
    """A loaded version (``ModelVersion``) that answers decoded V1 and V2 requests."""

    def answer(self, document: Any, protocol: Literal["v1", "v2"]) -> Answer:
        """Decode and validate a V1 or V2 request document and predict."""
        schema = self.schema
        assert schema is not None
        if protocol == "v1":
            decoded = codec_v1.decode_v1(document, schema)
        else:
            decoded = codec_v2.decode_v2(document, schema)
        started = time.perf_counter()
        labels, proba = self.infer(decoded.frame, decoded.probabilities)
        return Answer(self, protocol, decoded, labels, proba, time.perf_counter() - started)

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """KServe's data-plane entry, for callers of ``kserve.Model`` itself: same codec."""
        if isinstance(payload, InferRequest):
            document, binary_length = payload.to_rest()
            if binary_length is not None:
                assert isinstance(document, bytes)
                document = read_binary_request(document, str(binary_length))
            answer = self.answer(document, "v2")
            json_only = dataclasses.replace(answer.decoded, binary_outputs=frozenset())
            return InferResponse.from_rest(
                codec_v2.encode_v2(
                    outputs=answer.outputs,
                    decoded=json_only,
                    model_name=self.name,
                    model_version=self.version,
                )
            )
        return self.answer(payload, "v1").body
