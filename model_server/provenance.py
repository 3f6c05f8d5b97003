"""Provenance lines (a sampled JSON line per inference request, on stdout) and the durable
prediction log's writer for this server (``open_prediction_log``).

Each line ties a prediction to the exact model and data that made it: request id, model name and
version, Knative revision, the artifact's sha256, the training data's sha256, the git sha and
image digest recorded at training, status and latency. Inputs and outputs are added only when
``--prediction-log-payloads`` is set. One ``os.write`` per line keeps lines whole when several
workers share stdout.

Part of the service core; it is given each request's facts and knows nothing of transports.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

import orjson

from model_registry.metadata import ModelMetadata
from model_server.metrics import PredictionLogMetrics
from model_server.settings import ModelServerSettings
from prediction_log.schema import default_log_uri
from prediction_log.writer import PredictionLogWriter

log = logging.getLogger("model_server")


def prediction_log_uri(settings: ModelServerSettings) -> str | None:
    """Where this server's prediction log goes: --prediction-log-uri, else beside the registry;
    None when it is off or there is nowhere to put it."""
    if not settings.prediction_log:
        return None
    if settings.prediction_log_uri:
        return settings.prediction_log_uri
    if settings.registry_uri:
        return default_log_uri(settings.registry_uri)
    return None


def open_prediction_log(
    settings: ModelServerSettings, model_name: str
) -> PredictionLogWriter | None:
    """This process's prediction log writer for ``model_name`` (None, said once, when off)."""
    uri = prediction_log_uri(settings)
    if uri is None:
        if settings.prediction_log:
            log.warning(
                "prediction log OFF: no --prediction-log-uri, and %s; predictions are not "
                "recorded (model-trace finds nothing)",
                "the registry is a bucket's root, with nothing beside it"
                if settings.registry_uri
                else "no --registry-uri to put it beside",
            )
        return None
    log.info(
        "prediction log: %s (written every %d records or %g s; payloads %s)",
        uri,
        settings.prediction_log_flush_rows,
        settings.prediction_log_flush_seconds,
        "ON" if settings.prediction_log_payloads else "off",
    )
    return PredictionLogWriter(
        uri,
        model_name,
        flush_rows=settings.prediction_log_flush_rows,
        flush_seconds=settings.prediction_log_flush_seconds,
        max_buffered=settings.prediction_log_max_buffered,
        events=PredictionLogMetrics(model_name),
    )


class ProvenanceLog:
    """Writes sampled provenance lines for one served version."""

    def __init__(
        self,
        metadata: ModelMetadata,
        *,
        model_name: str,
        revision: str,
        sample_rate: float,
        payloads: bool,
        fd: int = 1,
    ) -> None:
        self.sample_rate = sample_rate
        self.payloads = payloads
        self.fd = fd
        self._random = random.Random()  # noqa: S311 (sampling, not security)
        provenance = metadata.provenance
        self.fixed = {
            "type": "prediction",
            "model_name": model_name,
            "model_version": metadata.version,
            "revision": revision,
            "artifact_sha256": metadata.artifact.sha256,
            "data_sha256": metadata.training.data_sha256,
            "data_uri": metadata.training.data_uri,
            "git_sha": provenance.git_sha,
            "image_digest": provenance.image_digest,
        }

    def sampled(self) -> bool:
        """Whether this request writes a line."""
        return self.sample_rate >= 1.0 or (
            self.sample_rate > 0.0 and self._random.random() < self.sample_rate
        )

    def write(
        self,
        *,
        request_id: str,
        protocol: str,
        status: int,
        latency_seconds: float,
        rows: int | None,
        inputs: Any = None,
        outputs: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "request_id": request_id,
            **self.fixed,
            "protocol": protocol,
            "status": status,
            "latency_ms": round(latency_seconds * 1000, 3),
            "rows": rows,
        }
        if extra:  # experiment mode: experiment, variant, hashed user key
            line.update(extra)
        if self.payloads:
            line["inputs"] = inputs
            line["outputs"] = outputs
        os.write(self.fd, orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
