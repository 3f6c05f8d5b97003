"""HTTP handlers placed in front of KServe's routes on KServe's FastAPI app.

KServe's own V1/V2 handlers answer "ready" for a model that failed to load, report every
exception as a 500, and log a timing line per request. These handlers keep KServe's paths and
payloads, and add what this project needs: 400s that name the problem, 404/503 with a reason, the
answering version in every response, request ids, and the metrics of DESIGN.md.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import logging
import os
import random
import re
import time
import uuid
import zlib
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from kserve.errors import InvalidInput
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware

from model_server import codec, http_guard, tensors, workers
from model_server.drift import DriftMonitor
from model_server.experiment import Assignment, Experiment
from model_server.feedback import decode_feedback
from model_server.metrics import ModelMetrics, exposition
from model_server.model import load_models
from model_server.provenance import ProvenanceLog
from serving_common.logging import bind_context

if TYPE_CHECKING:
    from model_server.model import Answer, SklearnModel
    from model_server.settings import ModelServerSettings

log = logging.getLogger("model_server.access")
errors_log = logging.getLogger("model_server")

Headers = Mapping[str, str]
"""A request's headers, by lower-case name."""
JSON = "application/json"
BINARY = "application/octet-stream"
_BODY_TYPES = (
    "application/json",
    # KServe's REST client and tritonclient send binary tensor requests as octet-stream.
    BINARY,
    # `curl -d` sends this; KServe's own endpoints read any body as JSON, and so do we.
    "application/x-www-form-urlencoded",
)
SERVER_NAME = "model-server"
PLATFORM = "sklearn"
COMPRESS_MIN_BYTES = 64 * 1024
"""Responses at least this large are gzip-compressed for clients that accept it."""
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


def _package_version() -> str:
    try:
        return importlib_metadata.version("model-serving")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover (run from a checkout)
        return "0+unknown"


