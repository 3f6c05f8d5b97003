"""``model-server``: serve one registered model version with KServe (V1 and V2 over HTTP)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import TYPE_CHECKING

from model_server.settings import ModelServerSettings
from serving_common.cli import parse_settings
from serving_common.logging import bind_context, configure_logging

if TYPE_CHECKING:
    from model_server.model import SklearnModel

EPILOG = """\
endpoints:
  V1  GET /v1/models/NAME            POST /v1/models/NAME:predict
  V2  GET /v2/health/live|ready      GET /v2/models/NAME[/ready]   POST /v2/models/NAME/infer
      GET /metrics (Prometheus; complete across --workers)

responses carry the answering version: "model_version" in the body and an x-model-version
header; x-request-id is echoed (or generated).

experiment mode (--experiment NAME --experiment-treatment v4): both versions are served, each
user sticky to one by the x-user-id header (or "parameters": {"user_id": ...}); responses add
x-experiment and x-experiment-variant. Outcomes: POST .../feedback
{"experiment": NAME, "outcomes": [{"user_id": ..., "converted": true}, ...]}.

exit codes:
  0  stopped cleanly (SIGTERM or SIGINT; in-flight requests finish first)
  1  the server failed to start
  2  bad flags or settings
A model that fails to load does not stop the server: readiness answers 503 with the reason,
and the load is retried with backoff (storage down at start needs no restart).

examples:
  model-server --registry-uri ./registry --model-name breast-cancer --model-version production
  model-server --model-dir /mnt/models --model-name churn --workers 4 --log-format json
  model-server --registry-uri ./registry --model-name churn --model-version v3 \
      --experiment checkout --experiment-treatment v4 --experiment-percent 30
"""


def configure_server_logging(settings: ModelServerSettings) -> None:
    """One format for our logs, KServe's and uvicorn's; no per-request trace lines."""
    configure_logging(
        settings.log_level,
        settings.log_format,
        levels={
            "kserve": "WARNING" if settings.log_level == "INFO" else settings.log_level,
            "kserve.trace": "WARNING",
            "uvicorn": "INFO",
            "uvicorn.error": "INFO",
            "uvicorn.access": "WARNING",
        },
    )


def publish_model_info(model: SklearnModel) -> None:
    """Set ``model_server_model_info`` for the loaded version (nothing when not loaded); in
    experiment mode for both versions, and the experiment's treatment share."""
    from model_server.metrics import set_experiment, set_model_info

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


def _prepare_multiprocess_metrics(workers: int) -> None:
    """Point prometheus_client at a fresh shared directory before it is imported."""
    if workers <= 1:
        return
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        # The worker roster of a previous container (an emptyDir outlives it): pids repeat.
        shutil.rmtree(path / "workers", ignore_errors=True)
    else:
        directory = tempfile.mkdtemp(prefix="model-server-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(
        ModelServerSettings,
        argv,
        prog="model-server",
        description=ModelServerSettings.__doc__ or "",
        epilog=EPILOG,
    )
    if settings.revision is None:
        settings.revision = os.environ.get("K_REVISION", "")
    # KServe parses sys.argv when imported, and spawned workers re-import it: hand it nothing.
    sys.argv = sys.argv[:1]
    _prepare_multiprocess_metrics(settings.workers)
    configure_server_logging(settings)

    import kserve.model_server

    from model_server.app import Handlers, install
    from model_server.model import SklearnModel, load_models
    from model_server.server import PredictorServer

    if settings.fault_error_ratio or settings.fault_latency_ms:
        logging.getLogger("model_server").warning(
            "FAULT INJECTION IS ON: %.0f%% of inference requests fail with 500, %.0f ms added to "
            "each; for rehearsals only",
            settings.fault_error_ratio * 100,
            settings.fault_latency_ms,
        )
    model = SklearnModel(settings)
    if settings.experiment is not None:
        from model_server.experiment import treatment_settings

        model.treatment = SklearnModel(treatment_settings(settings), role="treatment")
    loader = ThreadPoolExecutor(1, thread_name_prefix="model-load")
    first = loader.submit(load_models, model)
    loader.shutdown(wait=False)  # its thread ends with this one load
    try:
        first.result(timeout=settings.load_wait_seconds)
    except FuturesTimeout:
        logging.getLogger("model_server").warning(
            "the model is still loading after %.0f s (slow storage?): serving, not ready, "
            "until it loads",
            settings.load_wait_seconds,
        )
        for each in (model, model.treatment):
            if each is not None and not each.ready:
                each.load_error = "still loading (slow storage?)"
        model.first_attempt = first
    bind_context(model_name=model.name, model_version=model.version)
    publish_model_info(model)
    if settings.workers == 1:
        handlers = install(kserve.model_server.app, model, access_log=settings.access_log)
    else:  # REST runs in the workers; this process answers gRPC
        handlers = Handlers(model, settings.access_log)
    server = PredictorServer(settings)
    try:
        server.serve(model, handlers)
    finally:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        if settings.workers > 1 and directory.startswith(tempfile.gettempdir()):
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
