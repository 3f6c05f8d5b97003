"""Feedback validation and outcomes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from kserve.errors import InvalidInput

from model_server.feedback import decode_feedback
from model_server.schema import FeatureSchema

CLASSIFIER = FeatureSchema(("a",), frozenset(), ("benign", "malignant"), max_rows=5)
INT_CLASSES = FeatureSchema(("a",), frozenset(), (0, 1), max_rows=5)
REGRESSOR = FeatureSchema(("a",), frozenset(), None, max_rows=5)


def test_classifier_outcomes() -> None:
    body = {
        "model_version": "v2",
        "predictions": ["benign", "malignant", "benign"],
        "targets": ["benign", "benign", "benign"],
    }
    result = decode_feedback(body, CLASSIFIER, "v2")
    assert (result.correct, result.incorrect, result.received) == (2, 1, 3)


def test_single_pair_and_numeric_labels() -> None:
    result = decode_feedback(
        {"model_version": "v1", "prediction": 1, "target": 1.0}, INT_CLASSES, "v1"
    )
    assert (result.correct, result.incorrect) == (1, 0)


def test_regressor_absolute_errors() -> None:
    body = {"model_version": "v1", "predictions": [10.0, 3], "targets": [12.5, 3]}
    assert decode_feedback(body, REGRESSOR, "v1").abs_errors == [2.5, 0.0]


BAD: list[tuple[FeatureSchema, Any, str]] = [
    (CLASSIFIER, [1], "must be a JSON object"),
    (CLASSIFIER, {"predictions": ["benign"], "targets": ["benign"]}, "'model_version' is required"),
    (
        CLASSIFIER,
        {"model_version": "v9", "prediction": "benign", "target": "benign"},
        "feedback for 'v9', but this server serves 'v2'",
    ),
    (
        CLASSIFIER,
        {"model_version": "v2", "prediction": "benign", "target": "cyst"},
        "target 0 is 'cyst', not one of the model's classes",
    ),
    (
        CLASSIFIER,
        {"model_version": "v2", "predictions": ["x"], "targets": ["benign"]},
        "prediction 0 is 'x'",
    ),
    (
        CLASSIFIER,
        {"model_version": "v2", "predictions": ["benign"], "targets": []},
        "1 predictions but 0 targets",
    ),
    (CLASSIFIER, {"model_version": "v2", "predictions": [], "targets": []}, "empty feedback"),
    (
        CLASSIFIER,
        {"model_version": "v2", "predictions": ["benign"] * 6, "targets": ["benign"] * 6},
        "exceed the limit of 5",
    ),
    (
        CLASSIFIER,
        {"model_version": "v2", "predictions": "benign", "targets": "benign"},
        "must both be lists",
    ),
    (CLASSIFIER, {"model_version": "v2", "label": "benign"}, "send 'predictions' and 'targets'"),
    (
        INT_CLASSES,
        {"model_version": "v2", "prediction": True, "target": 1},
        "prediction 0 is True, not one of",
    ),
    (
        REGRESSOR,
        {"model_version": "v2", "prediction": "12", "target": 1},
        "prediction 0 must be a finite number",
    ),
    (
        REGRESSOR,
        {"model_version": "v2", "prediction": 1, "target": None},
        "target 0 must be a finite number",
    ),
]


@pytest.mark.parametrize(("schema", "body", "message"), BAD)
def test_bad_feedback_is_a_400_naming_the_problem(
    schema: FeatureSchema, body: Any, message: str
) -> None:
    with pytest.raises(InvalidInput) as error:
        decode_feedback(body, schema, "v2")
    assert message in str(error.value)


def test_each_row_is_judged_and_keeps_the_request_id_it_names() -> None:
    body = {
        "model_version": "v2",
        "predictions": ["benign", "malignant"],
        "targets": ["benign", "benign"],
        "request_ids": ["r-1", None],
    }
    rows = decode_feedback(body, CLASSIFIER, "v2").rows
    assert [(r.prediction, r.target, r.request_id, r.correct) for r in rows] == [
        ("benign", "benign", "r-1", True),
        ("malignant", "benign", None, False),
    ]
    single = {"model_version": "v1", "prediction": 10.0, "target": 12.5, "request_id": "r-9"}
    (row,) = decode_feedback(single, REGRESSOR, "v1").rows
    assert (row.request_id, row.abs_error, row.correct) == ("r-9", 2.5, None)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"request_ids": ["a"]}, "'request_ids' must be a list of 2 request ids"),
        ({"request_ids": "a,b"}, "'request_ids' must be a list of 2"),
        ({"request_id": "a"}, "'request_id' names one prediction"),
        ({"request_ids": ["a", 7]}, "request id 1 must be a string"),
        ({"request_ids": ["a", "x" * 257]}, "request id 1 must be a string of 1 to 256"),
    ],
)
def test_bad_request_ids_are_refused(extra: dict[str, Any], message: str) -> None:
    body = {"model_version": "v2", "predictions": ["benign"] * 2, "targets": ["benign"] * 2}
    with pytest.raises(InvalidInput, match=re.escape(message)):
        decode_feedback({**body, **extra}, CLASSIFIER, "v2")
