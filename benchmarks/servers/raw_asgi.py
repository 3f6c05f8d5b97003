"""Peer (d), the floor: a bare ASGI app that parses JSON, builds the DataFrame and predicts.

No framework, no validation, no metrics: the least work any server must do for a V2 request of
one [N] tensor per feature. Served by uvicorn, like the others.
Usage: python -m benchmarks.servers.raw_asgi MODEL_FILE NAME PORT
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import joblib
import orjson
import pandas as pd
import uvicorn

Scope = dict[str, Any]
Message = dict[str, Any]


def make_app(pipeline: Any, name: str) -> Callable[..., Awaitable[None]]:
    async def app(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, payload = 200, b'{"ready":true}'
        if scope["method"] == "POST":
            request = orjson.loads(body)
            frame = pd.DataFrame({t["name"]: t["data"] for t in request["inputs"]})
            labels = pipeline.predict(frame).tolist()
            output = {
                "name": "predict",
                "datatype": "BYTES",
                "shape": [len(labels)],
                "data": labels,
            }
            payload = orjson.dumps({"model_name": name, "outputs": [output]})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def main() -> None:
    path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = make_app(joblib.load(path), name)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
