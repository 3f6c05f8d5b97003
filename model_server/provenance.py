"""Provenance lines: a sampled JSON line per inference request, on stdout.

Each line ties a prediction to the exact model and data that made it: request id, model name and
version, Knative revision, the artifact's sha256, the training data's sha256, the git sha and
image digest recorded at training, status and latency. Inputs and outputs are added only when
``--prediction-log-payloads`` is set. One ``os.write`` per line keeps lines whole when several
workers share stdout.

Part of the service core; it is given each request's facts and knows nothing of transports.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import orjson

from model_registry.metadata import ModelMetadata


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
