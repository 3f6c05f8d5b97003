"""``SklearnModel``: the ``kserve.Model`` that serves one registered scikit-learn version."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import time
from typing import Any, Literal

import numpy as np
import pandas as pd
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse

from model_registry import Registry, RegistryError
from model_registry.artifacts import load_model
from model_registry.metadata import ModelMetadata
from model_registry.registry import read_version_dir, read_version_dir_onnx
from model_server import codec
from model_server.engine import EngineRefused, OnnxEngine, onnx_engine, pin_threads
from model_server.settings import ModelServerSettings
from model_server.tensors import read_binary_request

log = logging.getLogger(__name__)


class Answer:
    """One answered request: what each transport encodes, and what metrics and drift need."""

    def __init__(  # noqa: PLR0917 (one answer's parts)
        self,
        model: SklearnModel,
        protocol: Literal["v1", "v2"],
        decoded: codec.Decoded,
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
    def rows(self) -> codec.Rows:
        return self.decoded.frame

    @functools.cached_property
    def outputs(self) -> list[codec.OutputTensor]:
        """The V2 output tensors (all, or the ones the request named)."""
        return codec.v2_outputs(self.labels, self.probabilities, self.decoded)

    @functools.cached_property
    def body(self) -> dict[str, Any]:
        """The JSON response (for V2 without the outputs the request wants in binary)."""
        model, schema = self.model, self.model.schema
        assert schema is not None
        if self.protocol == "v1":
            return codec.encode_v1(
                self.labels, self.probabilities, schema, model.name, model.version
            )
        return codec.encode_v2(
            outputs=self.outputs,
            decoded=self.decoded,
            model_name=model.name,
            model_version=model.version,
        )


class SklearnModel(Model):  # type: ignore[misc]
    """Loads a verified, type-checked version and predicts on validated rows.

    ``load`` never raises: a failed load leaves ``ready`` False and ``load_error`` set, so the
    server answers 503 on readiness with the reason instead of serving garbage.
    """

    def __init__(self, settings: ModelServerSettings, *, role: str = "served") -> None:
        super().__init__(settings.model_name or "model")
        self.settings = settings
        self.role = role
        """``served`` (the one version, or an experiment's control) or ``treatment``."""
        self.treatment: SklearnModel | None = None
        """Experiment mode: the treatment version, served beside this one (the control)."""
        self.metadata: ModelMetadata | None = None
        self.schema: codec.FeatureSchema | None = None
        self.pipeline: Any = None
        self.load_error: str | None = "not loaded yet"
        self.version = "unknown"
        self.unloaded = False
        self.engine: OnnxEngine | None = None
        self.onnx_blob: bytes | None = None
        """The checked model.onnx ONNX Runtime serves; None when the pipeline serves."""
        self.first_attempt: concurrent.futures.Future[bool] | None = None
        """The first load, when main() stopped waiting for it (``--load-wait-seconds``)."""

    @property
    def engine_name(self) -> str:
        """What computes predictions: ``onnx`` (ONNX Runtime) or ``sklearn`` (the pipeline)."""
        return "onnx" if self.onnx_blob is not None else "sklearn"

    # -- loading -------------------------------------------------------------------------

    def _read(self) -> tuple[ModelMetadata, bytes]:
        settings = self.settings
        if settings.model_dir is not None:
            return read_version_dir(settings.model_dir)
        assert settings.registry_uri is not None
        assert settings.model_name is not None
        registry = Registry(settings.registry_uri)
        return registry.read_artifact(settings.model_name, settings.model_version)

    def load(self) -> bool:
        """Load and verify the version; on failure stay not ready and log why."""
        source = self.settings.model_dir or (
            f"{self.settings.registry_uri} {self.settings.model_name} {self.settings.model_version}"
        )
        started = time.perf_counter()
        try:
            metadata, blob = self._read()
            pipeline = load_model(
                blob, metadata.artifact.format, allow_pickle=self.settings.allow_pickle
            )
            expected = getattr(pipeline, "feature_names_in_", None)
            if expected is not None and list(expected) != metadata.feature_names:
                raise RegistryError(
                    "the model's feature names do not match metadata.json: "
                    f"{list(expected)[:5]}... vs {metadata.feature_names[:5]}..."
                )
            engine, engine_note = self._engine(metadata, pipeline)
        except Exception as error:  # any failure: not ready, retried, logged
            self.ready = False
            self.load_error = f"cannot load model from {source}: {error}"
            known = isinstance(error, (RegistryError, OSError))
            log.error("%s", self.load_error, exc_info=None if known else error)
            return False
        if self.settings.model_name and self.settings.model_name != metadata.model_name:
            log.info("serving %s %s as %r", metadata.model_name, metadata.version, self.name)
        else:
            self.name: str = metadata.model_name
        self.metadata = metadata
        self.version = metadata.version
        self.pipeline = pipeline
        self.schema = codec.FeatureSchema.from_metadata(metadata, self.settings.max_batch_rows)
        self.engine, self.onnx_blob = engine if engine is not None else (None, None)
        self.load_error = None
        self.unloaded = False
        self.ready = True
        log.info(
            "loaded %s %s from %s in %.2fs (%d features, %s, %s)",
            metadata.model_name,
            metadata.version,
            source,
            time.perf_counter() - started,
            len(metadata.features),
            metadata.task,
            engine_note,
        )
        return True

    def _read_onnx(self, metadata: ModelMetadata) -> bytes | None:
        settings = self.settings
        if settings.model_dir is not None:
            return read_version_dir_onnx(settings.model_dir, metadata)
        assert settings.registry_uri is not None
        return Registry(settings.registry_uri).read_onnx(metadata)

    def _engine(
        self, metadata: ModelMetadata, pipeline: Any
    ) -> tuple[tuple[OnnxEngine, bytes] | None, str]:
        """ONNX Runtime or the pipeline (``model_server.engine``), and a note for the log. A
        ``model.onnx`` whose sha256 does not match fails the load whatever the engine."""
        choice = self.settings.engine
        if choice != "sklearn":
            try:
                blob = self._read_onnx(metadata)
                if blob is None:
                    onnx = metadata.onnx
                    raise EngineRefused(
                        f"the version has no model.onnx: {onnx.reason}"
                        if onnx is not None and onnx.reason
                        else "the version has no model.onnx (registered before ONNX export)"
                    )
                engine = onnx_engine(blob, metadata, pipeline, self.settings.engine_threads)
            except EngineRefused as error:
                if choice == "onnx":
                    raise RegistryError(f"--engine onnx: {error}") from error
                log.warning("serving with the pipeline, not ONNX Runtime: %s", error)
            else:
                return (engine, blob), f"ONNX Runtime, {self.settings.engine_threads} thread(s)"
        pin_threads(pipeline)
        return None, "pipeline"

    # -- inference -----------------------------------------------------------------------

    def infer(
        self, rows: codec.Rows, probabilities: bool
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        """Labels (or values) and, when asked, class probabilities for validated rows."""
        try:
            if self.engine is not None:
                return self.engine.predict(rows, probabilities)
            if isinstance(rows, np.ndarray):
                assert self.schema is not None
                frame = pd.DataFrame(rows, columns=list(self.schema.names), copy=False)
            else:
                frame = rows.frame()
            labels = self.pipeline.predict(frame)
            proba = self.pipeline.predict_proba(frame) if probabilities else None
        except (ValueError, TypeError) as error:
            # Validation runs first, so this is rare; it is still the client's input.
            raise InvalidInput(f"the model cannot use this input: {error}") from error
        return np.asarray(labels), proba

    def answer(self, document: Any, protocol: Literal["v1", "v2"]) -> Answer:
        """Decode and validate a V1 or V2 request document and predict."""
        schema = self.schema
        assert schema is not None
        if protocol == "v1":
            decoded = codec.decode_v1(document, schema)
        else:
            decoded = codec.decode_v2(document, schema)
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
                codec.encode_v2(
                    outputs=answer.outputs,
                    decoded=json_only,
                    model_name=self.name,
                    model_version=self.version,
                )
            )
        return self.answer(payload, "v1").body

    def unload(self) -> None:
        """Stop serving (the model repository extension's unload, when it is on)."""
        self.ready = False
        self.unloaded = True
        self.load_error = "unloaded through the model repository API (POST .../load to reload)"
        log.warning("%s %s unloaded on request", self.name, self.version)

    # -- metadata ------------------------------------------------------------------------

    def get_input_types(self) -> list[dict[str, Any]]:
        """One V2 input per feature: its name, datatype (FP64 or BYTES) and shape [-1]."""
        if self.metadata is None:
            return []
        return [
            {
                "name": f.name,
                "datatype": "BYTES" if f.kind == "categorical" else "FP64",
                "shape": [-1],
            }
            for f in self.metadata.features
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        """``predict`` (labels or values) and, for classifiers, ``predict_proba``."""
        if self.metadata is None:
            return []
        target = self.metadata.target
        classes = target.classes
        if classes is None:
            return [{"name": codec.PREDICT, "datatype": "FP64", "shape": [-1]}]
        label_type = "BYTES" if any(isinstance(c, str) for c in classes) else "INT64"
        return [
            {"name": codec.PREDICT, "datatype": label_type, "shape": [-1]},
            {"name": codec.PREDICT_PROBA, "datatype": "FP64", "shape": [-1, len(classes)]},
        ]

    # -- worker processes ----------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """For a spawned worker: without the main process's load in progress (the worker
        loads on its own if this copy is not loaded) and without the ONNX Runtime session,
        which cannot be pickled (the worker opens its own on the same checked bytes)."""
        return {**self.__dict__, "first_attempt": None, "engine": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restored in a KServe worker process: the engine as in the main process (thread
        limits are per process), and our routes in front of KServe's there too."""
        self.__dict__.update(state)
        if self.ready and self.metadata is not None:
            if self.onnx_blob is not None:
                self.engine = OnnxEngine.open(
                    self.onnx_blob, self.metadata, self.pipeline, self.settings.engine_threads
                )
            else:
                pin_threads(self.pipeline)
        if self.role == "treatment":
            return  # the control installs the routes (it holds this one)
        from model_server import app

        app.install_in_worker(self)


def load_models(model: SklearnModel) -> bool:
    """Load ``model`` and, in experiment mode, its treatment (each only while not ready);
    True when everything it serves is ready. A treatment that cannot be compared with the
    control (same version, other features) stays not ready, with the reason."""
    if not model.ready:
        model.load()
    treatment = model.treatment
    if treatment is None:
        return bool(model.ready)
    if not treatment.ready:
        treatment.load()
    if model.ready and treatment.ready:
        from model_server.experiment import mismatch

        treatment.name = model.name
        problem = mismatch(model, treatment)
        if problem is not None:
            treatment.ready = False
            treatment.load_error = problem
            log.error("experiment %s: %s", model.settings.experiment, problem)
    return bool(model.ready and treatment.ready)
