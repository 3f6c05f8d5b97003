"""The HTTP endpoints (V1, V2, feedback, health, metadata, metrics, model repository): each
reads what HTTP carries, asks the service core (``model_server.service``), and writes its
answer as a status, headers and a JSON (or binary tensor) body.

KServe's own V1/V2 handlers answer "ready" for a model that failed to load, report every
exception as a 500, and log a timing line per request. These keep KServe's paths and payloads,
and add what this project needs: 400s that name the problem, 404/503 with a reason, the
answering version in every response (``x-model-version``), request ids, and the metrics of
DESIGN.md. They also build the whole answer to a request shed at ``--max-concurrency``
(``http_guard``). Part of the HTTP transport: it knows nothing of gRPC, of ASGI middleware
order (``http_app``) or of processes.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson
from fastapi import Request, Response
from kserve.errors import InvalidInput

from model_server import repository, tensors
from model_server.errors import Refused, failure
from model_server.experiment import Assignment, Headers
from model_server.http_body import BINARY, JSON, body_limit, inflate, parse_document
from model_server.metrics import exposition
from model_server.model import Answer
from model_server.service import ModelService
from prediction_log.ids import request_id_from


def json_response(status: int, body: Any, headers: dict[str, str]) -> Response:
    """A JSON response (orjson) with ``headers``."""
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


class HttpRoutes:
    """The HTTP endpoints of one served model, over its ``ModelService``.

    FastAPI publishes each endpoint method's docstring in ``/openapi.json``: they are part of
    what the server answers.
    """

    def __init__(self, service: ModelService) -> None:
        self.service = service
        self.settings = service.model.settings
        self._shed_parts: tuple[str, bytes, bytes] | None = None

    def body_limit(self) -> int:
        """The largest request body, raw or inflated (depends on the loaded model)."""
        return body_limit(self.settings, self.service.feature_count())

    def version_headers(self) -> dict[str, str]:
        return self.service.version_headers()

    # -- refusals before a request is handled ------------------------------------------------

    def _shed_head_and_body(self) -> tuple[bytes, bytes]:
        """The fixed head and body of a shed request's 503 (built once per served version)."""
        version = self.service.model.version
        if self._shed_parts is None or self._shed_parts[0] != version:
            settings = self.settings
            body = orjson.dumps(
                {
                    "error": f"overloaded: this worker already has {settings.max_concurrency} "
                    f"requests in progress (--max-concurrency); retry after "
                    f"{settings.retry_after_seconds} s"
                }
            )
            head = (
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nretry-after: %d\r\nx-model-version: %s\r\n"
                % (len(body), settings.retry_after_seconds, version.encode())
            )
            self._shed_parts = (version, head, body)
        return self._shed_parts[1], self._shed_parts[2]

    def shed_answer(
        self, path: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> bytes:
        """The whole 503 for a request refused at --max-concurrency (see ``http_guard``); an
        inference request is counted (``code="503"`` and ``model_server_requests_shed_total``)."""
        given = next((v for k, v in headers if k == b"x-request-id"), None)
        request_id = request_id_from(given.decode("latin-1") if given else None).encode("latin-1")
        if path.endswith(b":predict") or path.endswith(b"/infer"):
            protocol = "v1" if path.startswith(b"/v1/") else "v2"
            self.service.metrics.shed(protocol)
            self.service.refused_early(request_id.decode("latin-1"), protocol, 503)
        head, body = self._shed_head_and_body()
        connection = b"" if keep_alive else b"connection: close\r\n"
        return b"%sx-request-id: %s\r\n%s\r\n%s" % (head, request_id, connection, body)

    def too_large_answer(
        self, path: str, message: str, request_id: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body of a 413 that closes the connection; counted (and, with its
        ``request_id``, recorded in the prediction log) for inference paths."""
        if path.endswith((":predict", "/infer")):
            protocol = "v1" if path.startswith("/v1/") else "v2"
            self.service.metrics.request(protocol, 413, None)
            if request_id is not None:
                self.service.refused_early(request_id, protocol, 413)
        headers = {**self.version_headers(), "connection": "close", "content-type": JSON}
        return headers, orjson.dumps({"error": message})

    # -- inference -----------------------------------------------------------------------

    async def v1_predict(self, model_name: str, request: Request) -> Response:
        return await self._infer(model_name, request, "v1")

    async def v2_infer(self, model_name: str, request: Request) -> Response:
        return await self._infer(model_name, request, "v2")

    async def v2_version_infer(self, model_name: str, version: str, request: Request) -> Response:
        return await self._infer(model_name, request, "v2", version)

    async def v1_explain(self, model_name: str) -> Response:
        return json_response(
            501,
            {
                "error": f"this server has no explainer for {model_name!r}: it serves predictions "
                f"only (POST /v1/models/{model_name}:predict)"
            },
            self.version_headers(),
        )

    async def read_document(
        self,
        headers: Headers,
        body: bytes,
        protocol: Literal["v1", "v2"],
        *,
        inject_faults: bool = True,
    ) -> Any:
        """The request's JSON document (binary inputs as arrays), or InvalidInput. ``body`` is
        bounded already (``BodyLimitMiddleware``, ``InferenceRoutes``)."""
        body = inflate(headers, body, self.body_limit())
        if inject_faults:
            await self.service.inject_faults()
        return parse_document(headers, body, protocol)

    async def _infer(
        self,
        model_name: str,
        request: Request,
        protocol: Literal["v1", "v2"],
        version: str | None = None,
    ) -> Response:
        """The FastAPI route of an inference path (``InferenceRoutes`` answers first)."""
        status, headers, content = await self.infer_http(
            model_name=model_name,
            version=version,
            protocol=protocol,
            headers=request.headers,
            body=await request.body(),
            request_id=request.state.request_id,  # set by RequestIdMiddleware
            log_line=f"{request.method} {request.url.path}",
        )
        return Response(content, status_code=status, headers=headers)

    async def infer_http(
        self,
        *,
        model_name: str,
        version: str | None,
        protocol: Literal["v1", "v2"],
        headers: Headers,
        body: bytes,
        request_id: str,
        log_line: str,
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one inference request: its status, response headers and body."""
        service = self.service
        started = time.perf_counter()
        status = 200
        answer: Answer | None = None
        assignment: Assignment[ModelService] | None = None
        response_headers = {**service.version_headers(), "content-type": JSON}
        try:
            service.check_model(model_name, version)
            document = await self.read_document(headers, body, protocol)
            assignment = service.route(headers, document, version)
            side = service.answering(assignment, response_headers)
            answer = side.predict(document, protocol)
            if protocol == "v1":
                content = orjson.dumps(answer.body)
            else:
                content, header_length = tensors.binary_response(
                    answer.body, answer.outputs, answer.decoded.binary_outputs
                )
                if header_length is not None:
                    response_headers[tensors.HEADER_LENGTH] = str(header_length)
                    response_headers["content-type"] = BINARY
            payload: Any = None
        except Exception as error:  # every failure is answered, and counted
            status, payload = failure(error, request_id)
            content = orjson.dumps(payload)
            response_headers.update(getattr(error, "headers", {}))
        service.finish(
            request_id=request_id,
            protocol=protocol,
            code=status,
            started=started,
            answer=answer,
            error=payload,
            log_line=log_line,
            assignment=assignment,
        )
        return status, response_headers, content

    async def feedback(self, model_name: str, request: Request) -> Response:
        """True labels or values for earlier predictions (see ``model_server.feedback``)."""
        try:
            self.service.check_model(model_name)
            document = await self.read_document(
                request.headers, await request.body(), "v1", inject_faults=False
            )
            report_id = getattr(request.state, "request_id", "") or ""
            body, headers = self.service.feedback(document, report_id)
        except InvalidInput as error:
            return json_response(400, {"error": str(error)}, self.version_headers())
        except Refused as error:
            return json_response(error.status, {"error": str(error)}, self.version_headers())
        return json_response(200, body, headers)

    # -- health and metadata -------------------------------------------------------------

    async def server_metadata(self) -> Response:
        return json_response(200, self.service.server_metadata_body(), self.version_headers())

    async def server_live(self) -> Response:
        return json_response(200, {"live": True}, self.version_headers())

    async def server_ready(self) -> Response:
        reason = self.service.not_ready_reason()
        if reason is None:
            return json_response(200, {"ready": True}, self.version_headers())
        return json_response(503, {"ready": False, "error": reason}, self.version_headers())

    async def v2_model_ready(self, model_name: str) -> Response:
        return self._model_ready(model_name, None)

    async def v2_version_ready(self, model_name: str, version: str) -> Response:
        return self._model_ready(model_name, version)

    def _model_ready(self, model_name: str, version: str | None) -> Response:
        try:
            self.service.check_model(model_name, version)
            missing = self.service.missing_workers()
            if missing is not None:
                raise Refused(503, missing)
        except Refused as error:
            return json_response(
                error.status,
                {"name": model_name, "ready": False, "error": str(error)},
                self.version_headers(),
            )
        return json_response(200, {"name": model_name, "ready": True}, self.version_headers())

    async def v1_model_ready(self, model_name: str) -> Response:
        name, _, verb = model_name.rpartition(":")
        if name and verb in {"predict", "explain"}:
            return json_response(
                405, {"error": f"use POST for :{verb}"}, {**self.version_headers(), "allow": "POST"}
            )
        try:
            self.service.check_model(model_name)
            missing = self.service.missing_workers()
            if missing is not None:
                raise Refused(503, missing)
        except Refused as error:
            return json_response(error.status, {"error": str(error)}, self.version_headers())
        body = {"name": model_name, "ready": True, "model_version": self.service.model.version}
        return json_response(200, body, self.version_headers())

    async def v2_model_metadata(self, model_name: str) -> Response:
        return self._model_metadata(model_name, None)

    async def v2_version_metadata(self, model_name: str, version: str) -> Response:
        return self._model_metadata(model_name, version)

    def _model_metadata(self, model_name: str, version: str | None) -> Response:
        try:
            self.service.check_model(model_name, version)
        except Refused as error:
            return json_response(error.status, {"error": str(error)}, self.version_headers())
        model = self.service.model
        meta = model.metadata
        assert meta is not None
        body = {
            **self.service.model_metadata(),
            # REST only (gRPC's ModelMetadataResponse has no field for it): what the model is,
            # and the class order of predict_proba's columns.
            "parameters": {
                "task": meta.task,
                "features": [f.model_dump(mode="json", exclude_none=True) for f in meta.features],
                "classes": meta.target.classes,
                "created_at": meta.created_at.isoformat(),
                "sha256": meta.artifact.sha256,
                "engine": model.engine_name,
            },
        }
        return json_response(200, body, self.version_headers())

    async def metrics_endpoint(self) -> Response:
        data, content_type = exposition()
        return Response(data, media_type=content_type)

    # -- model repository extension (off unless --enable-model-repository) ----------------

    async def repository_index_endpoint(self) -> Response:
        model = self.service.model
        try:
            repository.check_enabled(model)
        except Refused as error:
            return json_response(error.status, {"error": str(error)}, self.version_headers())
        return json_response(200, repository.index(model), self.version_headers())

    async def repository_load(self, model_name: str) -> Response:
        return self._repository(model_name, "load")

    async def repository_unload(self, model_name: str) -> Response:
        return self._repository(model_name, "unload")

    def _repository(self, model_name: str, action: Literal["load", "unload"]) -> Response:
        try:
            message = repository.act(self.service.model, model_name, action)
        except Refused as error:
            return json_response(error.status, {"error": str(error)}, self.version_headers())
        return json_response(200, {"name": model_name, "message": message}, self.version_headers())
