"""HTTP handlers placed in front of KServe's routes on KServe's FastAPI app.

KServe's own V1/V2 handlers answer "ready" for a model that failed to load, report every
exception as a 500, and log a timing line per request. These handlers keep KServe's paths and
payloads, and add what this project needs: 400s that name the problem, 404/503 with a reason, the
answering version in every response, request ids, and the metrics of DESIGN.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from kserve.errors import InvalidInput

from model_server import codec
from model_server.drift import DriftMonitor
from model_server.feedback import decode_feedback
from model_server.metrics import ModelMetrics, exposition
from model_server.provenance import ProvenanceLog
from serving_common.logging import bind_context

if TYPE_CHECKING:
    from model_server.model import SklearnModel

log = logging.getLogger("model_server.access")
errors_log = logging.getLogger("model_server")

JSON = "application/json"
_JSON_TYPES = ("application/json", "application/octet-stream")


class _Refused(Exception):
    """A request answered with ``status`` and ``message`` (404, 415-as-400, 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _InjectedFault(Exception):
    """A failure the operator asked for (``--fault-error-ratio``)."""


def _json(status: int, body: Any, headers: dict[str, str]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


class Handlers:
    """Routes for one served model."""

    def __init__(self, model: SklearnModel, access_log: bool) -> None:
        self.model = model
        self.access_log = access_log
        settings = model.settings
        self.fault_ratio = settings.fault_error_ratio
        self.fault_delay = settings.fault_latency_ms / 1000.0
        self._random = random.Random()  # noqa: S311 (fault injection, not security)
        self.provenance: ProvenanceLog | None = None
        self.drift: DriftMonitor | None = None
        if settings.drift and model.metadata is not None:
            self.drift = DriftMonitor(
                model.metadata,
                window_rows=settings.drift_window_rows,
                window_seconds=settings.drift_window_seconds,
                min_rows=settings.drift_min_rows,
            )
        self._background: set[asyncio.Task[None]] = set()
        if settings.prediction_log_sample_rate > 0 and model.metadata is not None:
            self.provenance = ProvenanceLog(
                model.metadata,
                model_name=model.name,
                revision=settings.revision or "",
                sample_rate=settings.prediction_log_sample_rate,
                payloads=settings.prediction_log_payloads,
            )

    @functools.cached_property
    def metrics(self) -> ModelMetrics:
        """Bound on first use: a worker writes metric values only once it serves requests."""
        schema = self.model.schema
        return ModelMetrics(self.model.name, self.model.version, schema.classes if schema else None)

    def _headers(self) -> dict[str, str]:
        return {"x-model-version": self.model.version}

    def _check_model(self, model_name: str) -> None:
        if model_name != self.model.name:
            raise _Refused(
                404,
                f"model {model_name!r} is not served here (this server serves {self.model.name!r})",
            )
        if not self.model.ready:
            raise _Refused(503, f"model {model_name!r} is not ready: {self.model.load_error}")

    # -- inference -----------------------------------------------------------------------

    async def v1_predict(self, model_name: str, request: Request) -> Response:
        return await self._infer(model_name, request, "v1")

    async def v2_infer(self, model_name: str, request: Request) -> Response:
        return await self._infer(model_name, request, "v2")

    async def _read_json(self, request: Request, *, inject_faults: bool = True) -> Any:
        """The request's JSON document (after any injected fault), or InvalidInput."""
        content_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
        if content_type not in _JSON_TYPES and not content_type.endswith("+json"):
            raise InvalidInput(
                f"content type {content_type!r} is not supported; send application/json"
            )
        if "inference-header-content-length" in request.headers:
            raise InvalidInput("binary tensor data is not supported; send the tensors as JSON")
        body = await request.body()
        if inject_faults and self.fault_delay:
            await asyncio.sleep(self.fault_delay)
        if inject_faults and self.fault_ratio and self._random.random() < self.fault_ratio:
            raise _InjectedFault
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise InvalidInput(f"malformed JSON: {error}") from error

    def _predict(self, document: Any, protocol: Literal["v1", "v2"]) -> tuple[Any, codec.Rows]:
        """Answer one request and record its inference metrics and drift input."""
        answer = self.model.answer(document, protocol)
        self.metrics.predicted(answer.labels, answer.inference_seconds)
        if self.drift is not None:
            self.drift.observe(answer.rows, answer.labels)
        return answer.body, answer.rows

    async def _infer(
        self, model_name: str, request: Request, protocol: Literal["v1", "v2"]
    ) -> Response:
        started = time.perf_counter()
        request_id: str = request.state.request_id  # set by RequestIdMiddleware
        model = self.model
        status = 200
        rows: codec.Rows | None = None
        try:
            self._check_model(model_name)
            document = await self._read_json(request)
            payload, rows = self._predict(document, protocol)
        except InvalidInput as error:
            status, payload = 400, {"error": str(error)}
        except _Refused as error:
            status, payload = error.status, {"error": str(error)}
        except _InjectedFault:
            status, payload = (
                500,
                {"error": "injected fault (the server runs with fault injection on)"},
            )
        except Exception:
            errors_log.exception(
                "inference failed (request id %s)", request_id, extra={"request_id": request_id}
            )
            status = 500
            payload = {
                "error": f"internal error; the server log has the details (request id {request_id})"
            }
        response = _json(status, payload, self._headers())
        elapsed = time.perf_counter() - started
        if self.provenance is not None and self.provenance.sampled():
            self._write_provenance(
                request_id=request_id,
                protocol=protocol,
                status=status,
                elapsed=elapsed,
                payload=payload,
                rows=rows,
            )
        if status != 404:  # an unknown model name is client input: keep it out of labels
            self.metrics.request(protocol, status, elapsed)
        if self.access_log:
            log.info(
                "%s %s %d",
                request.method,
                request.url.path,
                status,
                extra={
                    "request_id": request_id,
                    "model_name": model.name,
                    "model_version": model.version,
                    "protocol": protocol,
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 3),
                },
            )
        return response

    def _write_provenance(
        self,
        *,
        request_id: str,
        protocol: str,
        status: int,
        elapsed: float,
        payload: Any,
        rows: codec.Rows | None,
    ) -> None:
        assert self.provenance is not None
        inputs = outputs = None
        if self.provenance.payloads and rows is not None:
            inputs = rows.tolist() if isinstance(rows, np.ndarray) else rows.to_dict("records")
            outputs = payload
        self.provenance.write(
            request_id=request_id,
            protocol=protocol,
            status=status,
            latency_seconds=elapsed,
            rows=len(rows) if rows is not None else None,
            inputs=inputs,
            outputs=outputs,
        )

    async def start_background(self) -> None:
        """Start the drift task in this worker's event loop (FastAPI startup hook)."""
        if self.drift is not None:
            task = asyncio.create_task(
                self.drift.run(self.model.settings.drift_interval_seconds, self.metrics.drift)
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def feedback(self, model_name: str, request: Request) -> Response:
        """True labels or values for earlier predictions (see ``model_server.feedback``)."""
        try:
            self._check_model(model_name)
            document = await self._read_json(request, inject_faults=False)
            schema = self.model.schema
            assert schema is not None
            received = decode_feedback(document, schema, self.model.version)
        except InvalidInput as error:
            return _json(400, {"error": str(error)}, self._headers())
        except _Refused as error:
            return _json(error.status, {"error": str(error)}, self._headers())
        self.metrics.feedback(received.correct, received.incorrect, received.abs_errors)
        body: dict[str, Any] = {
            "model_name": self.model.name,
            "model_version": self.model.version,
            "received": received.received,
        }
        if received.abs_errors:
            body["mean_abs_error"] = sum(received.abs_errors) / len(received.abs_errors)
        else:
            body.update(correct=received.correct, incorrect=received.incorrect)
        return _json(200, body, self._headers())

    # -- health and metadata -------------------------------------------------------------

    async def server_ready(self) -> Response:
        if self.model.ready:
            return _json(200, {"ready": True}, self._headers())
        return _json(503, {"ready": False, "error": self.model.load_error}, self._headers())

    async def v2_model_ready(self, model_name: str) -> Response:
        try:
            self._check_model(model_name)
        except _Refused as error:
            return _json(
                error.status,
                {"name": model_name, "ready": False, "error": str(error)},
                self._headers(),
            )
        return _json(200, {"name": model_name, "ready": True}, self._headers())

    async def v1_model_ready(self, model_name: str) -> Response:
        try:
            self._check_model(model_name)
        except _Refused as error:
            return _json(error.status, {"error": str(error)}, self._headers())
        body = {"name": model_name, "ready": True, "model_version": self.model.version}
        return _json(200, body, self._headers())

    async def v2_model_metadata(self, model_name: str) -> Response:
        try:
            self._check_model(model_name)
        except _Refused as error:
            return _json(error.status, {"error": str(error)}, self._headers())
        meta = self.model.metadata
        assert meta is not None
        body = {
            "name": model_name,
            "versions": [self.model.version],
            "platform": "sklearn",
            "inputs": self.model.get_input_types(),
            "outputs": self.model.get_output_types(),
            "parameters": {
                "task": meta.task,
                "features": [f.model_dump(mode="json", exclude_none=True) for f in meta.features],
                "classes": meta.target.classes,
                "created_at": meta.created_at.isoformat(),
                "sha256": meta.artifact.sha256,
            },
        }
        return _json(200, body, self._headers())

    async def metrics_endpoint(self) -> Response:
        data, content_type = exposition()
        return Response(data, media_type=content_type)


class RequestIdMiddleware:
    """Every HTTP response carries ``x-request-id``: the client's, or a new one.

    The id is also put in the request's state (``request.state.request_id``) for the handlers'
    logs and provenance lines, so it is read or made in this one place for every route.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = given.decode("latin-1") if given else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def install(app: FastAPI, model: SklearnModel, *, access_log: bool = False) -> None:
    """Put this project's routes in front of whatever ``app`` already has or gets later."""
    handlers = Handlers(model, access_log)
    router = APIRouter()
    router.add_api_route("/metrics", handlers.metrics_endpoint, methods=["GET"])
    router.add_api_route("/v2/health/ready", handlers.server_ready, methods=["GET"])
    router.add_api_route("/v1/models/{model_name}:predict", handlers.v1_predict, methods=["POST"])
    router.add_api_route("/v1/models/{model_name}", handlers.v1_model_ready, methods=["GET"])
    router.add_api_route("/v1/models/{model_name}/feedback", handlers.feedback, methods=["POST"])
    router.add_api_route("/v2/models/{model_name}/feedback", handlers.feedback, methods=["POST"])
    router.add_api_route("/v2/models/{model_name}/infer", handlers.v2_infer, methods=["POST"])
    router.add_api_route("/v2/models/{model_name}/ready", handlers.v2_model_ready, methods=["GET"])
    router.add_api_route("/v2/models/{model_name}", handlers.v2_model_metadata, methods=["GET"])
    app.router.routes[0:0] = router.routes
    app.router.on_startup.append(handlers.start_background)
    app.add_middleware(RequestIdMiddleware)


_installed_in_worker = False


def install_in_worker(model: SklearnModel) -> None:
    """In a KServe worker process (spawned, fresh imports): logging, routes, model info."""
    global _installed_in_worker  # noqa: PLW0603 (once per process)
    if _installed_in_worker:
        return
    _installed_in_worker = True
    from model_server.__main__ import configure_server_logging, publish_model_info

    configure_server_logging(model.settings)
    bind_context(model_name=model.name, model_version=model.version)
    import kserve.model_server

    install(kserve.model_server.app, model, access_log=model.settings.access_log)
    publish_model_info(model)
