"""The service core: what every transport answers for the one model this server serves.

``ModelService`` is given decoded requests by the transports (``http_routes``,
``grpc_service``). It checks the model and version asked for, picks the version or the
experiment's side that answers, predicts, and counts: request and inference metrics, missing
values, drift input, provenance lines, exposures, feedback. It also says whether the server is
ready and why not, describes the model (Open Inference Protocol metadata), and keeps loading a
version that did not load at start. (The model repository extension is
``model_server.repository``.) It speaks in HTTP-equivalent statuses (``errors.Refused``, as
DESIGN.md's errors do) and names the ``x-model-version`` both transports send, but knows nothing
of HTTP or gRPC machinery (frameworks, bodies, encodings, ASGI, protobuf), nor of processes
beyond the worker roster.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from importlib import metadata as importlib_metadata
from typing import Any, Literal

import numpy as np
import orjson
from kserve.errors import InvalidInput

from model_server import worker_state
from model_server.drift import DriftMonitor
from model_server.errors import InjectedFault, Refused
from model_server.experiment import Assignment, Experiment, Headers
from model_server.feedback import decode_feedback
from model_server.loading import ModelVersion, keep_loading, not_ready
from model_server.metrics import ModelMetrics, set_experiment, set_model_info
from model_server.model import Answer, SklearnModel
from model_server.provenance import ProvenanceLog, open_prediction_log
from model_server.schema import Rows, inputs_digest
from prediction_log.writer import PredictionLogWriter

log = logging.getLogger("model_server.access")
errors_log = logging.getLogger("model_server")

SERVER_NAME = "model-server"
LOG_STOP_SECONDS = 20.0
"""The longest a stopping process spends writing its prediction log (after draining)."""
PLATFORM = "sklearn"


def _package_version() -> str:
    try:
        return importlib_metadata.version("model-serving")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover (run from a checkout)
        return "0+unknown"


def publish_model_info(model: ModelVersion) -> None:
    """Set ``model_server_model_info`` for the loaded version (nothing when not loaded); in
    experiment mode for both versions, and the experiment's treatment share."""
    for each in (model, model.treatment):
        if each is not None and each.ready and each.metadata is not None:
            set_model_info(
                each.name,
                each.version,
                each.settings.revision or "",
                each.metadata.provenance.sklearn,
                each.engine_name,
            )
    treatment, settings = model.treatment, model.settings
    if treatment is not None and model.ready and treatment.ready:
        assert settings.experiment is not None
        set_experiment(
            model.name,
            settings.experiment,
            model.version,
            treatment.version,
            settings.experiment_percent,
        )


class LogSlot:
    """The process's prediction log writer, shared by an experiment's sides; opened once the
    model's name is final (after its first load)."""

    writer: PredictionLogWriter | None = None
    opened: bool = False


