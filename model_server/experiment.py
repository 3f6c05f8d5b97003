"""Experiment mode: a control and a treatment version in one server, each user sticky to one.

A canary splits requests at random to answer "is the new revision safe?"; an experiment asks
"is the new model better for users?", so every request of a user must reach the same version
for the whole experiment. The variant is ``serving_common.experiment.assign`` of the user key
(the ``x-user-id`` header, or a request parameter) salted with the experiment's name: no state,
the same answer on every replica and worker. Requests that name a version in their path
(``/v2/models/NAME/versions/v4/infer``) get that version and are not exposures.

Outcomes come back through the feedback endpoint (``decode_outcomes``): a conversion (success
or failure), a non-negative value, or a true label (counted as accuracy feedback of the
variant's version), each tied to its variant by the user key (recomputed, so
any replica can count it) or by the variant or version the response named.

Part of the service core: it knows each side only as its version and metrics (``Side``), and
nothing of transports, request bodies or how versions are loaded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol

from kserve.errors import InvalidInput
from typing_extensions import TypeVar

from model_server.feedback import decode_feedback
from model_server.loading import ModelVersion
from model_server.metrics import ExperimentMetrics, ModelMetrics, count_unassigned, set_experiment
from model_server.schema import FeatureSchema
from model_server.settings import ModelServerSettings
from serving_common.experiment import VARIANTS, Variant, assign, hashed_user

MAX_USER_KEY = 256
"""Longest user key accepted (a longer one is a 400, not a hash of anything a client sends)."""
EXPERIMENT_HEADER = "x-experiment"
VARIANT_HEADER = "x-experiment-variant"

Headers = Mapping[str, str]
"""A request's headers (or gRPC metadata), by lower-case name."""


class Side(Protocol):
    """What an experiment needs of each side: its version, and its metrics for labels."""

    @property
    def model(self) -> ModelVersion: ...

    @property
    def metrics(self) -> ModelMetrics: ...


S = TypeVar("S", bound=Side, default=Side)
"""The service answering for each side (``model_server.service.ModelService``)."""


@dataclass(frozen=True)
class Assignment(Generic[S]):
    """Which side answers one request, and why."""

    variant: Variant
    side: S
    user_hash: str | None = None
    """The hashed user key (None: no key, or the path named the version)."""

    @property
    def assigned(self) -> bool:
        """Assigned by user key: an exposure when answered."""
        return self.user_hash is not None


