"""One standard inference client against a running model-server, printing what it saw as JSON.

Run as a subprocess by ``test_clients.py``: tritonclient and KServe's client each register the
``inference.*`` protobuf messages, so the two cannot share a process (as in a real client).

    python -m tests.integration.client_matrix CLIENT MODE HTTP_URL GRPC_ADDRESS MODEL ROWS_JSON

CLIENT: triton-http | triton-grpc | kserve-rest-v1 | kserve-rest-v2 | kserve-grpc
MODE:   default (the library's defaults: binary tensors where it has them) | json
ROWS_JSON: {"columns": [[...], ...] per feature, "datatypes": [...], "names": [...]}
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np


def _columns(rows: dict[str, Any]) -> list[tuple[str, str, np.ndarray[Any, Any]]]:
    out = []
    for name, datatype, values in zip(
        rows["names"], rows["datatypes"], rows["columns"], strict=True
    ):
        dtype = object if datatype == "BYTES" else np.float64
        out.append((name, datatype, np.array(values, dtype=dtype)))
    return out


def _listed(array: Any) -> list[Any]:
    values = np.asarray(array).ravel().tolist()
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def triton(kind: str, mode: str, url: str, model: str, rows: dict[str, Any]) -> dict[str, Any]:
    if kind == "http":
        import tritonclient.http as client_lib
    else:
        import tritonclient.grpc as client_lib
    from tritonclient.utils import InferenceServerException

    client = client_lib.InferenceServerClient(url)
    binary = mode == "default"
    seen: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
    }
    metadata = client.get_model_metadata(model)
    if kind == "grpc":
        seen["metadata"] = {
            "versions": list(metadata.versions),
            "platform": metadata.platform,
            "inputs": [i.name for i in metadata.inputs],
            "outputs": [o.name for o in metadata.outputs],
        }
    else:
        seen["metadata"] = {
            "versions": metadata["versions"],
            "platform": metadata["platform"],
            "inputs": [i["name"] for i in metadata["inputs"]],
            "outputs": [o["name"] for o in metadata["outputs"]],
        }

    def inputs() -> list[Any]:
        made = []
        for name, datatype, values in _columns(rows):
            tensor = client_lib.InferInput(name, list(values.shape), datatype)
            if kind == "http":
                tensor.set_data_from_numpy(values, binary_data=binary)
            else:  # gRPC always sends raw_input_contents
                tensor.set_data_from_numpy(values)
            made.append(tensor)
        return made

    if kind == "http" and not binary:
        result = client.infer(
            model,
            inputs(),
            outputs=[
                client_lib.InferRequestedOutput(name, binary_data=False)
                for name in seen["metadata"]["outputs"]
            ],
        )
    else:
        result = client.infer(model, inputs())  # defaults: every output, binary over HTTP
    response = result.get_response()
    version = response["model_version"] if kind == "http" else response.model_version
    seen["all"] = {name: _listed(result.as_numpy(name)) for name in seen["metadata"]["outputs"]}
    seen["version"] = version
    last = seen["metadata"]["outputs"][-1]
    if kind == "http":
        one = client.infer(
            model, inputs(), outputs=[client_lib.InferRequestedOutput(last, binary_data=binary)]
        )
    else:
        one = client.infer(model, inputs(), outputs=[client_lib.InferRequestedOutput(last)])
    seen["one"] = {
        name: _listed(one.as_numpy(name)) if one.as_numpy(name) is not None else None
        for name in seen["metadata"]["outputs"]
    }
    bad = client_lib.InferInput("nope", [1, 1], "FP64")
    bad.set_data_from_numpy(np.ones((1, 1)))
    try:
        client.infer(model, [bad])
        seen["bad"] = "accepted"
    except InferenceServerException as error:
        seen["bad"] = str(error)
    return seen


async def kserve(
    kind: str, mode: str, url: str, model: str, rows: dict[str, Any]
) -> dict[str, Any]:
    from kserve import (
        InferenceGRPCClient,
        InferenceRESTClient,
        InferInput,
        InferRequest,
        RESTConfig,
    )
    from kserve.protocol.infer_type import RequestedOutput

    binary = mode == "default"
    seen: dict[str, Any] = {}

    def request(outputs: list[str] | None = None) -> InferRequest:
        made = []
        for name, datatype, values in _columns(rows):
            tensor = InferInput(name, list(values.shape), datatype)
            if kind == "rest-v2":
                tensor.set_data_from_numpy(values, binary_data=binary)
            else:
                tensor.set_data_from_numpy(values)
            made.append(tensor)
        requested = [RequestedOutput(o) for o in outputs] if outputs else None
        return InferRequest(model_name=model, infer_inputs=made, request_outputs=requested)

    if kind == "grpc":
        client: Any = InferenceGRPCClient(url)
        seen["ready"] = await client.is_server_ready()
        seen["model_ready"] = await client.is_model_ready(model)
        response = await client.infer(request())
    else:
        protocol = "v1" if kind == "rest-v1" else "v2"
        client = InferenceRESTClient(RESTConfig(protocol=protocol))
        if protocol == "v2":  # KServe's client has server readiness for V2 only
            seen["ready"] = await client.is_server_ready(url)
        seen["model_ready"] = await client.is_model_ready(url, model)
        if protocol == "v1":
            columns = [c[2].tolist() for c in _columns(rows)]
            if len(columns) == 1:  # one [N, F] matrix
                instances = columns[0]
            else:  # one column per feature
                instances = [list(r) for r in zip(*columns, strict=True)]
            body = await client.infer(url, {"instances": instances}, model_name=model)
            seen["all"] = {"predict": body["predictions"]}
            seen["version"] = body["model_version"]
            try:
                await client.infer(url, {"instances": [[1.0]]}, model_name=model)
                seen["bad"] = "accepted"
            except Exception as error:
                seen["bad"] = str(error)
            await client.close()
            return seen
        headers: dict[str, str] = {}
        response = await client.infer(url, request(), model_name=model, response_headers=headers)
        # KServe's InferResponse.from_bytes (kserve/protocol/infer_type.py) drops the body's
        # model_version; the x-model-version header carries it too.
        response.model_version = response.model_version or headers.get("x-model-version")
    seen["all"] = {o.name: _listed(o.as_numpy()) for o in response.outputs}
    seen["version"] = response.model_version
    last = list(seen["all"])[-1]
    one = await (
        client.infer(request([last]))
        if kind == "grpc"
        else client.infer(url, request([last]), model_name=model)
    )
    seen["one"] = {o.name: _listed(o.as_numpy()) for o in one.outputs}
    wrong = InferInput("nope", [1, 1], "FP64")
    wrong.set_data_from_numpy(np.ones((1, 1)))
    bad = InferRequest(model_name=model, infer_inputs=[wrong])
    try:
        await (client.infer(bad) if kind == "grpc" else client.infer(url, bad, model_name=model))
        seen["bad"] = "accepted"
    except Exception as error:
        seen["bad"] = str(error)
    await client.close()
    return seen


def main(argv: list[str]) -> int:
    name, mode, http_url, grpc_address, model, rows_json = argv
    rows = json.loads(rows_json)
    family, _, kind = name.partition("-")
    if family == "triton":
        seen = triton(kind, mode, http_url if kind == "http" else grpc_address, model, rows)
    else:
        url = grpc_address if kind == "grpc" else f"http://{http_url}"
        seen = asyncio.run(kserve(kind, mode, url, model, rows))
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