class Refused(Exception):
    """A request answered with ``status`` and ``message`` (404, 405, 413, 415, 501, 503)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


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
        self._background: set[asyncio.Task[None]] = set()
        self._started = False
        self.experiment: Experiment | None = None
        """Experiment mode, on the control's handlers (these): routes to them or the
        treatment's."""
        self.part_of: Experiment | None = None
        """The experiment these handlers are a side of (both sides), or None."""
        if model.treatment is not None:
            treatment = Handlers(model.treatment, access_log)
            self.experiment = self.part_of = treatment.part_of = Experiment(
                settings, self, treatment
            )
        self._bind_model()

    def _bind_model(self) -> None:
        """Drift, provenance and metrics for the loaded version (again after a late load)."""
        model, settings = self.model, self.model.settings
        features = len(model.metadata.features) if model.metadata else 0
        self.body_limit = body_limit(settings, features)
        """The largest request body, raw or inflated (depends on the loaded model)."""
        self.__dict__.pop("metrics", None)  # rebound on first use, with the loaded version
        self.__dict__.pop("_shed_parts", None)
        if settings.drift and model.metadata is not None:
            self.drift = DriftMonitor(
                model.metadata,
                window_rows=settings.drift_window_rows,
                window_seconds=settings.drift_window_seconds,
                min_rows=settings.drift_min_rows,
            )
        if settings.prediction_log_sample_rate > 0 and model.metadata is not None:
            self.provenance = ProvenanceLog(
                model.metadata,
                model_name=model.name,
                revision=settings.revision or "",
                sample_rate=settings.prediction_log_sample_rate,
                payloads=settings.prediction_log_payloads,
            )

    @functools.cached_property
    def _shed_parts(self) -> tuple[bytes, bytes]:
        """The fixed head and body of a shed request's 503 (built once)."""
        settings = self.model.settings
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
            % (len(body), settings.retry_after_seconds, self.model.version.encode())
        )
        return head, body

    def shed_answer(
        self, path: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> bytes:
        """The whole 503 for a request refused at --max-concurrency (see ``http_guard``); an
        inference request is counted (``code="503"`` and ``model_server_requests_shed_total``)."""
        if path.endswith(b":predict") or path.endswith(b"/infer"):
            self.metrics.shed("v1" if path.startswith(b"/v1/") else "v2")
        head, body = self._shed_parts
        request_id = next((v for k, v in headers if k == b"x-request-id"), None)
        if request_id is None:
            request_id = uuid.uuid4().hex.encode()
        connection = b"" if keep_alive else b"connection: close\r\n"
        return b"%sx-request-id: %s\r\n%s\r\n%s" % (head, request_id, connection, body)

    @functools.cached_property
    def metrics(self) -> ModelMetrics:
        """Bound on first use: a worker writes metric values only once it serves requests."""
        schema = self.model.schema
        return ModelMetrics(self.model.name, self.model.version, schema.classes if schema else None)

    def version_headers(self) -> dict[str, str]:
        return {"x-model-version": self.model.version}

    def versions(self) -> list[str]:
        """The versions served here: one, or the control's and the treatment's."""
        return [side.model.version for side in self.sides()]

    def model_not_ready(self) -> str | None:
        """Why the served model (both versions in experiment mode) cannot answer, or None."""
        if not self.model.ready:
            return self.model.load_error or "not loaded"
        if self.experiment is not None:
            treatment = self.experiment.treatment.model
            if not treatment.ready:
                return f"the experiment's treatment is not ready: {treatment.load_error}"
        return None

    def check_model(self, model_name: str, version: str | None = None) -> None:
        """404 for a model or version not served here, 503 while not ready."""
        if model_name != self.model.name:
            raise Refused(
                404,
                f"model {model_name!r} is not served here (this server serves {self.model.name!r})",
            )
        versions = self.versions()
        if version is not None and version not in versions:
            raise Refused(
                404,
                f"version {version!r} of {model_name!r} is not served here (this server serves "
                f"{', '.join(map(repr, versions))}; other versions are other revisions)",
            )
        reason = self.model_not_ready()
        if reason is not None:
            raise Refused(503, f"model {model_name!r} is not ready: {reason}")

    def route(self, headers: Headers, document: Any, version: str | None) -> Assignment | None:
        """In experiment mode, the side that answers this request (None: no experiment)."""
        if self.experiment is None:
            return None
        return self.experiment.route(headers, document, version)

    def answering(self, assignment: Assignment | None, headers: dict[str, str]) -> Handlers:
        """The handlers that answer (these, or the assigned side's), and their version and
        variant put in the response ``headers``."""
        if assignment is None or self.experiment is None:
            return self
        headers.update(assignment.side.version_headers())
        headers.update(self.experiment.response_headers(assignment))
        return assignment.side

    # -- inference -----------------------------------------------------------------------

    async def v1_predict(self, model_name: str, request: Request) -> Response:
        return await self._infer(model_name, request, "v1")

    async def v2_infer(self, model_name: str, request: Request) -> Response:
        return await self._infer(model_name, request, "v2")

    async def v2_version_infer(self, model_name: str, version: str, request: Request) -> Response:
        return await self._infer(model_name, request, "v2", version)

    async def v1_explain(self, model_name: str) -> Response:
        return _json(
            501,
            {
                "error": f"this server has no explainer for {model_name!r}: it serves predictions "
                f"only (POST /v1/models/{model_name}:predict)"
            },
            self.version_headers(),
        )

    def _inflate(self, headers: Headers, body: bytes) -> bytes:
        """The request body, decompressed when it says ``Content-Encoding: gzip|deflate``."""
        content_type = headers.get("content-type", JSON).split(";")[0].strip().lower()
        if content_type not in _BODY_TYPES and not content_type.endswith("+json"):
            raise Refused(
                415,
                f"content type {content_type!r} is not supported; send application/json "
                "(or application/octet-stream with binary tensor data)",
            )
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in {"gzip", "x-gzip", "deflate"}:
            return _decompress(body, encoding, self.body_limit)
        if encoding != "identity":
            raise Refused(
                415, f"content encoding {encoding!r} is not supported; send gzip, deflate or none"
            )
        return body

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
        body = self._inflate(headers, body)
        if inject_faults and self.fault_delay:
            await asyncio.sleep(self.fault_delay)
        if inject_faults and self.fault_ratio and self._random.random() < self.fault_ratio:
            raise _InjectedFault
        header_length = headers.get(tensors.HEADER_LENGTH)
        if header_length is not None:
            if protocol != "v2":
                raise InvalidInput("binary tensor data is a V2 extension; V1 takes JSON only")
            return tensors.read_binary_request(body, header_length)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise InvalidInput(f"malformed JSON: {error}") from error

    def predict(self, document: Any, protocol: Literal["v1", "v2"]) -> Answer:
        """Answer one request and record its inference metrics and drift input."""
        answer = self.model.answer(document, protocol)
        self.metrics.predicted(answer.labels, answer.inference_seconds)
        if self.drift is not None:
            self.drift.observe(answer.rows, answer.labels)
        return answer

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
        started = time.perf_counter()
        status = 200
        answer: Answer | None = None
        assignment: Assignment | None = None
        response_headers = {**self.version_headers(), "content-type": JSON}
        try:
            self.check_model(model_name, version)
            document = await self.read_document(headers, body, protocol)
            assignment = self.route(headers, document, version)
            side = self.answering(assignment, response_headers)
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
            status, payload = self.failure(error, request_id)
            content = orjson.dumps(payload)
            response_headers.update(getattr(error, "headers", {}))
        self.finish(
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

    def failure(self, error: Exception, request_id: str) -> tuple[int, dict[str, str]]:
        """The HTTP status and error body for a request that failed with ``error``."""
        if isinstance(error, InvalidInput):
            return 400, {"error": str(error)}
        if isinstance(error, Refused):
            return error.status, {"error": str(error)}
        if isinstance(error, _InjectedFault):
            return 500, {"error": "injected fault (the server runs with fault injection on)"}
        errors_log.exception(
            "inference failed (request id %s)", request_id, extra={"request_id": request_id}
        )
        return 500, {
            "error": f"internal error; the server log has the details (request id {request_id})"
        }

    def finish(
        self,
        *,
        request_id: str,
        protocol: str,
        code: int | str,
        started: float,
        answer: Answer | None,
        error: Any,
        log_line: str,
        status: int | None = None,
        assignment: Assignment | None = None,
    ) -> None:
        """Provenance, metrics and the access log line of one inference request.

        ``code`` is the metric label (HTTP status, or the gRPC status name); ``status`` the
        HTTP-equivalent number when ``code`` is not one. With an ``assignment`` (experiment
        mode) they are the answering side's, and an answered assigned request is an exposure.
        """
        if assignment is not None and assignment.side is not self:
            assignment.side.finish(
                request_id=request_id,
                protocol=protocol,
                code=code,
                started=started,
                answer=answer,
                error=error,
                log_line=log_line,
                status=status,
                assignment=assignment,
            )
            return
        status = status if status is not None else int(code)
        elapsed = time.perf_counter() - started
        part_of = self.part_of
        if assignment is not None and part_of is not None:
            part_of.answered(assignment, status)
        if self.provenance is not None and self.provenance.sampled():
            self._write_provenance(
                request_id=request_id,
                protocol=protocol,
                status=status,
                elapsed=elapsed,
                payload=answer.body if answer is not None else error,
                rows=answer.rows if answer is not None else None,
                extra=(
                    part_of.provenance(assignment)
                    if assignment is not None and part_of is not None
                    else None
                ),
            )
        if status != 404:  # an unknown model name is client input: keep it out of labels
            self.metrics.request(protocol, code, elapsed)
        if self.access_log:
            log.info(
                "%s %s",
                log_line,
                code,
                extra={
                    "request_id": request_id,
                    "model_name": self.model.name,
                    "model_version": self.model.version,
                    "protocol": protocol,
                    "status": code,
                    "latency_ms": round(elapsed * 1000, 3),
                    **({"variant": assignment.variant} if assignment is not None else {}),
                },
            )

    def _write_provenance(
        self,
        *,
        request_id: str,
        protocol: str,
        status: int,
        elapsed: float,
        payload: Any,
        rows: codec.Rows | None,
        extra: dict[str, Any] | None,
    ) -> None:
        assert self.provenance is not None
        inputs = outputs = None
        if self.provenance.payloads and rows is not None:
            inputs = rows.tolist() if isinstance(rows, np.ndarray) else rows.records()
            outputs = payload
        self.provenance.write(
            request_id=request_id,
            protocol=protocol,
            status=status,
            latency_seconds=elapsed,
            rows=len(rows) if rows is not None else None,
            inputs=inputs,
            outputs=outputs,
            extra=extra,
        )

    async def start_background(self) -> None:
        """Start this process's background work in its event loop (once, whoever asks first):
        loading the model until it loads, then drift."""
        if self._started:
            return
        self._started = True
        self._spawn(self._load_then_watch())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def sides(self) -> list[Handlers]:
        """These handlers, and the treatment's in experiment mode."""
        if self.experiment is None:
            return [self]
        return list(self.experiment.sides.values())

    async def _load_then_watch(self) -> None:
        if self.model_not_ready() is not None and not self.model.unloaded:
            await self.keep_loading()
        roster = workers.roster()
        if roster is not None and self.model_not_ready() is None:
            roster.mark_ready(os.getpid())
        interval = self.model.settings.drift_interval_seconds
        for side in self.sides()[1:]:  # the treatment's drift beside this one
            if side.drift is not None:
                self._spawn(side.drift.run(interval, side.metrics.drift))
        if self.drift is not None:
            await self.drift.run(interval, self.metrics.drift)

    async def keep_loading(self) -> None:
        """Retry loading the model until it loads: storage that is down or slow at start must
        not need a restart. Capped exponential backoff with jitter; readiness says why it is
        not ready and when the next attempt is."""
        settings = self.model.settings
        delay = settings.load_retry_initial_seconds
        attempt = 1
        pending = self.model.first_attempt
        if pending is not None and not pending.done():  # main()'s first attempt, still going
            await asyncio.wrap_future(pending)
        while self.model_not_ready() is not None and not self.model.unloaded:
            wait = delay * (0.5 + self._random.random() / 2)
            for side in self.sides():
                if not side.model.ready:
                    reason = side.model.load_error
                    note = f"(attempt {attempt}; next in {wait:.1f} s)"
                    side.model.load_error = f"{reason} {note}"
            errors_log.warning(
                "model not loaded after attempt %d; retrying in %.1f s", attempt, wait
            )
            await asyncio.sleep(wait)
            attempt += 1
            await asyncio.to_thread(load_models, self.model)
            delay = min(delay * 2, settings.load_retry_max_seconds)
        if self.model_not_ready() is None:
            from model_server.__main__ import publish_model_info

            for side in self.sides():
                side._bind_model()
            publish_model_info(self.model)
            errors_log.info("model loaded after %d attempts", attempt)

    async def feedback(self, model_name: str, request: Request) -> Response:
        """True labels or values for earlier predictions (see ``model_server.feedback``)."""
        try:
            self.check_model(model_name)
            document = await self.read_document(
                request.headers, await request.body(), "v1", inject_faults=False
            )
            schema = self.model.schema
            assert schema is not None
            experiment = self.experiment
            if isinstance(document, dict) and "experiment" in document:
                if experiment is None:
                    raise InvalidInput(
                        f"outcomes for experiment {document['experiment']!r}, but this server "
                        "runs no experiment"
                    )
                outcomes = experiment.outcomes(document, schema)
                return _json(
                    200,
                    {
                        "model_name": self.model.name,
                        "experiment": experiment.name,
                        "received": outcomes.received,
                        "variants": {
                            variant: {
                                "model_version": experiment.sides[variant].model.version,
                                **tally.summary(),
                            }
                            for variant, tally in outcomes.by_variant.items()
                        },
                    },
                    self.version_headers(),
                )
            side = self
            if experiment is not None and isinstance(document, dict):
                variant = experiment.variant_of_version(str(document.get("model_version")))
                side = experiment.sides[variant] if variant is not None else self
            received = decode_feedback(document, schema, side.model.version)
        except InvalidInput as error:
            return _json(400, {"error": str(error)}, self.version_headers())
        except Refused as error:
            return _json(error.status, {"error": str(error)}, self.version_headers())
        side.metrics.feedback(received.correct, received.incorrect, received.abs_errors)
        body: dict[str, Any] = {
            "model_name": self.model.name,
            "model_version": side.model.version,
            "received": received.received,
        }
        if received.abs_errors:
            body["mean_abs_error"] = sum(received.abs_errors) / len(received.abs_errors)
        else:
            body.update(correct=received.correct, incorrect=received.incorrect)
        return _json(200, body, side.version_headers())

    # -- health and metadata -------------------------------------------------------------

    def extensions(self) -> list[str]:
        """The V2 extensions this server really serves (named as Triton names them)."""
        served = ["binary_tensor_data"]
        if self.model.settings.enable_model_repository:
            served.append("model_repository")
        return served

    def server_metadata_body(self) -> dict[str, Any]:
        """The Open Inference Protocol server metadata: the same over REST and gRPC."""
        return {"name": SERVER_NAME, "version": _package_version(), "extensions": self.extensions()}

    async def server_metadata(self) -> Response:
        return _json(200, self.server_metadata_body(), self.version_headers())

    async def server_live(self) -> Response:
        return _json(200, {"live": True}, self.version_headers())

    def not_ready_reason(self) -> str | None:
        """Why readiness is 503: the model is not loaded here, or a sibling worker is gone and
        its replacement has not loaded the model yet. None when ready."""
        return self.model_not_ready() or self.missing_workers()

    @staticmethod
    def missing_workers() -> str | None:
        """With --workers N: the workers that died and are not replaced (and loaded) yet."""
        roster = workers.roster()
        missing = roster.not_ready() if roster is not None else []
        if not missing:
            return None
        return (
            f"worker(s) {', '.join(map(str, missing))} of this server are not serving: a "
            "replacement for a worker that died is starting"
        )

    async def server_ready(self) -> Response:
        reason = self.not_ready_reason()
        if reason is None:
            return _json(200, {"ready": True}, self.version_headers())
        return _json(503, {"ready": False, "error": reason}, self.version_headers())

    async def v2_model_ready(self, model_name: str) -> Response:
        return self._model_ready(model_name, None)

    async def v2_version_ready(self, model_name: str, version: str) -> Response:
        return self._model_ready(model_name, version)

    def _model_ready(self, model_name: str, version: str | None) -> Response:
        try:
            self.check_model(model_name, version)
            missing = self.missing_workers()
            if missing is not None:
                raise Refused(503, missing)
        except Refused as error:
            return _json(
                error.status,
                {"name": model_name, "ready": False, "error": str(error)},
                self.version_headers(),
            )
        return _json(200, {"name": model_name, "ready": True}, self.version_headers())

    async def v1_model_ready(self, model_name: str) -> Response:
        name, _, verb = model_name.rpartition(":")
        if name and verb in {"predict", "explain"}:
            return _json(
                405, {"error": f"use POST for :{verb}"}, {**self.version_headers(), "allow": "POST"}
            )
        try:
            self.check_model(model_name)
            missing = self.missing_workers()
            if missing is not None:
                raise Refused(503, missing)
        except Refused as error:
            return _json(error.status, {"error": str(error)}, self.version_headers())
        body = {"name": model_name, "ready": True, "model_version": self.model.version}
        return _json(200, body, self.version_headers())

    def model_metadata(self) -> dict[str, Any]:
        """The Open Inference Protocol model metadata: the same over REST and gRPC."""
        return {
            "name": self.model.name,
            "versions": self.versions(),
            "platform": PLATFORM,
            "inputs": self.model.get_input_types(),
            "outputs": self.model.get_output_types(),
        }

    async def v2_model_metadata(self, model_name: str) -> Response:
        return self._model_metadata(model_name, None)

    async def v2_version_metadata(self, model_name: str, version: str) -> Response:
        return self._model_metadata(model_name, version)

    def _model_metadata(self, model_name: str, version: str | None) -> Response:
        try:
            self.check_model(model_name, version)
        except Refused as error:
            return _json(error.status, {"error": str(error)}, self.version_headers())
        meta = self.model.metadata
        assert meta is not None
        body = {
            **self.model_metadata(),
            # REST only (gRPC's ModelMetadataResponse has no field for it): what the model is,
            # and the class order of predict_proba's columns.
            "parameters": {
                "task": meta.task,
                "features": [f.model_dump(mode="json", exclude_none=True) for f in meta.features],
                "classes": meta.target.classes,
                "created_at": meta.created_at.isoformat(),
                "sha256": meta.artifact.sha256,
                "engine": self.model.engine_name,
            },
        }
        return _json(200, body, self.version_headers())

    async def metrics_endpoint(self) -> Response:
        data, content_type = exposition()
        return Response(data, media_type=content_type)

    # -- model repository extension (off unless --enable-model-repository) ----------------

    def repository_index(self) -> list[dict[str, str]]:
        entry = {"name": self.model.name, "version": self.model.version}
        if self.model.ready:
            return [{**entry, "state": "READY", "reason": ""}]
        return [{**entry, "state": "UNAVAILABLE", "reason": self.model.load_error or ""}]

    def check_repository(self) -> None:
        """404 unless the model repository extension is on."""
        if not self.model.settings.enable_model_repository:
            raise Refused(
                404,
                "the model repository extension is off on this server (it serves one version "
                "per revision; --enable-model-repository turns index/load/unload on)",
            )

    def repository_action(self, model_name: str, action: Literal["load", "unload"]) -> str:
        """Load or unload the served model; raises Refused when the extension is off."""
        self.check_repository()
        if model_name != self.model.name:
            raise Refused(404, f"model {model_name!r} is not in this server's repository")
        if action == "unload":
            self.model.unload()
            return f"model {model_name!r} unloaded"
        if not self.model.load():
            raise Refused(503, f"model {model_name!r} failed to load: {self.model.load_error}")
        return f"model {model_name!r} loaded"

    async def repository_index_endpoint(self) -> Response:
        try:
            self.check_repository()
        except Refused as error:
            return _json(error.status, {"error": str(error)}, self.version_headers())
        return _json(200, self.repository_index(), self.version_headers())

    async def repository_load(self, model_name: str) -> Response:
        return self._repository(model_name, "load")

    async def repository_unload(self, model_name: str) -> Response:
        return self._repository(model_name, "unload")

    def _repository(self, model_name: str, action: Literal["load", "unload"]) -> Response:
        try:
            message = self.repository_action(model_name, action)
        except Refused as error:
            return _json(error.status, {"error": str(error)}, self.version_headers())
        return _json(200, {"name": model_name, "message": message}, self.version_headers())


def _too_large(size: int, limit: int, *, more: bool = False) -> str:
    amount = f"more than {limit} bytes" if more else f"{size} bytes"
    return (
        f"request body of {amount} is larger than the limit of {limit} "
        "(split the batch, or raise --max-request-bytes)"
    )


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
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


async def _bounded_body(scope: Any, receive: Any, limit: int) -> bytes | str | None:
    """The request body if it is at most ``limit`` bytes; else why not (a 413's message), or
    None when the client went away. A declared Content-Length over the limit is refused
    before any of the body is read; a streamed body is counted as it arrives and cut there."""
    declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _too_large(size, limit, more=True)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large_answer(handlers: Handlers, path: str, message: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of a 413 that closes the connection; counted for inference paths."""
    if path.endswith((":predict", "/infer")):
        handlers.metrics.request("v1" if path.startswith("/v1/") else "v2", 413, None)
    headers = {**handlers.version_headers(), "connection": "close", "content-type": JSON}
    return headers, orjson.dumps({"error": message})


class BodyLimitMiddleware:
    """Request bodies no larger than the handlers' ``body_limit``, whatever the client sends.

    A Content-Length over the limit is a 413 before any of the body is read; a body that
    streams (chunked, or lying about its length) is counted as it arrives and cut at the limit
    with a 413. Either way the connection is closed (``connection: close``), so the rest of the
    body is never read, and memory holds at most the limit per request.
    """

    def __init__(self, app: Any, handlers: Handlers) -> None:
        self.app = app
        self.handlers = handlers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        handlers = self.handlers
        body = await _bounded_body(scope, receive, handlers.body_limit)
        if body is None:
            return
        if isinstance(body, str):
            headers, content = _too_large_answer(handlers, scope.get("path", ""), body)
            await Response(content, status_code=413, headers=headers)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class InferenceRoutes:
    """The inference POSTs (V1 ``:predict``, V2 ``infer``, versioned or not), answered in front
    of FastAPI (its telemetry check, the middleware stack with KServe's timing middleware that
    routes every request a second time, the router, dependency solving) by the same
    ``Handlers.infer_http`` as their FastAPI routes, with the same guarantees: a request id
    (``x-request-id``), the body limit (413, connection closed), gzip for large answers the
    client accepts. Everything else goes on to the application. Measured on a 1-row request,
    that framework work cost more than validating and predicting.
    """

    PATH = re.compile(r"/v1/models/([^/]+):predict|/v2/models/([^/]+)/(?:versions/([^/]+)/)?infer")

    def __init__(self, app: Any, handlers: Handlers) -> None:
        self.app = app
        self.handlers = handlers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        match = (
            self.PATH.fullmatch(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        handlers = self.handlers
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        body = await _bounded_body(scope, receive, handlers.body_limit)
        if body is None:
            return
        if isinstance(body, str):
            status = 413
            response_headers, content = _too_large_answer(handlers, scope["path"], body)
        else:
            v1_name, v2_name, version = match.groups()
            status, response_headers, content = await handlers.infer_http(
                model_name=v1_name or v2_name,
                version=version,
                protocol="v1" if v1_name else "v2",
                headers=headers,
                body=body,
                request_id=request_id,
                log_line=f"POST {scope['path']}",
            )
            if len(content) >= COMPRESS_MIN_BYTES and "gzip" in headers.get("accept-encoding", ""):
                content = await asyncio.to_thread(gzip.compress, content, 6)
                response_headers["content-encoding"] = "gzip"
                response_headers["vary"] = "Accept-Encoding"
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers.items()]
        raw.append((b"content-length", b"%d" % len(content)))
        raw.append((b"x-request-id", request_id.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content})


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


def install(app: FastAPI, model: SklearnModel, *, access_log: bool = False) -> Handlers:
    """Put this project's routes in front of whatever ``app`` already has or gets later.

    Every V1 and V2 path is ours, so every answer has our error shape and version header:
    KServe's own routes behind them (explain, model repository) are shadowed, and FastAPI's
    404/405 come out as ``{"error": ...}`` too.
    """
    handlers = Handlers(model, access_log)
    router = APIRouter()
    routes: list[tuple[str, Any, str]] = [
        ("/metrics", handlers.metrics_endpoint, "GET"),
        ("/v2", handlers.server_metadata, "GET"),
        ("/v2/health/live", handlers.server_live, "GET"),
        ("/v2/health/ready", handlers.server_ready, "GET"),
        ("/v1/models/{model_name}:predict", handlers.v1_predict, "POST"),
        ("/v1/models/{model_name}:explain", handlers.v1_explain, "POST"),
        ("/v1/models/{model_name}", handlers.v1_model_ready, "GET"),
        ("/v1/models/{model_name}/feedback", handlers.feedback, "POST"),
        ("/v2/models/{model_name}/feedback", handlers.feedback, "POST"),
        ("/v2/models/{model_name}/infer", handlers.v2_infer, "POST"),
        ("/v2/models/{model_name}/ready", handlers.v2_model_ready, "GET"),
        ("/v2/models/{model_name}", handlers.v2_model_metadata, "GET"),
        ("/v2/models/{model_name}/versions/{version}/infer", handlers.v2_version_infer, "POST"),
        ("/v2/models/{model_name}/versions/{version}/ready", handlers.v2_version_ready, "GET"),
        ("/v2/models/{model_name}/versions/{version}", handlers.v2_version_metadata, "GET"),
        ("/v2/repository/index", handlers.repository_index_endpoint, "POST"),
        ("/v2/repository/models/{model_name}/load", handlers.repository_load, "POST"),
        ("/v2/repository/models/{model_name}/unload", handlers.repository_unload, "POST"),
    ]
    for path, endpoint, method in routes:
        router.add_api_route(path, endpoint, methods=[method])
    app.router.routes[0:0] = router.routes

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        message = {
            404: f"no such endpoint: {request.method} {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(error.status_code, str(error.detail))
        headers = {**handlers.version_headers(), **(error.headers or {})}
        return _json(error.status_code, {"error": message}, headers)

    app.add_exception_handler(HTTPException, http_error)
    app.router.on_startup.append(handlers.start_background)
    app.add_middleware(BodyLimitMiddleware, handlers=handlers)  # inside: its 413s get ids
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(GZipMiddleware, minimum_size=COMPRESS_MIN_BYTES, compresslevel=6)
    global _inference_routes  # noqa: PLW0603 (one app per process)
    _inference_routes = InferenceRoutes(app, handlers)
    http_guard.set_shed_answer(handlers.shed_answer)
    return handlers


_inference_routes: InferenceRoutes | None = None
APP_IMPORT_STRING = "model_server.app:application"
"""What uvicorn serves, in the main process and in every worker."""


async def application(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI application: inference POSTs answered by ``InferenceRoutes`` before anything
    else (FastAPI's per-request telemetry check, its middleware and router), the rest by
    KServe's FastAPI app with this project's routes in front (``install``)."""
    routes = _inference_routes
    if routes is None:  # not installed (a failed start): KServe's app as it is
        import kserve.model_server

        await kserve.model_server.app(scope, receive, send)
        return
    await routes(scope, receive, send)


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
