"""Write the Grafana dashboard ``monitoring/dashboards/model-serving.json`` from code.

    python -m scripts.dashboard           # rewrite the JSON
    python -m scripts.dashboard --check   # exit 1 when the JSON is stale

One place defines every panel and its PromQL, so the integration tests can evaluate exactly
what Grafana will (``expressions()``). The dashboard has a fixed UID and is templated on the
Prometheus data source, namespace, model and version.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.generated import write_or_check

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "monitoring" / "dashboards" / "model-serving.json"
UID = "model-serving"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'namespace=~"$namespace", model_name=~"$model", model_version=~"$version"'
MODEL_SEL = 'namespace=~"$namespace", model_name=~"$model"'
TRAINER_SEL = 'model_name=~"$model"'
REQ = f"model_server_requests_total{{{SEL}}}"
# Server errors: HTTP 5xx and, over gRPC, the status names that map to 5xx.
SERVER_ERRORS = "5..|INTERNAL|UNKNOWN|DATA_LOSS|UNAVAILABLE|DEADLINE_EXCEEDED"
ERR = f'model_server_requests_total{{{SEL}, code=~"{SERVER_ERRORS}"}}'
SHED = f"model_server_requests_shed_total{{{SEL}}}"
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str = "none"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    field_defaults: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[dict[str, Any], ...] = ()


def quantiles(metric: str, by: str = "model_version") -> tuple[Target, ...]:
    return tuple(
        Target(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{SEL}}}[{RATE}])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    )


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Traffic: control and treatment side by side",
        [
            Panel(
                "Requests per second by version",
                "Inference requests answered, all status codes, per model version.",
                (Target(f"sum by (model_version) (rate({REQ}[{RATE}]))", "{{model_version}}"),),
                unit="reqps",
                width=8,
            ),
            Panel(
                "Traffic share by version",
                "Each version's share of the model's requests: the canary split as clients see it.",
                (
                    Target(
                        f"sum by (model_version) (rate({REQ}[{RATE}])) / ignoring (model_version)"
                        f" group_left () sum (rate({REQ}[{RATE}]))",
                        "{{model_version}}",
                    ),
                ),
                unit="percentunit",
                width=8,
                field_defaults={"max": 1, "min": 0},
            ),
            Panel(
                "5xx error ratio by version",
                "Share of requests answered with a 5xx (client mistakes are 4xx and not counted).",
                (
                    Target(
                        f"(sum by (model_version) (rate({ERR}[{RATE}])) or 0 * "
                        f"sum by (model_version) (rate({REQ}[{RATE}]))) / "
                        f"sum by (model_version) (rate({REQ}[{RATE}]))",
                        "{{model_version}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Requests by status code",
                "Per version and HTTP status: 400s are bad client input, 503 not ready or shed.",
                (
                    Target(
                        f"sum by (model_version, code) (rate({REQ}[{RATE}]))",
                        "{{model_version}} {{code}}",
                    ),
                ),
                unit="reqps",
                width=16,
            ),
            Panel(
                "Shed load by version",
                "Share of inference requests turned away with 503 + Retry-After because a worker "
                "was at --max-concurrency: capacity, kept out of the availability SLO.",
                (
                    Target(
                        f"(sum by (model_version) (rate({SHED}[{RATE}])) or 0 * "
                        f"sum by (model_version) (rate({REQ}[{RATE}]))) / "
                        f"sum by (model_version) (rate({REQ}[{RATE}]))",
                        "{{model_version}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
        ],
    ),
    (
        "Latency",
        [
            Panel(
                "Request latency by version (p50, p95, p99)",
                "Whole request: parsing, validation, inference and encoding.",
                quantiles("model_server_request_duration_seconds"),
                unit="s",
            ),
            Panel(
                "Inference-only latency by version (p50, p95, p99)",
                "Time in the model's predict only.",
                quantiles("model_server_inference_duration_seconds"),
                unit="s",
            ),
            Panel(
                "Batch size (rows per request)",
                "Rows per inference request, p50/p95/p99 per version.",
                quantiles("model_server_batch_rows"),
                unit="none",
                width=24,
            ),
        ],
    ),
    (
        "Model behaviour",
        [
            Panel(
                "Predictions per class by version",
                "Predicted classes per second (classifiers): a shifted mix shows up here first.",
                (
                    Target(
                        f"sum by (model_version, predicted_class) "
                        f"(rate(model_server_predictions_total{{{SEL}}}[{RATE}]))",
                        "{{model_version}} {{predicted_class}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Feature drift (PSI) by feature",
                "Population stability index against the training data: over 0.1 moderate, "
                "over 0.25 major. __prediction__ is the predictions' own distribution.",
                (
                    Target(
                        f"max by (model_version, feature) "
                        f"(model_server_feature_drift_score{{{SEL}}})",
                        "{{model_version}} {{feature}}",
                    ),
                ),
                unit="none",
            ),
            Panel(
                "Missing values imputed by feature (share of rows)",
                "Share of answered rows in which each feature was missing (null, NaN, or an "
                "empty string for a text feature) and imputed as in training: the median, the most "
                "frequent category. A feature that rises here has an upstream that stopped "
                "sending it; the model answers, but from the training median.",
                (
                    Target(
                        "sum by (model_version, feature) (rate(model_server_missing_values_total"
                        f"{{{SEL}}}[{RATE}])) / ignoring (feature) group_left () "
                        "sum by (model_version) (rate(model_server_batch_rows_sum"
                        f"{{{SEL}}}[{RATE}]))",
                        "{{model_version}} {{feature}}",
                    ),
                ),
                unit="percentunit",
                width=24,
            ),
            Panel(
                "Live accuracy by version (feedback)",
                "Share of predictions that clients reported correct, per version.",
                (
                    Target(
                        f"sum by (model_version) (rate(model_server_feedback_total"
                        f'{{{SEL}, outcome="correct"}}[{RATE}])) / sum by (model_version) '
                        f"(rate(model_server_feedback_total"
                        f'{{{SEL}, outcome=~"correct|incorrect"}}[{RATE}]))',
                        "{{model_version}}",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Model info",
                "Which version each revision serves, with which scikit-learn, and which engine "
                "computes it (onnx: ONNX Runtime on the checked model.onnx; sklearn: the "
                "pipeline).",
                (
                    Target(
                        f"max by (model_name, model_version, revision, sklearn_version, engine) "
                        f"(model_server_model_info{{{SEL}}})",
                        instant=True,
                    ),
                ),
                kind="table",
            ),
        ],
    ),
    (
        "Service levels (30 days)",
        [
            Panel(
                "Availability error budget remaining",
                "SLO: 99.9% of requests without a 5xx over 30 days. 100% untouched, 0% spent.",
                (
                    Target(
                        f"1 - (sum by (model_name) (increase({ERR}[30d])) / "
                        f"sum by (model_name) (increase({REQ}[30d]))) / 0.001",
                        "{{model_name}}",
                        instant=True,
                    ),
                ),
                unit="percentunit",
                kind="stat",
            ),
            Panel(
                "Latency error budget remaining",
                "SLO: 99% of requests under 200 ms over 30 days.",
                (
                    Target(
                        "1 - (1 - sum by (model_name) (increase("
                        f'model_server_request_duration_seconds_bucket{{{SEL}, le="0.2"}}[30d])) / '
                        "sum by (model_name) (increase("
                        f"model_server_request_duration_seconds_count{{{SEL}}}[30d]))) / 0.01",
                        "{{model_name}}",
                        instant=True,
                    ),
                ),
                unit="percentunit",
                kind="stat",
            ),
        ],
    ),
    (
        "Experiments: variants side by side (each user sticky to one)",
        [
            Panel(
                "Variant split: observed vs configured",
                "Share of exposures (answered requests assigned by user key) in the treatment "
                "over the last hour, next to the configured share of users. A gap the sample "
                "ratio alert confirms means assignment or counting is broken.",
                (
                    Target(
                        "sum by (experiment) (increase(model_server_experiment_exposures_total"
                        f'{{{MODEL_SEL}, variant="treatment"}}[1h])) / sum by (experiment) '
                        f"(increase(model_server_experiment_exposures_total{{{MODEL_SEL}}}[1h]))",
                        "{{experiment}} observed",
                    ),
                    Target(
                        "max by (experiment) "
                        f"(model_server_experiment_treatment_share{{{MODEL_SEL}}})",
                        "{{experiment}} configured",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Exposures per second by variant",
                "Answered requests assigned by user key, per variant; unassigned requests "
                "(no user key: answered by the control or refused) beside them.",
                (
                    Target(
                        "sum by (experiment, variant) (rate("
                        f"model_server_experiment_exposures_total{{{MODEL_SEL}}}[{RATE}]))",
                        "{{experiment}} {{variant}}",
                    ),
                    Target(
                        "sum by (experiment, outcome) (rate("
                        f"model_server_experiment_unassigned_total{{{MODEL_SEL}}}[{RATE}]))",
                        "{{experiment}} unassigned ({{outcome}})",
                    ),
                ),
                unit="reqps",
                width=8,
            ),
            Panel(
                "Sample ratio chi-square (1 h)",
                "Observed split against the configured share; above 10.83 (p < 0.001) the "
                "ModelServerExperimentSampleRatioMismatch alert fires.",
                (
                    Target(
                        "max by (experiment) "
                        f"(experiment:model_server_experiment_sample_ratio:chi2_1h{{{MODEL_SEL}}})",
                        "{{experiment}}",
                        instant=True,
                    ),
                ),
                kind="stat",
                width=8,
            ),
            Panel(
                "Conversion rate by variant (1 h)",
                "Successes over reported conversion outcomes, per variant, over the last hour. "
                "The decision comes from model-rollout experiment status, which tests the whole "
                "experiment with an always-valid p-value: do not stop on this curve.",
                (
                    Target(
                        "sum by (experiment, variant) (increase("
                        f'model_server_experiment_outcomes_total{{{MODEL_SEL}, outcome="success"}}'
                        "[1h])) / sum by (experiment, variant) (increase("
                        f"model_server_experiment_outcomes_total{{{MODEL_SEL}}}[1h]))",
                        "{{experiment}} {{variant}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Mean outcome value by variant (1 h)",
                "Mean of the numeric outcomes reported per variant over the last hour.",
                (
                    Target(
                        "sum by (experiment, variant) (increase("
                        f"model_server_experiment_value_sum_total{{{MODEL_SEL}}}[1h])) / "
                        "sum by (experiment, variant) (increase("
                        f"model_server_experiment_value_count_total{{{MODEL_SEL}}}[1h]))",
                        "{{experiment}} {{variant}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                "5xx ratio by variant",
                "Server errors per variant; the treatment over twice the control's plus one "
                "point fires ModelServerExperimentTreatmentErrors.",
                (
                    Target(
                        "max by (experiment, variant) "
                        f"(experiment:model_server_requests_errors:ratio_rate5m{{{MODEL_SEL}}})",
                        "{{experiment}} {{variant}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
        ],
    ),
    (
        "Prediction log: durable records of requests and outcomes",
        [
            Panel(
                "Prediction log",
                "Records written per second to the prediction log, per model (all versions). "
                "Dropped records are lost: buffer_full (the sink was slow or down and the "
                "in-memory buffer full), write_failed (a payload that could not be encoded; "
                "records lost at a stop show only in the server log); any drop fires "
                "ModelServerPredictionLogDropping; a store that hangs fires "
                "ModelServerPredictionLogStalled. Write errors (right axis) are failed "
                "file writes whose records are held in memory and retried at each flush: for 10 "
                "minutes they fire ModelServerPredictionLogWriteFailing.",
                (
                    Target(
                        "sum by (model_name) (rate("
                        f"model_server_prediction_log_records_total{{{MODEL_SEL}}}[{RATE}]))",
                        "{{model_name}} written",
                    ),
                    Target(
                        "sum by (model_name, reason) (rate("
                        f"model_server_prediction_log_dropped_total{{{MODEL_SEL}}}[{RATE}]))",
                        "{{model_name}} dropped ({{reason}})",
                    ),
                    Target(
                        "sum by (model_name) (rate("
                        f"model_server_prediction_log_write_errors_total{{{MODEL_SEL}}}[{RATE}]))",
                        "{{model_name}} write errors",
                    ),
                ),
                unit="ops",
                width=24,
                field_defaults={"min": 0, "custom": {"axisLabel": "records/s"}},
                overrides=(
                    {
                        "matcher": {"id": "byFrameRefID", "options": "C"},
                        "properties": [
                            {"id": "custom.axisPlacement", "value": "right"},
                            {"id": "custom.axisLabel", "value": "failed writes/s"},
                            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                        ],
                    },
                ),
            ),
        ],
    ),
    (
        "Training",
        [
            Panel(
                "Time since the last successful training",
                "From the trainer's Pushgateway metrics; the stale alert fires after 2 days.",
                (
                    Target(
                        f"time() - max by (model_name) "
                        f"(trainer_last_success_timestamp_seconds{{{TRAINER_SEL}}})",
                        "{{model_name}}",
                        instant=True,
                    ),
                ),
                unit="s",
                kind="stat",
                width=8,
            ),
            Panel(
                "Last training scores",
                "Held-out metrics of the last registered version.",
                (
                    Target(
                        f"max by (model_name, model_version, metric) "
                        f"(trainer_model_score{{{TRAINER_SEL}}})",
                        instant=True,
                    ),
                ),
                kind="table",
                width=8,
            ),
            Panel(
                "Trainer runs by outcome (1 day)",
                "Registered, rejected by the champion gate, or failed.",
                (
                    Target(
                        f"sum by (model_name, outcome) "
                        f"(increase(trainer_runs_total{{{TRAINER_SEL}}}[1d]))",
                        "{{model_name}} {{outcome}}",
                        instant=True,
                    ),
                ),
                kind="stat",
                width=8,
            ),
        ],
    ),
]


def expressions() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every panel target."""
    for _, panels in ROWS:
        for panel in panels:
            for target in panel.targets:
                yield panel.title, target.expr


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"},
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "refresh": 2,
        "sort": 1,
        "current": {"text": ["All"], "value": ["$__all"]},
        "hide": 0,
    }


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {"unit": panel.unit, **panel.field_defaults},
            "overrides": list(panel.overrides),
        },
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": t.expr,
                "legendFormat": t.legend or "__auto",
                "instant": t.instant,
                "range": not t.instant,
                **({"format": "table"} if panel.kind == "table" else {}),
            }
            for i, t in enumerate(panel.targets)
        ],
    }
    if panel.kind == "timeseries":
        body["options"] = {
            "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    return body


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id, y = 1, 0
    for title, row in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id, y, x = panel_id + 1, y + 1, 0
        for panel in row:
            if x + panel.width > 24:
                x, y = 0, y + panel.height
            panels.append(_panel(panel, panel_id, x, y))
            panel_id, x = panel_id + 1, x + panel.width
        y += row[-1].height
    return {
        "uid": UID,
        "title": "Model serving",
        "description": "Generated by `python -m scripts.dashboard` from scripts/dashboard.py: "
        "do not edit by hand.",
        "tags": ["model-serving", "kserve", "scikit-learn"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                },
                _variable(
                    "namespace", "Namespace", "label_values(model_server_model_info, namespace)"
                ),
                _variable(
                    "model",
                    "Model",
                    'label_values(model_server_model_info{namespace=~"$namespace"}, model_name)',
                ),
                _variable(
                    "version",
                    "Version",
                    f"label_values(model_server_model_info{{{MODEL_SEL}}}, model_version)",
                ),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.dashboard",
        description="Write the Grafana dashboard monitoring/dashboards/model-serving.json.",
        epilog="exit codes: 0 written or up to date, 1 stale (--check)",
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    return write_or_check(
        OUTPUT, render(), check=args.check, root=ROOT, regenerate="make dashboard"
    )


if __name__ == "__main__":
    sys.exit(main())
