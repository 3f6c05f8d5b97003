"""Experiment mode's routing and outcome reports, without a server (the integration tests run
the real one): which side answers, what is refused and why."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kserve.errors import InvalidInput
from pydantic import ValidationError

from model_server.experiment import Experiment, decode_outcomes
from model_server.loading import treatment_settings
from model_server.schema import FeatureSchema
from model_server.settings import ModelServerSettings
from serving_common.experiment import assign, hashed_user


def settings(**extra: Any) -> ModelServerSettings:
    values: dict[str, Any] = {
        "registry_uri": "/tmp/registry",
        "model_name": "churn",
        "model_version": "v3",
        "experiment": "checkout",
        "experiment_treatment": "v4",
        "experiment_percent": 30,
        **extra,
    }
    return ModelServerSettings(**values)


def side(version: str) -> Any:
    return SimpleNamespace(model=SimpleNamespace(name="churn", version=version))


def experiment(**extra: Any) -> Experiment:
    return Experiment(settings(**extra), side("v3"), side("v4"))


def users_in(variant: str, count: int = 3) -> list[str]:
    found = [u for u in (f"user-{i}" for i in range(200)) if assign(u, "checkout", 30) == variant]
    return found[:count]


def test_header_assigns_the_users_variant_and_a_hashed_key() -> None:
    exp = experiment()
    for variant in ("control", "treatment"):
        for user in users_in(variant):
            chosen = exp.route({"x-user-id": user}, {}, None)
            assert chosen.variant == variant
            assert chosen.side is exp.sides[variant]
            assert chosen.user_hash == hashed_user(user, "checkout")
            assert user not in str(exp.provenance(chosen))
            assert chosen.assigned


def test_parameter_is_read_when_the_header_is_absent_and_the_header_wins() -> None:
    exp = experiment()
    treated, controlled = users_in("treatment", 1)[0], users_in("control", 1)[0]
    document = {"parameters": {"user_id": treated}}
    assert exp.route({}, document, None).variant == "treatment"
    assert exp.route({"x-user-id": controlled}, document, None).variant == "control"
    number = next(i for i in range(200) if assign(str(i), "checkout", 30) == "treatment")
    assert exp.route({}, {"parameters": {"user_id": number}}, None).variant == "treatment"


def test_key_names_are_configurable() -> None:
    exp = experiment(experiment_user_header="X-Customer", experiment_user_parameter="customer")
    user = users_in("treatment", 1)[0]
    assert exp.route({"x-customer": user}, {}, None).variant == "treatment"
    assert exp.route({}, {"parameters": {"customer": user}}, None).variant == "treatment"
    assert not exp.route({"x-user-id": user}, {}, None).assigned  # the default name is off


def test_without_a_key_control_answers_unassigned_or_the_request_is_refused() -> None:
    chosen = experiment().route({}, {"inputs": []}, None)
    assert chosen.variant == "control"
    assert not chosen.assigned
    with pytest.raises(InvalidInput, match="needs a user key: send the x-user-id header"):
        experiment(experiment_require_user=True).route({}, {}, None)


@pytest.mark.parametrize(
    ("headers", "document", "message"),
    [
        ({"x-user-id": "  "}, {}, "the x-user-id header is empty"),
        ({"x-user-id": "u" * 300}, {}, "longer than 256"),
        ({}, {"parameters": {"user_id": ["a"]}}, "parameters.user_id must be a string"),
        ({}, {"parameters": {"user_id": True}}, "parameters.user_id must be a string"),
    ],
)
def test_bad_user_keys_are_400s(headers: dict[str, str], document: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        experiment().route(headers, document, None)


def test_a_version_in_the_path_is_answered_by_it_and_is_not_an_exposure() -> None:
    exp = experiment()
    user = users_in("control", 1)[0]
    chosen = exp.route({"x-user-id": user}, {}, "v4")
    assert chosen.variant == "treatment"
    assert not chosen.assigned


def test_outcomes_by_user_key_variant_or_version() -> None:
    exp = experiment()
    treated, controlled = users_in("treatment", 2), users_in("control", 1)
    report = decode_outcomes(
        {
            "experiment": "checkout",
            "outcomes": [
                {"user_id": treated[0], "converted": True},
                {"user_id": treated[1], "converted": False},
                {"user_id": controlled[0], "value": 12.5},
                {"variant": "control", "converted": True, "request_id": "abc"},
                {"model_version": "v4", "value": 0},
                {"variant": "treatment", "prediction": "yes", "target": "no"},
            ],
        },
        exp,
        100,
    )
    control, treatment = report.by_variant["control"], report.by_variant["treatment"]
    assert (control.successes, control.failures, control.values) == (1, 0, [12.5])
    assert (treatment.successes, treatment.failures, treatment.values) == (1, 1, [0.0])
    assert treatment.labels == [("yes", "no")]
    assert report.received == 6
    assert [r["outcome"] for r in control.records] == ["value", "conversion"]
    assert control.records[0]["user_hash"] == hashed_user(controlled[0], "checkout")
    assert control.records[1] == {
        "request_id": "abc",
        "outcome": "conversion",
        "converted": True,
        "user_hash": None,
    }
    assert [r.get("converted") for r in treatment.records[:2]] == [True, False]
    assert treatment.records[2]["value"] == 0.0
    assert treatment.records[3]["outcome"] == "label"
    single_report = {"experiment": "checkout", "variant": "treatment", "converted": True}
    single = decode_outcomes(single_report, exp, 10)
    assert single.by_variant["treatment"].successes == 1


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"experiment": "other", "variant": "control", "converted": True}, "runs 'checkout'"),
        ({"experiment": "checkout", "outcomes": []}, "non-empty list"),
        ({"experiment": "checkout", "converted": True}, "send 'user_id'"),
        ({"experiment": "checkout", "variant": "a", "converted": True}, "control or treatment"),
        ({"experiment": "checkout", "model_version": "v9", "value": 1}, "not in this experiment"),
        ({"experiment": "checkout", "variant": "control"}, "exactly one of 'converted'"),
        ({"experiment": "checkout", "variant": "control", "target": 1}, "needs the 'prediction'"),
        (
            {"experiment": "checkout", "variant": "control", "target": 1, "value": 2},
            "exactly one of",
        ),
        ({"experiment": "checkout", "variant": "control", "converted": 1}, "true or false"),
        ({"experiment": "checkout", "variant": "control", "value": -2}, "at least 0"),
        ({"experiment": "checkout", "variant": "control", "value": "1"}, "at least 0"),
        ({"experiment": "checkout", "outcomes": ["x"]}, "outcome 0 must be an object"),
    ],
)
def test_bad_outcome_reports_name_the_problem(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_outcomes(document, experiment(), 100)


def test_an_outcome_naming_the_other_variant_than_its_user_is_refused() -> None:
    user = users_in("control", 1)[0]
    document = {"experiment": "checkout", "user_id": user, "variant": "treatment", "value": 1}
    with pytest.raises(InvalidInput, match="this user is in the control"):
        decode_outcomes(document, experiment(), 100)
    with pytest.raises(InvalidInput, match="exceed the limit of 1"):
        decode_outcomes({"experiment": "checkout", "outcomes": [{}, {}]}, experiment(), 1)


def test_settings_check_the_experiment() -> None:
    with pytest.raises(ValidationError, match="needs --experiment-treatment"):
        settings(experiment_treatment=None)
    with pytest.raises(ValidationError, match="needs --experiment "):
        settings(experiment=None)
    with pytest.raises(ValidationError, match="must be a registry version"):
        settings(experiment_treatment="gs://bucket/churn/v4")
    with pytest.raises(ValidationError, match="experiment"):
        settings(experiment="Not A Label")
    with pytest.raises(ValidationError, match="experiment_percent"):
        settings(experiment_percent=101)
    with pytest.raises(ValidationError, match="do not mix"):
        settings(enable_model_repository=True)


def test_the_treatment_loads_like_the_control_from_its_own_version() -> None:
    registry = treatment_settings(settings())
    assert (registry.registry_uri, registry.model_version) == ("/tmp/registry", "v4")
    directory = treatment_settings(
        settings(registry_uri=None, model_dir="/mnt/models", experiment_treatment="s3://b/m/v4")
    )
    assert directory.model_dir == "s3://b/m/v4"


def test_labels_in_outcomes_are_judged_in_their_records() -> None:
    """Label outcomes are recorded with the judgement the accuracy metrics count."""
    sides = []
    for version in ("v3", "v4"):
        metrics = SimpleNamespace(feedback=lambda *_: None)
        sides.append(
            SimpleNamespace(model=SimpleNamespace(name="churn", version=version), metrics=metrics)
        )
    exp = Experiment(settings(), sides[0], sides[1])
    quiet: Any = SimpleNamespace(outcomes=lambda *_: None)
    exp.metrics = {"control": quiet, "treatment": quiet}
    schema = FeatureSchema(("a",), frozenset(), ("no", "yes"), max_rows=10)
    (user,) = users_in("treatment", 1)
    document = {
        "experiment": "checkout",
        "outcomes": [
            {"user_id": user, "prediction": "yes", "target": "no", "request_id": "r-1"},
            {"user_id": user, "converted": True},
            {"user_id": user, "prediction": "no", "target": "no"},
        ],
    }
    records = exp.outcomes(document, schema).by_variant["treatment"].records
    assert [(r["outcome"], r.get("correct"), r["request_id"]) for r in records] == [
        ("label", False, "r-1"),
        ("conversion", None, None),
        ("label", True, None),
    ]
    assert {r["user_hash"] for r in records} == {hashed_user(user, "checkout")}