class Experiment(Generic[S]):
    """Routes each inference request to the control's or the treatment's side (the service
    answering for each version)."""

    def __init__(self, settings: ModelServerSettings, control: S, treatment: S):
        assert settings.experiment is not None
        self.name = settings.experiment
        self.percent = settings.experiment_percent
        self.header = settings.experiment_user_header.lower()
        self.parameter = settings.experiment_user_parameter
        self.require_user = settings.experiment_require_user
        self.sides: dict[Variant, S] = {"control": control, "treatment": treatment}

    @property
    def control(self) -> S:
        return self.sides["control"]

    @property
    def treatment(self) -> S:
        return self.sides["treatment"]

    @functools.cached_property
    def metrics(self) -> dict[Variant, ExperimentMetrics]:
        """Bound on first use, once both versions are loaded (their versions are labels)."""
        name = self.control.model.name
        return {
            variant: ExperimentMetrics(name, side.model.version, self.name, variant)
            for variant, side in self.sides.items()
        }

    def publish(self) -> None:
        """``model_server_experiment_treatment_share`` for the loaded versions."""
        control, treatment = self.control.model, self.treatment.model
        set_experiment(control.name, self.name, control.version, treatment.version, self.percent)

    def variant_of_version(self, version: str) -> Variant | None:
        return next((v for v, s in self.sides.items() if s.model.version == version), None)

    def user_key(self, headers: Headers, document: Any) -> str | None:
        """The request's user key: the header, else the request parameter; None without."""
        value: Any = headers.get(self.header)
        where = f"the {self.header} header"
        if value is None:
            parameters = document.get("parameters") if isinstance(document, dict) else None
            value = parameters.get(self.parameter) if isinstance(parameters, dict) else None
            where = f"parameters.{self.parameter}"
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            elif value is not None and not isinstance(value, str):
                raise InvalidInput(f"{where} must be a string (the user key), got {value!r}")
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise InvalidInput(f"{where} is empty: send the user key, or leave it out")
        if len(value) > MAX_USER_KEY:
            raise InvalidInput(f"{where} is longer than {MAX_USER_KEY} characters")
        return str(value)

    def route(self, headers: Headers, document: Any, version: str | None) -> Assignment[S]:
        """The side that answers: the version the path names, else the user's variant, else
        (no user key) the control, or a 400 with --experiment-require-user."""
        if version is not None:
            variant = self.variant_of_version(version)
            assert variant is not None  # check_model refused other versions
            return Assignment(variant, self.sides[variant])
        user = self.user_key(headers, document)
        if user is None:
            count_unassigned(self.control.model.name, self.name, self.require_user)
            if self.require_user:
                raise InvalidInput(
                    f"experiment {self.name!r} needs a user key: send the {self.header} header "
                    f'or "parameters": {{"{self.parameter}": ...}}'
                )
            return Assignment("control", self.control)
        variant = assign(user, self.name, self.percent)
        return Assignment(variant, self.sides[variant], hashed_user(user, self.name))

    def response_headers(self, assignment: Assignment[S]) -> dict[str, str]:
        return {EXPERIMENT_HEADER: self.name, VARIANT_HEADER: assignment.variant}

    def answered(self, assignment: Assignment[S], status: int) -> None:
        """Count an exposure: an assigned request that got its prediction."""
        if assignment.assigned and 200 <= status < 300:
            self.metrics[assignment.variant].exposures.inc()

    def provenance(self, assignment: Assignment[S]) -> dict[str, Any]:
        """What a provenance line adds: the experiment, the variant, the hashed user key."""
        return {
            "experiment": self.name,
            "variant": assignment.variant,
            "user_hash": assignment.user_hash,
        }

    # -- outcomes ------------------------------------------------------------------------

    def outcomes(self, document: dict[str, Any], schema: FeatureSchema) -> Outcomes:
        """Decode and count an outcome report (see ``decode_outcomes``). True labels are
        checked and counted as the accuracy feedback of the variant's version is."""
        outcomes = decode_outcomes(document, self, schema.max_rows)
        labelled = {}
        for variant in VARIANTS:  # every label is checked before anything is counted
            pairs = outcomes.by_variant[variant].labels
            if pairs:
                version = self.sides[variant].model.version
                predictions, targets = (list(x) for x in zip(*pairs, strict=True))
                report = {"model_version": version, "predictions": predictions, "targets": targets}
                labelled[variant] = decode_feedback(report, schema, version)
        for variant in VARIANTS:
            tally = outcomes.by_variant[variant]
            self.metrics[variant].outcomes(tally.successes, tally.failures, tally.values)
            if variant in labelled:
                checked = labelled[variant]
                tally.correct, tally.incorrect = checked.correct, checked.incorrect
                judged = iter(checked.rows)
                for record in tally.records:
                    if record["outcome"] == "label":
                        row = next(judged)
                        record.update(
                            prediction=row.prediction,
                            target=row.target,
                            correct=row.correct,
                            abs_error=row.abs_error,
                        )
                side = self.sides[variant]
                side.metrics.feedback(checked.correct, checked.incorrect, checked.abs_errors)
        return outcomes


@dataclass
class Tally:
    """Outcomes of one variant in one report."""

    successes: int = 0
    failures: int = 0
    values: list[float] = field(default_factory=list)
    labels: list[tuple[Any, Any]] = field(default_factory=list)
    """(prediction, true label or value) pairs: accuracy feedback for the variant's version."""
    correct: int = 0
    incorrect: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    """Each outcome as the prediction log records it (``prediction_log.schema.OUTCOMES``'s
    fields, without the variant's and the report's)."""

    def summary(self) -> dict[str, Any]:
        body: dict[str, Any] = {"successes": self.successes, "failures": self.failures}
        if self.values:
            body["values"] = len(self.values)
        if self.labels:
            body["labels"] = len(self.labels)
        return body


@dataclass
class Outcomes:
    """A decoded outcome report."""

    by_variant: dict[Variant, Tally]

    @property
    def received(self) -> int:
        return sum(
            t.successes + t.failures + len(t.values) + len(t.labels)
            for t in self.by_variant.values()
        )


