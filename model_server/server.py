"""``PredictorServer``: ``kserve.ModelServer`` that starts even when the model failed to load.

KServe's ``start`` refuses to run without a ready model (``NoModelReady``), so a bad artifact
would crash-loop the pod with no readiness signal. Here the server starts, answers 503 on
readiness with the reason, and lets Kubernetes and the rollout tool see a failed revision.
It also binds the configured host (KServe binds 0.0.0.0) and serves gRPC with this project's
servicer (``model_server.grpc_service``) when asked.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from kserve import ModelServer
from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess, RESTServerProcess
from kserve.protocol.rest.server import RESTServer

from model_server import workers
from model_server.app import APP_IMPORT_STRING, Handlers
from model_server.grpc_service import GrpcServer
from model_server.http_guard import GuardedHttpToolsProtocol
from model_server.model import SklearnModel
from model_server.settings import ModelServerSettings

log = logging.getLogger(__name__)


def guarded_protocol(settings: ModelServerSettings) -> Any:
    """uvicorn's protocol with head/body timeouts, a connection cap and load shedding
    (``http_guard``)."""
    return functools.partial(
        GuardedHttpToolsProtocol,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_connections=settings.max_connections,
        max_concurrency=settings.max_concurrency,
    )


class SupervisedWorkers(RESTServerMultiProcess):  # type: ignore[misc]
    """KServe's worker processes, replaced when one dies (as KServe does), plus: the roster
    that readiness reads, and the dead worker's metrics kept (``model_server.workers``)."""

    def init_processes(self, sockets: list[Any]) -> None:
        super().init_processes(sockets)
        self._publish_roster()

    def _publish_roster(self) -> None:
        roster = workers.roster()
        if roster is not None:
            roster.expect([p.pid for p in self._processes if p.pid is not None])

    async def keep_subprocess_alive(self, sockets: list[Any]) -> None:
        # KServe's loop, with our bookkeeping between the death and the replacement.
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self._processes):
            if process.is_alive():
                continue
            process.kill()  # dead, or alive but not answering pings: hung
            await process.wait_for_termination()
            if self.should_exit.is_set():
                return
            pid = process.pid
            log.error(
                "worker %s died (exit code %s); starting a replacement",
                pid,
                process._process.exitcode,
            )
            roster, directory = workers.roster(), workers.metrics_dir()
            if roster is not None and pid is not None:
                roster.forget(pid)
            if directory is not None and pid is not None:
                moved = workers.archive_metrics(directory, pid)
                log.info("kept %d metric values of worker %s", moved, pid)
            replacement = RESTServerProcess(sockets, self._rest_server.run)
            replacement.start()
            self._processes[index] = replacement
            self._publish_roster()
            log.info("started worker %s", replacement.pid)


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

    def serve(self, model: SklearnModel, handlers: Handlers) -> None:
        """Register ``model`` (ready or not) and serve until SIGTERM or SIGINT.

        ``handlers`` answer gRPC (in this process; REST workers have their own).
        """
        self.register_model(model)
        model.enable_latency_logging = False
        settings = self.settings
        if settings.workers > 1:
            self._rest_multiprocess_server = SupervisedWorkers(
                APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                workers=settings.workers,
                grace_period=self.grace_period,
                timeout_keep_alive=self.timeout_keep_alive,
            )
            self._rest_multiprocess_server._rest_server.config.host = settings.host
            self._rest_multiprocess_server._rest_server.config.http = guarded_protocol(settings)
            self.servers.append(self._rest_multiprocess_server.start())
        else:
            self._rest_server = RESTServer(
                APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                workers=1,
                grace_period=self.grace_period,
                timeout_keep_alive=self.timeout_keep_alive,
            )
            self._rest_server.config.host = settings.host
            self._rest_server.config.http = guarded_protocol(settings)
            self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            grpc_server = GrpcServer(handlers, settings.host, self.grpc_port, self.grace_period)
            self._grpc_server = grpc_server  # KServe's stop() stops it on SIGTERM
            self.servers.append(grpc_server.start())
            if self._rest_server is not None:
                # One worker: uvicorn takes SIGTERM first and only hands it on after draining
                # REST; start draining gRPC at the same moment instead.
                uvicorn_server = self._rest_server._server
                handle_exit = uvicorn_server.handle_exit

                def exit_both(sig: int, frame: Any) -> None:
                    handle_exit(sig, frame)
                    asyncio.get_running_loop().create_task(grpc_server.stop(sig))

                uvicorn_server.handle_exit = exit_both
        self.setup_event_loop()
        self.register_signal_handler()
        log.info(
            "serving %r on http://%s:%d with %d worker(s)%s",
            model.name,
            settings.host,
            self.http_port,
            settings.workers,
            f", gRPC on {settings.host}:{self.grpc_port}" if self.enable_grpc else "",
        )
        asyncio.run(self._serve())