class ModelService:
    """The served model's answers, counts and state, for every transport.

    In experiment mode this is the control's service, and ``experiment`` routes requests to it
    or to the treatment's (a ``ModelService`` of its own, with its own metrics, drift and
    provenance).
    """

    def __init__(
        self, model: SklearnModel, access_log: bool, log_slot: LogSlot | None = None
    ) -> None:
        self.model = model
        self.log_slot = log_slot if log_slot is not None else LogSlot()
        self.access_log = access_log
        settings = model.settings
        self.fault_ratio = settings.fault_error_ratio
        self.fault_delay = settings.fault_latency_ms / 1000.0
        self._random = random.Random()  # noqa: S311 (fault injection and jitter, not security)
        self.provenance: ProvenanceLog | None = None
        self.drift: DriftMonitor | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._started = False
        self.experiment: Experiment[ModelService] | None = None
        """Experiment mode, on the control's service (this one): routes to it or the
        treatment's."""
        self.part_of: Experiment[ModelService] | None = None
        """The experiment this service is a side of (both sides), or None."""
        if model.treatment is not None:
            treatment = ModelService(model.treatment, access_log, self.log_slot)
            self.experiment = self.part_of = treatment.part_of = Experiment(
                settings, self, treatment
            )
        self._bind_model()

    def _bind_model(self) -> None:
        """Drift, provenance and metrics for the loaded version (again after a late load)."""
        model, settings = self.model, self.model.settings
        self.__dict__.pop("metrics", None)  # rebound on first use, with the loaded version
        if settings.drift and model.metadata is not None:
            self.drift = DriftMonitor(
                model.metadata,
                window_rows=settings.drift_window_rows,
                window_seconds=settings.drift_window_seconds,
                min_rows=settings.drift_min_rows,
            )
        slot = self.log_slot
        if not slot.opened and model.metadata is not None:
            slot.writer, slot.opened = open_prediction_log(settings, model.name), True
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
        if schema is None:
            return ModelMetrics(self.model.name, self.model.version, None)
        return ModelMetrics(self.model.name, self.model.version, schema.classes, schema.names)

    def version_headers(self) -> dict[str, str]:
        """The answering version, as every response carries it (a header, trailing metadata)."""
        return {"x-model-version": self.model.version}

    def sides(self) -> list[ModelService]:
        """This service, and the treatment's in experiment mode."""
        if self.experiment is None:
            return [self]
        return list(self.experiment.sides.values())

    def versions(self) -> list[str]:
        """The versions served here: one, or the control's and the treatment's."""
        return [side.model.version for side in self.sides()]

    def feature_count(self) -> int:
        """How many features the loaded version takes (0 before it loads)."""
        metadata = self.model.metadata
        return len(metadata.features) if metadata is not None else 0

    # -- readiness -----------------------------------------------------------------------

    def model_not_ready(self) -> str | None:
        """Why the served model (both versions in experiment mode) cannot answer, or None."""
        return not_ready(self.model)

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

    def not_ready_reason(self) -> str | None:
        """Why readiness is 503: the model is not loaded here, or a sibling worker is gone and
        its replacement has not loaded the model yet. None when ready."""
        return self.model_not_ready() or self.missing_workers()

    @staticmethod
    def missing_workers() -> str | None:
        """With --workers N: the workers that died and are not replaced (and loaded) yet."""
        roster = worker_state.roster()
        missing = roster.not_ready() if roster is not None else []
        if not missing:
            return None
        return (
            f"worker(s) {', '.join(map(str, missing))} of this server are not serving: a "
            "replacement for a worker that died is starting"
        )

    # -- inference -----------------------------------------------------------------------

    async def inject_faults(self) -> None:
        """``--fault-latency-ms`` and ``--fault-error-ratio`` (rehearsals only): wait, then
        perhaps fail with ``InjectedFault``."""
        if self.fault_delay:
            await asyncio.sleep(self.fault_delay)
        if self.fault_ratio and self._random.random() < self.fault_ratio:
            raise InjectedFault

    def route(
        self, headers: Headers, document: Any, version: str | None
    ) -> Assignment[ModelService] | None:
        """In experiment mode, the side that answers this request (None: no experiment)."""
        if self.experiment is None:
            return None
        return self.experiment.route(headers, document, version)

    def answering(
        self, assignment: Assignment[ModelService] | None, headers: dict[str, str]
    ) -> ModelService:
        """The service that answers (this, or the assigned side's), and its version and
        variant put in the response ``headers``."""
        if assignment is None or self.experiment is None:
            return self
        headers.update(assignment.side.version_headers())
        headers.update(self.experiment.response_headers(assignment))
        return assignment.side

    def predict(self, document: Any, protocol: Literal["v1", "v2"]) -> Answer:
        """Answer one request and record its inference metrics, missing values and drift
        input."""
        answer = self.model.answer(document, protocol)
        self.metrics.predicted(answer.labels, answer.inference_seconds)
        if answer.decoded.missing:
            self.metrics.missing(answer.decoded.missing)
        if self.drift is not None:
            self.drift.observe(answer.rows, answer.labels)
        return answer

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
        assignment: Assignment[ModelService] | None = None,
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
        writer = self.log_slot.writer
        if writer is not None:
            self._record(writer, request_id, protocol, status, elapsed, answer, error, assignment)
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

    def refused_early(self, request_id: str, protocol: str, status: int) -> None:
        """Record an inference request the HTTP guard turned away before it reached the model
        (a shed 503, a 413): it is in the prediction log like any refused request."""
        writer = self.log_slot.writer
        if writer is not None:
            self._record(writer, request_id, protocol, status, 0.0, None, None, None)

    def _record(  # noqa: PLR0917 (one request's facts, as finish has them)
        self,
        writer: PredictionLogWriter,
        request_id: str,
        protocol: str,
        status: int,
        elapsed: float,
        answer: Answer | None,
        error: Any,
        assignment: Assignment[ModelService] | None,
    ) -> None:
        """The request's prediction log record (buffered: the writer does no I/O here)."""
        rows = answer.rows if answer is not None else None
        payloads = self.model.settings.prediction_log_payloads
        experiment = self.part_of if assignment is not None else None
        writer.prediction(
            request_id=request_id,
            time_ns=time.time_ns() - int(elapsed * 1e9),
            model_version=self.model.version,
            revision=self.model.settings.revision or None,
            protocol=protocol,
            status=status,
            latency_ms=elapsed * 1000,
            rows=len(rows) if rows is not None else None,
            experiment=experiment.name if experiment is not None else None,
            variant=assignment.variant if assignment is not None else None,
            user_hash=assignment.user_hash if assignment is not None else None,
            inputs_sha256=inputs_digest(rows) if rows is not None else None,
            # Encoded to JSON by the writer's thread, off the request path.
            inputs=functools.partial(_rows_payload, rows)
            if payloads and rows is not None
            else None,
            outputs=(
                None
                if not payloads
                else functools.partial(getattr, answer, "json_body")
                if answer is not None
                else error
            ),
        )

    def _write_provenance(
        self,
        *,
        request_id: str,
        protocol: str,
        status: int,
        elapsed: float,
        payload: Any,
        rows: Rows | None,
        extra: dict[str, Any] | None,
    ) -> None:
        assert self.provenance is not None
        inputs = outputs = None
        if self.provenance.payloads and rows is not None:
            inputs = _rows_payload(rows)
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

    # -- feedback and outcomes -------------------------------------------------------------

    def _record_outcomes(self, report_id: str, records: list[dict[str, Any]]) -> None:
        """An accepted report's rows in the prediction log (buffered)."""
        writer = self.log_slot.writer
        if writer is None or not records:
            return
        for record in records:
            record["report_id"] = report_id
            for key in ("prediction", "target"):
                if key in record:
                    record[key] = orjson.dumps(record[key]).decode()
        writer.outcomes(records, time_ns=time.time_ns())

    def feedback(self, document: Any, report_id: str = "") -> tuple[dict[str, Any], dict[str, str]]:
        """Count a feedback report (true labels or values, ``model_server.feedback``) or an
        experiment's outcome report, and record its rows in the prediction log (``report_id``:
        the report's own request id); the response body and the answering version's headers.
        Raises ``InvalidInput`` for a report that cannot be counted (nothing is counted)."""
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
            self._record_outcomes(
                report_id,
                [
                    {
                        **record,
                        "model_version": experiment.sides[variant].model.version,
                        "experiment": experiment.name,
                        "variant": variant,
                    }
                    for variant, tally in outcomes.by_variant.items()
                    for record in tally.records
                ],
            )
            return {
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
            }, self.version_headers()
        side = self
        if experiment is not None and isinstance(document, dict):
            variant = experiment.variant_of_version(str(document.get("model_version")))
            side = experiment.sides[variant] if variant is not None else self
        received = decode_feedback(document, schema, side.model.version)
        side.metrics.feedback(received.correct, received.incorrect, received.abs_errors)
        self._record_outcomes(
            report_id,
            [
                {
                    "request_id": row.request_id,
                    "model_version": side.model.version,
                    "outcome": "label",
                    "prediction": row.prediction,
                    "target": row.target,
                    "correct": row.correct,
                    "abs_error": row.abs_error,
                }
                for row in received.rows
            ],
        )
        body: dict[str, Any] = {
            "model_name": self.model.name,
            "model_version": side.model.version,
            "received": received.received,
        }
        if received.abs_errors:
            body["mean_abs_error"] = sum(received.abs_errors) / len(received.abs_errors)
        else:
            body.update(correct=received.correct, incorrect=received.incorrect)
        return body, side.version_headers()

    def close(self) -> int:
        """A graceful stop: write every buffered prediction log record (retrying a failing
        sink for a while, at most ``LOG_STOP_SECONDS``). Returns the records lost."""
        writer = self.log_slot.writer
        return writer.close(LOG_STOP_SECONDS / 2) if writer is not None else 0

    # -- metadata ------------------------------------------------------------------------

    def extensions(self) -> list[str]:
        """The V2 extensions this server really serves (named as Triton names them)."""
        served = ["binary_tensor_data"]
        if self.model.settings.enable_model_repository:
            served.append("model_repository")
        return served

    def server_metadata_body(self) -> dict[str, Any]:
        """The Open Inference Protocol server metadata: the same over REST and gRPC."""
        return {"name": SERVER_NAME, "version": _package_version(), "extensions": self.extensions()}

    def model_metadata(self) -> dict[str, Any]:
        """The Open Inference Protocol model metadata: the same over REST and gRPC."""
        return {
            "name": self.model.name,
            "versions": self.versions(),
            "platform": PLATFORM,
            "inputs": self.model.get_input_types(),
            "outputs": self.model.get_output_types(),
        }

    # -- background work -----------------------------------------------------------------

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

    async def _load_then_watch(self) -> None:
        if self.model_not_ready() is not None and not self.model.unloaded:
            await self.keep_loading()
        roster = worker_state.roster()
        if roster is not None and self.model_not_ready() is None:
            roster.mark_ready(os.getpid())
        interval = self.model.settings.drift_interval_seconds
        for side in self.sides()[1:]:  # the treatment's drift beside this one
            if side.drift is not None:
                self._spawn(side.drift.run(interval, side.metrics.drift))
        if self.drift is not None:
            await self.drift.run(interval, self.metrics.drift)

    async def keep_loading(self) -> None:
        """Retry loading the model until it loads (``loading.keep_loading``: backoff, and
        readiness says why it is not ready and when the next attempt is); then bind metrics,
        drift and provenance to the loaded versions."""
        attempts = await keep_loading(self.model, self._random.random)
        if self.model_not_ready() is None:
            for side in self.sides():
                side._bind_model()
            publish_model_info(self.model)
            errors_log.info("model loaded after %d attempts", attempts)


def _rows_payload(rows: Rows) -> Any:
    """Rows as the prediction log's ``inputs``: lists in feature order, or objects."""
    return rows.tolist() if isinstance(rows, np.ndarray) else rows.records()
