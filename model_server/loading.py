"""Loading a registered version: read and verify it, choose its engine, infer on validated rows,
and keep trying until it loads.

``ModelVersion`` is the ``kserve.Model`` of one version, from a directory (``/mnt/models`` when
KServe's storage initializer ran) or a registry URI: the sha256 of every artifact checked, skops
by default, the feature names matched against ``metadata.json``, ONNX Runtime or the pipeline
(``model_server.engine``). ``load`` never raises: a failed load leaves the version not ready
with the reason. ``load_models``, ``first_load`` and ``keep_loading`` load a version and, in
experiment mode, its treatment, at start and then with capped exponential backoff. This module
knows nothing of request formats, transports, metrics or the service answering requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import numpy as np
import pandas as pd
from kserve import Model
from kserve.errors import InvalidInput

from model_registry import Registry, RegistryError
from model_registry.artifacts import load_model
from model_registry.metadata import ModelMetadata
from model_registry.registry import read_version_dir, read_version_dir_onnx
from model_registry.values import (
    MISSING_CATEGORY,
    non_finite,
    numeric_limits,
    pipeline_outputs,
)
from model_server.engine import EngineRefused, OnnxEngine, onnx_engine, pin_threads
from model_server.errors import BadOutput
from model_server.schema import PREDICT, PREDICT_PROBA, FeatureSchema, Rows
from model_server.settings import ModelServerSettings

log = logging.getLogger(__name__)
errors_log = logging.getLogger("model_server")


class ModelVersion(Model):  # type: ignore[misc]
    """Loads a verified, type-checked version and predicts on validated rows.

    ``load`` never raises: a failed load leaves ``ready`` False and ``load_error`` set, so the
    server answers 503 on readiness with the reason instead of serving garbage.
    """

    def __init__(self, settings: ModelServerSettings) -> None:
        super().__init__(settings.model_name or "model")
        self.settings = settings
        self.treatment: Self | None = None
        """Experiment mode: the treatment version, served beside this one (the control)."""
        self.metadata: ModelMetadata | None = None
        self.schema: FeatureSchema | None = None
        self.pipeline: Any = None
        self.classifier = False
        """A classifier with probabilities (its labels come from them), not a regressor."""
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
        for feature in metadata.features:
            if MISSING_CATEGORY in (feature.categories or []):
                log.warning(
                    'feature %r of %s %s was trained with "" as a category; "" in a request '
                    "is a missing value now (retrain to make it one in training too)",
                    feature.name,
                    metadata.model_name,
                    metadata.version,
                )
        if self.settings.model_name and self.settings.model_name != metadata.model_name:
            log.info("serving %s %s as %r", metadata.model_name, metadata.version, self.name)
        else:
            self.name: str = metadata.model_name
        self.metadata = metadata
        self.version = metadata.version
        self.pipeline = pipeline
        self.classifier = metadata.target.classes is not None and hasattr(pipeline, "predict_proba")
        numeric = [f.name for f in metadata.features if f.kind == "numeric"]
        self.schema = FeatureSchema.from_metadata(
            metadata, self.settings.max_batch_rows, numeric_limits(pipeline, numeric)
        )
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

    def unload(self) -> None:
        """Stop serving (the model repository extension's unload, when it is on)."""
        self.ready = False
        self.unloaded = True
        self.load_error = "unloaded through the model repository API (POST .../load to reload)"
        log.warning("%s %s unloaded on request", self.name, self.version)

    # -- inference -----------------------------------------------------------------------

    def infer(
        self, rows: Rows, probabilities: bool
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        """Labels (or values) and, when asked, class probabilities for validated rows.

        A classifier's probabilities are computed whether asked or not, and every output is
        checked before it is answered: a NaN or infinity (from inputs the codec found finite
        and in range) raises ``BadOutput``, a 500, never a label made from it."""
        assert self.schema is not None
        assert self.metadata is not None
        classifier = self.classifier
        try:
            if self.engine is not None:
                labels, proba = self.engine.predict(rows)
            else:
                if isinstance(rows, np.ndarray):
                    frame = pd.DataFrame(rows, columns=list(self.schema.names), copy=False)
                else:
                    frame = rows.frame()
                labels, proba = pipeline_outputs(self.pipeline, frame, classifier)
        except (ValueError, TypeError) as error:
            # Validation runs first, so this is rare; it is still the client's input.
            raise InvalidInput(f"the model cannot use this input: {error}") from error
        broken = non_finite(labels, proba, classifier)
        if broken:
            raise BadOutput(
                f"{self.metadata.model_name} {self.version} ({self.engine_name} engine) computed "
                f"{broken} NaN or infinite {'probabilities' if classifier else 'values'} for "
                f"{len(labels)} rows"
            )
        return np.asarray(labels), proba if probabilities else None

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
            return [{"name": PREDICT, "datatype": "FP64", "shape": [-1]}]
        label_type = "BYTES" if any(isinstance(c, str) for c in classes) else "INT64"
        return [
            {"name": PREDICT, "datatype": label_type, "shape": [-1]},
            {"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, len(classes)]},
        ]

    # -- worker processes ----------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """For a spawned worker: without the main process's load in progress (the worker
        loads on its own if this copy is not loaded) and without the ONNX Runtime session,
        which cannot be pickled (the worker opens its own on the same checked bytes)."""
        return {**self.__dict__, "first_attempt": None, "engine": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restored in a KServe worker process: the engine as in the main process (thread
        limits are per process). The worker's routes are the process layer's business
        (``model_server.server.WorkerProcess``)."""
        self.__dict__.update(state)
        if self.ready and self.metadata is not None:
            if self.onnx_blob is not None:
                self.engine = OnnxEngine.open(
                    self.onnx_blob, self.metadata, self.pipeline, self.settings.engine_threads
                )
            else:
                pin_threads(self.pipeline)


def treatment_settings(settings: ModelServerSettings) -> ModelServerSettings:
    """The settings that load the treatment: the control's, with its version or directory."""
    treatment = settings.experiment_treatment
    assert treatment is not None
    if settings.registry_uri is not None:
        return settings.model_copy(update={"model_version": treatment})
    return settings.model_copy(update={"model_dir": treatment})


def mismatch(control: ModelVersion, treatment: ModelVersion) -> str | None:
    """Why the two loaded versions cannot be compared on the same requests, or None."""
    if control.version == treatment.version:
        return f"the treatment is the control's version ({control.version}): name another one"
    if control.metadata is None or treatment.metadata is None:
        return None
    ours, theirs = control.metadata.feature_names, treatment.metadata.feature_names
    if ours != theirs:
        return (
            f"the treatment ({treatment.version}) takes other features than the control "
            f"({control.version}): {theirs[:5]}... vs {ours[:5]}...; clients send one request "
            "shape to both"
        )
    if control.metadata.task != treatment.metadata.task:
        return (
            f"the treatment is a {treatment.metadata.task}, the control a {control.metadata.task}"
        )
    return None


def served(model: ModelVersion) -> list[ModelVersion]:
    """The versions ``model`` serves: itself, and its treatment in experiment mode."""
    return [model] if model.treatment is None else [model, model.treatment]


def not_ready(model: ModelVersion) -> str | None:
    """Why ``model`` (both versions in experiment mode) cannot answer, or None."""
    if not model.ready:
        return model.load_error or "not loaded"
    treatment = model.treatment
    if treatment is not None and not treatment.ready:
        return f"the experiment's treatment is not ready: {treatment.load_error}"
    return None


def load_models(model: ModelVersion) -> bool:
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
        treatment.name = model.name
        problem = mismatch(model, treatment)
        if problem is not None:
            treatment.ready = False
            treatment.load_error = problem
            log.error("experiment %s: %s", model.settings.experiment, problem)
    return bool(model.ready and treatment.ready)


def first_load(model: ModelVersion, wait_seconds: float) -> None:
    """Start loading ``model`` (and its treatment) in a thread, waiting at most
    ``wait_seconds``: past that the server starts not ready, and the load goes on
    (``first_attempt``; ``keep_loading`` waits for it before retrying)."""
    loader = ThreadPoolExecutor(1, thread_name_prefix="model-load")
    first = loader.submit(load_models, model)
    loader.shutdown(wait=False)  # its thread ends with this one load
    try:
        first.result(timeout=wait_seconds)
    except concurrent.futures.TimeoutError:
        errors_log.warning(
            "the model is still loading after %.0f s (slow storage?): serving, not ready, "
            "until it loads",
            wait_seconds,
        )
        for each in served(model):
            if not each.ready:
                each.load_error = "still loading (slow storage?)"
        model.first_attempt = first


async def keep_loading(model: ModelVersion, jitter: Callable[[], float]) -> int:
    """Retry loading ``model`` until it loads (or is unloaded): storage that is down or slow
    at start must not need a restart. Capped exponential backoff, ``jitter()`` in [0, 1)
    spreading each wait over its upper half; each version not ready says why and when the
    next attempt is. Returns the number of attempts."""
    settings = model.settings
    delay = settings.load_retry_initial_seconds
    attempt = 1
    pending = model.first_attempt
    if pending is not None and not pending.done():  # main()'s first attempt, still going
        await asyncio.wrap_future(pending)
    while not_ready(model) is not None and not model.unloaded:
        wait = delay * (0.5 + jitter() / 2)
        for version in served(model):
            if not version.ready:
                reason = version.load_error
                note = f"(attempt {attempt}; next in {wait:.1f} s)"
                version.load_error = f"{reason} {note}"
        errors_log.warning("model not loaded after attempt %d; retrying in %.1f s", attempt, wait)
        await asyncio.sleep(wait)
        attempt += 1
        await asyncio.to_thread(load_models, model)
        delay = min(delay * 2, settings.load_retry_max_seconds)
    return attempt
