"""Print working ``curl`` commands for a registered model: ``python -m model_server.examples``.

The example row uses the middle of each numeric feature's training range and the first
category of each categorical one, from the version's metadata.

An entry point of its own (``make run`` prints its lines): it reads the registry and knows
nothing of the server's modules.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from model_registry import Registry, RegistryError
from model_registry.metadata import ModelMetadata


def example_row(metadata: ModelMetadata) -> list[Any]:
    """One plausible input row, in feature order."""
    row: list[Any] = []
    for feature in metadata.features:
        if feature.kind == "categorical":
            row.append((feature.categories or ["unknown"])[0])
        else:
            low, high = feature.min or 0.0, feature.max or 0.0
            row.append(round((low + high) / 2, 4))
    return row


def curl_commands(metadata: ModelMetadata, url: str, name: str) -> tuple[str, str]:
    """V1 and V2 ``curl`` lines for ``metadata``'s model served at ``url`` as ``name``."""
    row = example_row(metadata)
    v1 = orjson.dumps(
        {"instances": [row], "return_probabilities": metadata.task == "classification"}
    )
    if any(f.kind == "categorical" for f in metadata.features):
        inputs = [
            {
                "name": f.name,
                "shape": [1],
                "datatype": "BYTES" if f.kind == "categorical" else "FP64",
                "data": [value],
            }
            for f, value in zip(metadata.features, row, strict=True)
        ]
    else:
        inputs = [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]
    v2_body: dict[str, Any] = {"inputs": inputs}
    if metadata.task == "classification":
        v2_body["outputs"] = [{"name": "predict"}, {"name": "predict_proba"}]
    v2 = orjson.dumps(v2_body)
    header = "-H 'Content-Type: application/json'"
    return (
        f"curl -s {header} {url}/v1/models/{name}:predict -d {shlex.quote(v1.decode())}",
        f"curl -s {header} {url}/v2/models/{name}/infer -d {shlex.quote(v2.decode())}",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_server.examples", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--registry-uri", default="./registry")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--model-version", default="production")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    args = parser.parse_args(argv)
    try:
        metadata = Registry(args.registry_uri).get(args.model_name, args.model_version)
    except RegistryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    v1, v2 = curl_commands(metadata, args.url, args.model_name)
    print(f"# {args.model_name} {metadata.version} ({metadata.task}), once the server is ready:")
    print(f"# V1\n{v1}\n# V2 (Open Inference Protocol)\n{v2}")
    print(f"# readiness: curl -s {args.url}/v2/health/ready   metrics: curl -s {args.url}/metrics")
    print(
        "# every answer's x-request-id (curl -i shows it) is in the prediction log, within "
        "--prediction-log-flush-seconds (10 s):\n"
        f"#   .venv/bin/model-trace REQUEST_ID --registry-uri {args.registry_uri}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
