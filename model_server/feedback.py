"""Feedback: the true label (or value) for predictions a client received earlier.

Stateless: the client sends back the ``model_version`` and prediction from the response with the
truth, so any replica can count it and nothing is cached between requests. Classifiers count
``correct``/``incorrect``; regressors observe the absolute error.

    {"model_version": "v3", "predictions": ["benign", "malignant"], "targets": ["benign", "benign"]}
    {"model_version": "v3", "prediction": 151.2, "target": 140.0}

A report may name the requests its predictions came from (``"request_ids": [...]``, one per
prediction, or ``"request_id"`` beside a single ``prediction``): the prediction log records
each row with it, so a reader joins the label to the prediction record.

Part of the service core: it decodes and checks a report against the model's schema, and
knows nothing of transports or metrics (the service counts what it returns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kserve.errors import InvalidInput

from model_server.schema import FeatureSchema


@dataclass(frozen=True)
class LabelRow:
    """One judged prediction: ``correct`` for classifiers, ``abs_error`` for regressors."""

    prediction: Any
    target: Any
    request_id: str | None = None
    correct: bool | None = None
    abs_error: float | None = None


@dataclass(frozen=True)
class Feedback:
    """Validated feedback for one batch."""

    correct: int = 0
    incorrect: int = 0
    abs_errors: list[float] = field(default_factory=list)
    rows: list[LabelRow] = field(default_factory=list)
    """Each row as received and judged, for the prediction log."""

    @property
    def received(self) -> int:
        return self.correct + self.incorrect + len(self.abs_errors)


def _label_key(value: Any) -> tuple[str, Any]:
    """Compare labels by kind and value: ``true`` is not ``1``, ``1`` equals ``1.0``."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    return ("text", value)


def _pairs(body: Any, max_rows: int) -> tuple[list[Any], list[Any]]:
    if "predictions" in body or "targets" in body:
        predictions, targets = body.get("predictions"), body.get("targets")
        if not isinstance(predictions, list) or not isinstance(targets, list):
            raise InvalidInput("'predictions' and 'targets' must both be lists")
        if len(predictions) != len(targets):
            raise InvalidInput(
                f"{len(predictions)} predictions but {len(targets)} targets; send one target "
                "per prediction"
            )
    elif "prediction" in body and "target" in body:
        predictions, targets = [body["prediction"]], [body["target"]]
    else:
        raise InvalidInput("send 'predictions' and 'targets' (lists), or 'prediction' and 'target'")
    if not predictions:
        raise InvalidInput("empty feedback: no predictions")
    if len(predictions) > max_rows:
        raise InvalidInput(f"{len(predictions)} feedback rows exceed the limit of {max_rows}")
    return predictions, targets


def _request_ids(body: dict[str, Any], count: int) -> list[str | None]:
    """The request ids a report names, one per prediction (None where it names none)."""
    if "request_ids" in body:
        ids = body["request_ids"]
        if not isinstance(ids, list) or len(ids) != count:
            raise InvalidInput(
                f"'request_ids' must be a list of {count} request ids, one per prediction"
            )
    elif "request_id" in body:
        if count != 1:
            raise InvalidInput("'request_id' names one prediction; send 'request_ids' for a list")
        ids = [body["request_id"]]
    else:
        return [None] * count
    for index, value in enumerate(ids):
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 256):
            raise InvalidInput(f"request id {index} must be a string of 1 to 256 characters")
    return list(ids)


def decode_feedback(body: Any, schema: FeatureSchema, served_version: str) -> Feedback:
    """Validate a feedback document for the served version. Raises ``InvalidInput``."""
    if not isinstance(body, dict):
        raise InvalidInput("feedback must be a JSON object")
    version = body.get("model_version")
    if not isinstance(version, str):
        raise InvalidInput("'model_version' is required: the version the prediction came from")
    if version != served_version:
        raise InvalidInput(
            f"feedback for {version!r}, but this server serves {served_version!r}: send it to "
            "the revision that made the prediction"
        )
    predictions, targets = _pairs(body, schema.max_rows)
    request_ids = _request_ids(body, len(predictions))
    rows = []
    if schema.classes is not None:
        known = {_label_key(c) for c in schema.classes}
        correct = incorrect = 0
        for index, (predicted, truth) in enumerate(zip(predictions, targets, strict=True)):
            for what, value in (("prediction", predicted), ("target", truth)):
                if _label_key(value) not in known:
                    raise InvalidInput(
                        f"{what} {index} is {value!r}, not one of the model's classes "
                        f"{list(schema.classes)}"
                    )
            right = _label_key(predicted) == _label_key(truth)
            correct += right
            incorrect += not right
            rows.append(LabelRow(predicted, truth, request_ids[index], correct=right))
        return Feedback(correct=correct, incorrect=incorrect, rows=rows)
    errors = []
    for index, (predicted, truth) in enumerate(zip(predictions, targets, strict=True)):
        for what, value in (("prediction", predicted), ("target", truth)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise InvalidInput(f"{what} {index} must be a finite number, got {value!r}")
        error = abs(float(predicted) - float(truth))
        errors.append(error)
        rows.append(LabelRow(predicted, truth, request_ids[index], abs_error=error))
    return Feedback(abs_errors=errors, rows=rows)
