"""The gRPC floor: a ``grpc.aio`` ModelInfer servicer that does no work at all.

It answers every call with one prebuilt response shaped like the server's (two raw outputs),
so what it costs per call is grpcio's own: HTTP/2 framing, the C core, the completion queue
and the hop into the asyncio loop. ``bench_protocols`` measures it beside the server's REST and
gRPC paths to show how much of a 1-row gRPC call no servicer written in Python can avoid.
Usage: python -m benchmarks.servers.grpc_floor PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import numpy as np
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc


def _response() -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name="bc-logistic", model_version="v1")
    response.outputs.add(name="predict", datatype="BYTES", shape=[1])
    response.raw_output_contents.append(len(b"benign").to_bytes(4, "little") + b"benign")
    response.outputs.add(name="predict_proba", datatype="FP64", shape=[1, 2])
    response.raw_output_contents.append(np.array([0.25, 0.75], "<f8").tobytes())
    return response


class Floor(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.response = _response()

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        return self.response


async def serve(port: int) -> None:
    server = aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
