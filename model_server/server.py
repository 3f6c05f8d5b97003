"""The process: ``PredictorServer`` runs uvicorn (one process, or KServe's supervised worker
processes) and the gRPC server, handles signals, and bootstraps each worker process.

``PredictorServer`` is ``kserve.ModelServer`` that starts even when the model failed to load.
KServe's ``start`` refuses to run without a ready model (``NoModelReady``), so a bad artifact
would crash-loop the pod with no readiness signal. Here the server starts, answers 503 on
readiness with the reason, and lets Kubernetes and the rollout tool see a failed revision.
It also binds the configured host (KServe binds 0.0.0.0) and serves gRPC with this project's
servicer (``model_server.grpc_service``) when asked. With ``--workers N`` each spawned worker
starts in ``WorkerProcess.target``: logging, this project's routes (``http_app.install``) and
the model's info metric, before KServe runs uvicorn there. It is the only module that starts or
supervises processes (the service core only marks its own worker ready in the roster); nothing
below imports it, and only ``__main__`` does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from socket import socket
from typing import Any

from kserve import ModelServer
from kserve.logging import logger as kserve_log
from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess, RESTServerProcess
from kserve.protocol.rest.server import RESTServer

from model_server import worker_state
from model_server.grpc_service import GrpcServer
from model_server.http_app import APP_IMPORT_STRING, install
from model_server.http_guard import GuardedHttpToolsProtocol
from model_server.model import SklearnModel
from model_server.service import LOG_STOP_SECONDS, ModelService, publish_model_info
from model_server.settings import ModelServerSettings
from serving_common.logging import bind_context, configure_logging

log = logging.getLogger(__name__)


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


def bootstrap_worker(model: SklearnModel) -> ModelService:
    """In a spawned worker process (fresh imports, the model unpickled): logging, this
    project's routes in front of KServe's app, and the model's info metric. Returns the
    worker's service (closed when the worker stops: its prediction log is written)."""
    configure_server_logging(model.settings)
    bind_context(model_name=model.name, model_version=model.version)
    import kserve.model_server

    service = ModelService(model, model.settings.access_log)
    install(kserve.model_server.app, service)
    publish_model_info(model)
    return service


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)


class WorkerProcess(RESTServerProcess):  # type: ignore[misc]
    """KServe's worker process, bootstrapped (``bootstrap_worker``) before KServe's own start
    (its logging defaults, the liveness pong thread, uvicorn)."""

    def __init__(
        self,
        sockets: list[socket],
        target: Any,
        model: SklearnModel,
        log_config_file: str | None = None,
    ) -> None:
        super().__init__(sockets, target, log_config_file=log_config_file)
        self.model = model

    def target(self, sockets: list[socket]) -> Any:
        # uvicorn, once drained, puts back the SIGTERM handler it found and sends itself the
        # signal again (uvicorn.server.Server.capture_signals): with the default handler a
        # spawned worker would die there, before writing its prediction log. This one ends it
        # with SystemExit instead, so the ``finally`` below runs.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        service = bootstrap_worker(self.model)
        try:
            return super().target(sockets)
        finally:  # uvicorn has drained (SIGTERM): write what the prediction log holds
            service.close()


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
    """KServe's worker processes (each a ``WorkerProcess``), replaced when one dies (as KServe
    does), plus: the roster that readiness reads, and the dead worker's metrics kept
    (``model_server.worker_state``)."""

    def __init__(self, *args: Any, model: SklearnModel, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model = model

    def _worker(self, sockets: list[Any]) -> WorkerProcess:
        return WorkerProcess(
            sockets, self._rest_server.run, self.model, log_config_file=self.log_config_file
        )

    def init_processes(self, sockets: list[Any]) -> None:
        # KServe's loop, with our worker process.
        for _ in range(self._rest_server.config.workers):
            process = self._worker(sockets)
            self._processes.append(process)
            process.start()
            kserve_log.info("Started child process [%s]", process.pid)
        self._publish_roster()

    def _publish_roster(self) -> None:
        roster = worker_state.roster()
        if roster is not None:
            roster.expect([p.pid for p in self._processes if p.pid is not None])

    async def terminate_all(self) -> None:
        """KServe's stop (SIGTERM to every worker, then SIGKILL to one still running after the
        grace period), with room after the grace period for each worker's last prediction log
        write (``ModelService.close``: at most ``LOG_STOP_SECONDS``): a worker killed there
        would lose what it held without counting or saying so."""
        for process in self._processes:
            process.terminate()
        wait = (self._rest_server.config.timeout_graceful_shutdown or 0) + LOG_STOP_SECONDS

        async def stop(process: WorkerProcess) -> None:
            try:
                await process.wait_for_termination(wait)
            except TimeoutError:
                log.warning("worker %s took too long to stop; killing it", process.pid)
                process.kill()

        await asyncio.gather(*(stop(p) for p in self._processes))

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
            roster, directory = worker_state.roster(), worker_state.metrics_dir()
            if roster is not None and pid is not None:
                roster.forget(pid)
            if directory is not None and pid is not None:
                moved = worker_state.archive_metrics(directory, pid)
                log.info("kept %d metric values of worker %s", moved, pid)
            replacement = self._worker(sockets)
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

    def serve(self, model: SklearnModel, service: ModelService) -> None:
        """Register ``model`` (ready or not) and serve until SIGTERM or SIGINT.

        ``service`` answers gRPC (in this process; REST workers have their own).
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
                model=model,
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
            grpc_server = GrpcServer(service, settings.host, self.grpc_port, self.grace_period)
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
