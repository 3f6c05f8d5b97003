"""Peer (b): the plainest ``kserve.Model`` for the same pipeline, with KServe's defaults.

This is what KServe gives for free: its data plane decodes the V2 request into an
``InferRequest``, the model turns it into a DataFrame and calls ``predict``.
Usage: python -m benchmarks.servers.bare_kserve MODEL_FILE NAME PORT
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import joblib
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class BareModel(Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.pipeline: Any = None

    def load(self) -> bool:
        self.pipeline = joblib.load(self.path)
        self.ready = True
        return True

    async def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None, **_: Any
    ) -> InferResponse:
        labels = self.pipeline.predict(payload.as_dataframe())
        output = InferOutput("predict", [len(labels)], "BYTES", data=labels.tolist())
        return InferResponse(payload.id or str(uuid.uuid4()), self.name, [output])


def main() -> None:
    path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.argv = sys.argv[:1]
    model = BareModel(name, path)
    model.load()
    ModelServer(http_port=port, enable_grpc=False).start([model])


if __name__ == "__main__":
    main()
