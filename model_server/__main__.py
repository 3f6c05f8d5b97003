"""``model-server``: serve one registered model version with KServe (V1 and V2 over HTTP).

The entry point only: parse the settings, prepare the metrics directory for worker processes
(before anything imports prometheus_client), configure logging, build the model and its
service, start, and remove a temporary metrics directory at exit. It answers no request and
holds no serving logic, and nothing imports it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from model_server.settings import ModelServerSettings
from serving_common.cli import parse_settings
from serving_common.logging import bind_context

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
    # Imported only now: prometheus_client reads PROMETHEUS_MULTIPROC_DIR when imported.
    import kserve.model_server

    from model_server.http_app import install
    from model_server.loading import first_load, treatment_settings
    from model_server.model import SklearnModel
    from model_server.server import PredictorServer, configure_server_logging
    from model_server.service import ModelService, publish_model_info

    configure_server_logging(settings)
    if settings.fault_error_ratio or settings.fault_latency_ms:
        logging.getLogger("model_server").warning(
            "FAULT INJECTION IS ON: %.0f%% of inference requests fail with 500, %.0f ms added to "
            "each; for rehearsals only",
            settings.fault_error_ratio * 100,
            settings.fault_latency_ms,
        )
    model = SklearnModel(settings)
    if settings.experiment is not None:
        model.treatment = SklearnModel(treatment_settings(settings))
    first_load(model, settings.load_wait_seconds)
    bind_context(model_name=model.name, model_version=model.version)
    publish_model_info(model)
    service = ModelService(model, settings.access_log)
    if settings.workers == 1:
        install(kserve.model_server.app, service)
    # With several workers REST runs in them (each installs its own); this process answers gRPC.
    server = PredictorServer(settings)
    try:
        server.serve(model, service)
    finally:
        service.close()  # the prediction log's buffered records (the workers close their own)
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        if settings.workers > 1 and directory.startswith(tempfile.gettempdir()):
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
