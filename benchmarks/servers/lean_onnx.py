"""Peer (e), the lean floor: a bare ASGI app running the ONNX Runtime session the server uses.

orjson in, one ``[N, 1]`` input per feature (the registered ``model.onnx`` contract), the same
session options as ``model-server`` (one intra-op thread), orjson out with every output the
server answers by default (``predict``, and ``predict_proba`` for classifiers). No framework,
no validation, no metrics, no drift, no request ids: the same compute with nothing around it.
Served by uvicorn with the httptools protocol, like the server.
Usage: python -m benchmarks.servers.lean_onnx REGISTRY_URI NAME PORT
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import orjson
import uvicorn

from benchmarks.servers.asgi import App, json_app
from model_registry import Registry
from model_registry.onnx_runtime import MISSING_CATEGORY, session


def make_app(runtime: Any, name: str, version: str) -> App:
    numeric = {i.name for i in runtime.get_inputs() if i.type == "tensor(double)"}

    def feed(tensor: dict[str, Any]) -> np.ndarray[Any, Any]:
        if tensor["name"] in numeric:
            return np.asarray(tensor["data"], dtype=np.float64).reshape(-1, 1)
        data = [MISSING_CATEGORY if v is None else v for v in tensor["data"]]
        return np.asarray(data, dtype=object).reshape(-1, 1)

    def answer(body: bytes) -> bytes:
        request = orjson.loads(body)
        results = runtime.run(None, {t["name"]: feed(t) for t in request["inputs"]})
        labels = np.asarray(results[0]).ravel()
        outputs = [
            {
                "name": "predict",
                "datatype": {"i": "INT64", "f": "FP64"}.get(labels.dtype.kind, "BYTES"),
                "shape": [len(labels)],
                "data": labels.tolist(),
            }
        ]
        if len(results) > 1:
            proba = np.asarray(results[1], dtype=np.float64)
            outputs.append(
                {
                    "name": "predict_proba",
                    "datatype": "FP64",
                    "shape": list(proba.shape),
                    "data": proba.ravel().tolist(),
                }
            )
        return orjson.dumps({"model_name": name, "model_version": version, "outputs": outputs})

    return json_app(answer)


def main() -> None:
    registry_uri, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    registry = Registry(registry_uri)
    metadata, _ = registry.read_artifact(name, "production")
    blob = registry.read_onnx(metadata)
    if blob is None:
        raise SystemExit(f"{name} {metadata.version} has no model.onnx")
    app = make_app(session(blob, threads=1), name, metadata.version)
    uvicorn.run(
        app, host="127.0.0.1", port=port, http="httptools", log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
