"""``PredictorServer``: ``kserve.ModelServer`` that starts even when the model failed to load.

KServe's ``start`` refuses to run without a ready model (``NoModelReady``), so a bad artifact
would crash-loop the pod with no readiness signal. Here the server starts, answers 503 on
readiness with the reason, and lets Kubernetes and the rollout tool see a failed revision.
It also binds the configured host (KServe binds 0.0.0.0) and leaves gRPC off unless asked.
"""

from __future__ import annotations

import asyncio
import logging

from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess
from kserve.protocol.rest.server import RESTServer

from model_server.model import SklearnModel
from model_server.settings import ModelServerSettings

log = logging.getLogger(__name__)


class PredictorServer(ModelServer):  # type: ignore[misc]
    """KServe's model server, configured from ``ModelServerSettings``."""

    def __init__(self, settings: ModelServerSettings) -> None:
        super().__init__(
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
            workers=settings.workers,
            enable_grpc=settings.enable_grpc,
            enable_docs_url=False,
            enable_latency_logging=False,
            timeout_keep_alive=settings.timeout_keep_alive,
            grace_period=settings.grace_period_seconds,
        )
        self.settings = settings

    def serve(self, model: SklearnModel) -> None:
        """Register ``model`` (ready or not) and serve until SIGTERM or SIGINT."""
        self.register_model(model)
        model.enable_latency_logging = False
        settings = self.settings
        if settings.workers > 1:
            self._rest_multiprocess_server = RESTServerMultiProcess(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                workers=settings.workers,
                grace_period=self.grace_period,
                timeout_keep_alive=self.timeout_keep_alive,
            )
            self._rest_multiprocess_server._rest_server.config.host = settings.host
            self.servers.append(self._rest_multiprocess_server.start())
        else:
            self._rest_server = RESTServer(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                workers=1,
                grace_period=self.grace_period,
                timeout_keep_alive=self.timeout_keep_alive,
            )
            self._rest_server.config.host = settings.host
            self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = GRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs={},
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        log.info(
            "serving %r on http://%s:%d with %d worker(s)",
            model.name,
            settings.host,
            self.http_port,
            settings.workers,
        )
        asyncio.run(self._serve())
