"""Smoke-test a running model server: ``python -m model_server.smoke --url URL --model NAME``.

Waits until ``/v2/models/NAME/ready`` answers 200, reads the model's V2 metadata, and makes one
V2 inference with a row built from it (0.0 for numbers, ``UNKNOWN`` for text: a category never
seen in training, which the model encodes as none of the known ones; not ``""``, which means a
missing value, imputed). It is what the Helm chart's
``helm test`` pod runs, so it needs nothing beyond the standard library and the server image.

Exit codes: 0 the inference answered, 1 it failed, 2 usage, 3 the model never became ready.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_READY = 0, 1, 2, 3


def _call(url: str, body: dict[str, Any] | None, timeout: float) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (the URL is the operator's, http or https)
        url, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        payload = error.read()
        try:
            return error.code, json.loads(payload)
        except ValueError:
            return error.code, payload.decode(errors="replace")


def wait_ready(base: str, model: str, deadline_s: float, interval_s: float = 2.0) -> str | None:
    """Poll readiness until 200; ``None`` when ready, else the last answer seen."""
    url = f"{base}/v2/models/{model}/ready"
    stop = time.monotonic() + deadline_s
    last = "no answer yet"
    while True:
        try:
            status, body = _call(url, None, timeout=5.0)
            if status == 200:
                return None
            last = f"HTTP {status}: {body}"
        except OSError as error:
            last = str(error)
        if time.monotonic() >= stop:
            return last
        time.sleep(interval_s)


UNKNOWN = "smoke-test"
"""The category the smoke row sends for every text feature."""


def request_from_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """One V2 request with one plausible row, one 1-D tensor per declared input."""
    inputs = []
    for spec in metadata.get("inputs", []):
        is_text = spec.get("datatype") == "BYTES"
        inputs.append(
            {
                "name": spec["name"],
                "shape": [1],
                "datatype": "BYTES" if is_text else "FP64",
                "data": [UNKNOWN if is_text else 0.0],
            }
        )
    if not inputs:
        raise ValueError("the model's V2 metadata declares no inputs")
    return {"id": "smoke-test", "inputs": inputs}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_server.smoke",
        description="Wait for a model server to be ready, then make one V2 inference.",
        epilog="exit codes: 0 ok, 1 inference failed, 2 usage, 3 never ready",
    )
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://NAME-predictor")
    parser.add_argument("--model", required=True, help="model name served on /v2/models/NAME")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for readiness (300)"
    )
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")

    print(f"waiting up to {args.timeout:.0f}s for {base}/v2/models/{args.model}/ready", flush=True)
    not_ready = wait_ready(base, args.model, args.timeout)
    if not_ready is not None:
        print(f"FAILED: {args.model} never became ready: {not_ready}", file=sys.stderr)
        return EXIT_NOT_READY
    status, metadata = _call(f"{base}/v2/models/{args.model}", None, timeout=10.0)
    if status != 200 or not isinstance(metadata, dict):
        print(f"FAILED: metadata answered HTTP {status}: {metadata}", file=sys.stderr)
        return EXIT_FAILED
    try:
        body = request_from_metadata(metadata)
    except (KeyError, ValueError) as error:
        print(f"FAILED: unusable metadata: {error}", file=sys.stderr)
        return EXIT_FAILED
    status, answer = _call(f"{base}/v2/models/{args.model}/infer", body, timeout=30.0)
    if status != 200 or not isinstance(answer, dict) or not answer.get("outputs"):
        print(f"FAILED: inference answered HTTP {status}: {answer}", file=sys.stderr)
        return EXIT_FAILED
    outputs = {o["name"]: o.get("data") for o in answer["outputs"]}
    print(f"ok: {args.model} {answer.get('model_version')} answered {outputs}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
