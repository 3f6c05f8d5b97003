"""The Open Inference Protocol over gRPC, with the same service core, checks and metrics as REST.

KServe's own gRPC server is not used: it binds ``[::]`` whatever the host, passes ``None``
channel options that crash ``grpc.aio`` at start, and its servicer answers through KServe's
data plane (no version, no request ids, no metrics, a model repository anyone can unload).
This one implements KServe's ``GRPCInferenceService`` (``grpc_predict_v2.proto``, the same
service and method names tritonclient calls) on ``--host:--grpc-port``:

- typed contents (``fp64_contents``, ``int64_contents``, ``bytes_contents``, ...) and
  ``raw_input_contents`` (the proto: when used, one entry per input and no typed contents);
  both become the document ``codec_v2.decode_v2`` validates for REST;
- responses carry ``model_version``, the request's ``id``, and the outputs as
  ``raw_output_contents`` (as Triton answers; tritonclient and KServe's client read them);
- errors: INVALID_ARGUMENT (bad input, naming the problem), NOT_FOUND (unknown model or
  version), UNAVAILABLE (not ready), INTERNAL (a bug: logged with the request id);
- ``x-request-id`` metadata is echoed (or made) in the trailing metadata with
  ``x-model-version``; ModelInfer is counted with ``protocol="grpc"`` and the gRPC status
  name in ``code``;
- the standard ``grpc.health.v1.Health`` service (``grpcio-health-checking``, Check and
  Watch), as ``grpc_health_probe``, kubelet ``grpc`` probes and meshes ask it: ``""`` (the
  server) and ``inference.GRPCInferenceService`` are SERVING when the model is loaded (the
  readiness of ``/v2/health/ready``), NOT_SERVING while it is not or while the server drains;
  ``liveness`` is SERVING while the server answers at all (``/v2/health/live``): the chart's
  liveness probe asks it, so a slow or failed load is not a restart; other names: NOT_FOUND.

Part of the transport layer beside HTTP: it translates between protobuf messages and the
service core (``model_server.service``), and knows nothing of HTTP, ASGI or processes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
import numpy as np
from grpc import aio
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kserve.errors import InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from model_server import repository, tensors
from model_server.errors import Refused, failure
from model_server.experiment import Assignment
from model_server.model import Answer
from model_server.service import ModelService
from prediction_log.ids import request_id_from

log = logging.getLogger(__name__)

CONTENTS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""Which typed field of ``InferTensorContents`` holds each datatype (the proto's comments)."""
_EXACT = {"INT32", "INT64", "UINT32", "UINT64", "FP32", "FP64"}
"""Datatypes whose contents field has exactly their width: read straight into an array."""

HTTP_EQUIVALENT = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.INTERNAL: 500,
}
_STATUS_FOR_HTTP = {http: code for code, http in HTTP_EQUIVALENT.items()}


