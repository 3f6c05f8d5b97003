"""Peer (e), the pipeline floor: a bare ASGI app that parses JSON, builds the DataFrame and
predicts.

No framework, no validation, no metrics: the least work any server must do for a V2 request of
one [N] tensor per feature. Served by uvicorn, like the others.
Usage: python -m benchmarks.servers.raw_asgi MODEL_FILE NAME PORT
"""

from __future__ import annotations

import sys
from typing import Any

import joblib
import orjson
import pandas as pd
import uvicorn

from benchmarks.servers.asgi import App, json_app


def make_app(pipeline: Any, name: str) -> App:
    def answer(body: bytes) -> bytes:
        request = orjson.loads(body)
        frame = pd.DataFrame({t["name"]: t["data"] for t in request["inputs"]})
        labels = pipeline.predict(frame).tolist()
        output = {"name": "predict", "datatype": "BYTES", "shape": [len(labels)], "data": labels}
        return orjson.dumps({"model_name": name, "outputs": [output]})

    return json_app(answer)


def main() -> None:
    path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = make_app(joblib.load(path), name)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