def decode_outcomes(
    document: dict[str, Any], experiment: Experiment[Any], max_rows: int
) -> Outcomes:
    """Validate an outcome report; raises ``InvalidInput`` naming the problem.

    ``{"experiment": NAME, "outcomes": [ITEM, ...]}``, or one ITEM's fields beside
    ``"experiment"``. An ITEM names its variant by the user key (``user_id``, the parameter
    name the server is configured with; the variant is recomputed), or by ``variant`` or
    ``model_version`` as the response said (``request_id`` may come along for the logs), and
    carries ``converted`` (true/false), ``value`` (a finite number, at least 0), or ``target``
    (the true label or value) with the ``prediction`` the response gave.
    """
    name = document.get("experiment")
    if name != experiment.name:
        raise InvalidInput(
            f"outcomes for experiment {name!r}, but this server runs {experiment.name!r}: "
            "outcomes of another experiment would be counted against the wrong versions"
        )
    items = document.get("outcomes")
    if items is None:
        items = [{k: v for k, v in document.items() if k != "experiment"}]
    if not isinstance(items, list) or not items:
        raise InvalidInput("'outcomes' must be a non-empty list of outcome objects")
    if len(items) > max_rows:
        raise InvalidInput(f"{len(items)} outcomes exceed the limit of {max_rows} per request")
    tallies: dict[Variant, Tally] = {v: Tally() for v in VARIANTS}
    for index, item in enumerate(items):
        variant, user = _variant_of(item, index, experiment)
        record = _count(item, index, tallies[variant])
        record["user_hash"] = hashed_user(user, experiment.name) if user is not None else None
        tallies[variant].records.append(record)
    return Outcomes(tallies)


def _count(item: dict[str, Any], index: int, tally: Tally) -> dict[str, Any]:
    """Add one validated outcome to its variant's tally; its record for the prediction log."""
    request_id = item.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 256):
        raise InvalidInput(f"outcome {index}: 'request_id' must be a string (at most 256)")
    converted, value = item.get("converted"), item.get("value")
    if sum(x is not None for x in (converted, value, item.get("target"))) != 1:
        raise InvalidInput(
            f"outcome {index}: send exactly one of 'converted' (true/false), 'value', or "
            "'target' (the true label, with the 'prediction' the response gave)"
        )
    if "target" in item:
        if "prediction" not in item:
            raise InvalidInput(f"outcome {index}: a 'target' needs the 'prediction' it judges")
        tally.labels.append((item["prediction"], item["target"]))
        return {"request_id": request_id, "outcome": "label"}  # judged in Experiment.outcomes
    if converted is not None:
        if not isinstance(converted, bool):
            raise InvalidInput(f"outcome {index}: 'converted' must be true or false")
        if converted:
            tally.successes += 1
        else:
            tally.failures += 1
        return {"request_id": request_id, "outcome": "conversion", "converted": converted}
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidInput(
            f"outcome {index}: 'value' must be a finite number at least 0 (counters only "
            f"add up), got {value!r}"
        )
    tally.values.append(float(value))
    return {"request_id": request_id, "outcome": "value", "value": float(value)}


def _variant_of(item: Any, index: int, experiment: Experiment[Any]) -> tuple[Variant, str | None]:
    """An outcome's variant (from its user key, else its variant or model_version), and the
    user key when it gave one."""
    if not isinstance(item, dict):
        raise InvalidInput(f"outcome {index} must be an object")
    user = item.get(experiment.parameter)
    named: Variant | None = None
    if "variant" in item:
        if item["variant"] not in VARIANTS:
            raise InvalidInput(f"outcome {index}: 'variant' must be control or treatment")
        named = item["variant"]
    elif "model_version" in item:
        named = experiment.variant_of_version(str(item["model_version"]))
        if named is None:
            versions = [s.model.version for s in experiment.sides.values()]
            raise InvalidInput(
                f"outcome {index}: model_version {item['model_version']!r} is not in this "
                f"experiment ({', '.join(versions)})"
            )
    if user is None:
        if named is None:
            raise InvalidInput(
                f"outcome {index}: send '{experiment.parameter}' (the user key), or the "
                "'variant' or 'model_version' the response named"
            )
        return named, None
    if isinstance(user, int) and not isinstance(user, bool):
        user = str(user)
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER_KEY:
        raise InvalidInput(f"outcome {index}: '{experiment.parameter}' must be a user key string")
    variant = assign(user.strip(), experiment.name, experiment.percent)
    if named is not None and named != variant:
        raise InvalidInput(
            f"outcome {index}: this user is in the {variant} of {experiment.name!r}, not the "
            f"{named}"
        )
    return variant, user.strip()