def _parameter(value: pb.InferParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice else None


def _parameters(entries: Any) -> dict[str, Any] | None:
    return {key: _parameter(value) for key, value in entries.items()} or None


def _contents(tensor: pb.ModelInferRequest.InferInputTensor) -> Any:
    """A typed-contents tensor's values: an array, or a list where ranges need checking."""
    name, datatype = tensor.name, tensor.datatype
    field = CONTENTS.get(datatype)
    filled = [descriptor.name for descriptor, _ in tensor.contents.ListFields()]
    if field is None:
        raise InvalidInput(
            f"input {name!r} is {datatype or 'without a datatype'}; typed contents hold one of "
            f"{', '.join(sorted(CONTENTS))} (FP16 goes in raw_input_contents)"
        )
    if any(other != field for other in filled):
        raise InvalidInput(
            f"input {name!r} is {datatype}, so its values go in contents.{field}, "
            f"not {', '.join(f for f in filled if f != field)}"
        )
    values = getattr(tensor.contents, field)
    if datatype == "BYTES":
        try:
            return [bytes(v).decode() for v in values]
        except UnicodeDecodeError as error:
            raise InvalidInput(f"input {name!r}: a BYTES element is not UTF-8 text") from error
    if datatype in _EXACT:
        return np.asarray(values, dtype=tensors.DTYPES[datatype])
    return list(values)  # narrower types (INT8, UINT16, ...) and BOOL: checked as JSON is


def request_document(request: pb.ModelInferRequest) -> dict[str, Any]:
    """The V2 request document ``codec_v2.decode_v2`` validates, from a gRPC request."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(request.inputs)} inputs: with raw contents, every input has one"
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"input {tensor.name!r} has typed contents, but the request uses "
                    "raw_input_contents: use one or the other"
                )
            data = tensors.array_from_bytes(tensor.name, tensor.datatype, shape, raw[index])
        else:
            data = _contents(tensor)
        item: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": shape,
            "data": data,
        }
        inputs.append(item)
    document: dict[str, Any] = {"inputs": inputs}
    if request.id:
        document["id"] = request.id
    parameters = _parameters(request.parameters)
    if parameters:
        document["parameters"] = parameters
    if request.outputs:
        document["outputs"] = [
            {"name": output.name, "parameters": _parameters(output.parameters)}
            for output in request.outputs
        ]
    return document


def infer_response(answer: Answer) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=answer.model.name,
        model_version=answer.model.version,
        id=answer.decoded.request_id or "",
    )
    for output in answer.outputs:
        response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        response.raw_output_contents.append(tensors.array_to_bytes(output))
    return response


def _tensor_metadata(items: list[dict[str, Any]]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(
            name=i["name"], datatype=i["datatype"], shape=i["shape"]
        )
        for i in items
    ]


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """``inference.GRPCInferenceService`` for the one model ``service`` serves."""

    def __init__(self, service: ModelService) -> None:
        self.service = service

    async def _refuse(self, context: aio.ServicerContext, error: Refused) -> None:
        code = _STATUS_FOR_HTTP.get(error.status, grpc.StatusCode.INTERNAL)
        await context.abort(code, str(error))

    async def _checked(
        self, context: aio.ServicerContext, name: str, version: str, *, ready: bool = True
    ) -> None:
        try:
            self.service.check_model(name, version or None)
        except Refused as error:
            if ready or error.status != 503:
                await self._refuse(context, error)

    async def ServerLive(  # noqa: N802 (the proto's names)
        self, request: pb.ServerLiveRequest, context: aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.model_not_ready() is None)

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        await self._checked(context, request.name, request.version, ready=False)
        return pb.ModelReadyResponse(ready=self.service.model_not_ready() is None)

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.service.server_metadata_body())

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        await self._checked(context, request.name, request.version)
        meta = self.service.model_metadata()
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=_tensor_metadata(meta["inputs"]),
            outputs=_tensor_metadata(meta["outputs"]),
        )

    async def RepositoryModelLoad(  # noqa: N802
        self, request: pb.RepositoryModelLoadRequest, context: aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        await self._repository(context, request.model_name, "load")
        return pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=True)

    async def RepositoryModelUnload(  # noqa: N802
        self, request: pb.RepositoryModelUnloadRequest, context: aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        await self._repository(context, request.model_name, "unload")
        return pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=True)

    async def _repository(self, context: aio.ServicerContext, name: str, action: Any) -> None:
        try:
            repository.act(self.service.model, name, action)
        except Refused as error:
            if not self.service.model.settings.enable_model_repository:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, str(error))
            await self._refuse(context, error)

    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: aio.ServicerContext
    ) -> pb.ModelInferResponse:
        started = time.perf_counter()
        service = self.service
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        given = metadata.get("x-request-id")
        request_id = request_id_from(str(given) if given else None)
        # Trailing metadata rides with the status: sending initial metadata early would cost
        # every call an extra HTTP/2 frame and flush.
        trailing = {"x-request-id": request_id, "x-model-version": service.model.version}
        answer: Answer | None = None
        assignment: Assignment[ModelService] | None = None
        code = grpc.StatusCode.OK
        error_body: Any = None
        message = ""
        try:
            version = request.model_version or None
            service.check_model(request.model_name, version)
            document = request_document(request)
            assignment = service.route(metadata, document, version)
            answer = service.answering(assignment, trailing).predict(document, "v2")
            response = infer_response(answer)
        except Exception as error:  # every failure is answered, and counted
            status, error_body = failure(error, request_id)
            code = _STATUS_FOR_HTTP.get(status, grpc.StatusCode.INTERNAL)
            message = error_body["error"]
        service.finish(
            request_id=request_id,
            protocol="grpc",
            code=code.name,
            status=HTTP_EQUIVALENT[code],
            started=started,
            answer=answer,
            error=error_body,
            log_line="gRPC ModelInfer",
            assignment=assignment,
        )
        context.set_trailing_metadata(tuple(trailing.items()))
        if code is not grpc.StatusCode.OK:
            await context.abort(code, message)
        return response


INFERENCE_SERVICE: str = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
"""``inference.GRPCInferenceService``: the name KServe's proto gives the service."""
LIVENESS_SERVICE = "liveness"
"""The health service name that reports liveness, not readiness (the kubelet's probe asks it)."""
READINESS_SERVICES = ("", INFERENCE_SERVICE)
"""The health service names that report readiness: the server as a whole, and the inference
service."""
HEALTH_REFRESH_SECONDS = 1.0
"""How often the health service looks again, for Watch streams (Check always looks first)."""
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthService(grpc_health.aio.HealthServicer):  # type: ignore[misc]
    """``grpc.health.v1.Health`` (gRPC's reference servicer) reporting ``service``'s state."""

    def __init__(self, service: ModelService) -> None:
        super().__init__()
        self.service = service
        self.draining = False

    async def refresh(self) -> None:
        """Set each name's status from the service now (the reference servicer notifies
        Watch streams of changes)."""
        ready = not self.draining and self.service.model_not_ready() is None
        for name in READINESS_SERVICES:
            await self.set(name, _SERVING if ready else _NOT_SERVING)
        await self.set(LIVENESS_SERVICE, _SERVING)

    async def follow(self) -> None:
        """Refresh until cancelled, so Watch streams see loads, unloads and draining."""
        while True:
            await self.refresh()
            await asyncio.sleep(HEALTH_REFRESH_SECONDS)

    async def drain(self) -> None:
        """Not ready from now on (still live: the kubelet must not restart a draining pod)."""
        self.draining = True
        await self.refresh()

    async def Check(  # noqa: N802 (the proto's names)
        self, request: health_pb2.HealthCheckRequest, context: aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        return await super().Check(request, context)

    async def Watch(  # noqa: N802
        self, request: health_pb2.HealthCheckRequest, context: aio.ServicerContext
    ) -> None:
        await self.refresh()
        await super().Watch(request, context)


class GrpcServer:
    """A ``grpc.aio`` server for ``InferenceService`` with KServe's start/stop shape."""

    def __init__(self, service: ModelService, host: str, port: int, grace_period: float) -> None:
        settings = service.model.settings
        self.service = service
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.grace_period = grace_period
        self.options = [
            ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
            ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a second listener
        ]
        self.server: aio.Server | None = None
        self.health = HealthService(service)
        self._stopping = False

    async def start(self, _max_workers: int | None = None) -> None:
        """Bind, serve until stopped (made here: grpc.aio binds to the running loop)."""
        self.server = aio.server(options=self.options)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceService(self.service), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.server.add_insecure_port(self.address)
        await self.health.refresh()
        await self.server.start()
        await self.service.start_background()
        log.info("serving gRPC on %s", self.address)
        following = asyncio.create_task(self.health.follow())
        try:
            await self.server.wait_for_termination()
        finally:
            following.cancel()

    async def stop(self, _sig: int | None = None) -> None:
        if self.server is None or self._stopping:
            return
        self._stopping = True
        await self.health.drain()
        log.info("stopping gRPC (in-flight calls have %.0fs)", self.grace_period)
        await self.server.stop(grace=self.grace_period)
