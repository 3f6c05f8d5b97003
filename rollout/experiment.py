"""A/B experiment analysis: counts from Prometheus, statistics, and the decision.

The model server counts, per variant, exposures (answered requests assigned by user key) and
the outcomes clients report (``model_server.experiment``). ``read_counts`` sums each counter's
highest value over the window per series (so a pod that is gone still counts), and ``analyse``
compares treatment with control: rates (or means), absolute and relative lift with 95%
intervals, the fixed-horizon p-value, a sample-ratio-mismatch check, and the decision from an
always-valid p-value (mSPRT), which may be read every day without inflating false decisions.

The always-valid p-value is 1 / the mixture likelihood ratio at this look. The textbook form
takes the running minimum over all looks; one look's value is never smaller than that minimum,
so it is as valid and never decides earlier than the running minimum would.

``report_for`` runs the analysis with the settings' alpha, tau and metric, and ``show`` prints
its report. This module knows nothing of argparse, Kubernetes or how an experiment is started
and stopped (``rollout.experiment_cli``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from rollout.experiment_stats import (
    Arm,
    Decision,
    Values,
    compare,
    compare_means,
    msprt_likelihood_ratio,
    msprt_means,
    relative_interval,
    sample_ratio,
)
from rollout.output import Printer
from rollout.prometheus import Prometheus, selector
from rollout.settings import RolloutSettings

Metric = Literal["conversion", "value"]
SRM_ALPHA = 0.001
"""A sample-ratio p-value below this means assignment or counting is broken (the usual bar:
a real split this far off by chance is rarer than 1 in 1,000)."""
EXIT_SHIP, EXIT_ROLLBACK, EXIT_KEEP_RUNNING = 0, 3, 4
EXIT_FOR: dict[Decision, int] = {
    "ship": EXIT_SHIP,
    "rollback": EXIT_ROLLBACK,
    "keep-running": EXIT_KEEP_RUNNING,
}


@dataclass(frozen=True)
class Config:
    """A running experiment, as the model servers report it."""

    model: str
    experiment: str
    control_version: str
    treatment_version: str
    treatment_percent: float


@dataclass(frozen=True)
class VariantCounts:
    version: str
    exposures: int
    successes: int
    failures: int
    values: Values


@dataclass(frozen=True)
class Counts:
    config: Config
    control: VariantCounts
    treatment: VariantCounts


class NoExperiment(Exception):
    """No model server reports the experiment (not running, or not scraped)."""


def read_counts(
    prometheus: Prometheus,
    model: str,
    experiment: str,
    *,
    window: str = "30d",
    namespace: str | None = None,
) -> Counts:
    """Every counter of ``experiment`` over ``window``: per series its highest value (the
    count since that pod started), summed. A restarted container's counts before its restart
    are lost (its counters start again at 0); a pod that is gone still counts while its
    series is in the window. Raises :class:`NoExperiment`, or PrometheusError."""
    sel = selector(model, experiment, namespace, label="experiment")
    configs = prometheus.query_labelled(
        f"max by (control_version, treatment_version) "
        f"(last_over_time(model_server_experiment_treatment_share{{{sel}}}[{window}]))"
    )
    if not configs:
        raise NoExperiment(
            f"no model server reports experiment {experiment!r} of {model!r} in the last "
            f"{window} (model_server_experiment_treatment_share): not started, or not scraped"
        )
    if len(configs) > 1:
        pairs = ", ".join(f"{c['control_version']}/{c['treatment_version']}" for c, _ in configs)
        raise NoExperiment(
            f"experiment {experiment!r} ran with several version pairs ({pairs}): give each "
            "experiment its own name"
        )
    labels, share = configs[0]
    config = Config(
        model, experiment, labels["control_version"], labels["treatment_version"], share * 100
    )

    def by(metric: str, *keys: str) -> dict[tuple[str, ...], float]:
        rows = prometheus.query_labelled(
            f"sum by ({', '.join(keys)}) (max_over_time({metric}{{{sel}}}[{window}]))"
        )
        return {tuple(row.get(k, "") for k in keys): value for row, value in rows}

    exposures = by("model_server_experiment_exposures_total", "variant")
    outcomes = by("model_server_experiment_outcomes_total", "variant", "outcome")
    counts = by("model_server_experiment_value_count_total", "variant")
    sums = by("model_server_experiment_value_sum_total", "variant")
    squares = by("model_server_experiment_value_squares_total", "variant")

    def variant(name: str, version: str) -> VariantCounts:
        return VariantCounts(
            version=version,
            exposures=round(exposures.get((name,), 0.0)),
            successes=round(outcomes.get((name, "success"), 0.0)),
            failures=round(outcomes.get((name, "failure"), 0.0)),
            values=Values(
                round(counts.get((name,), 0.0)), sums.get((name,), 0.0), squares.get((name,), 0.0)
            ),
        )

    return Counts(
        config,
        variant("control", config.control_version),
        variant("treatment", config.treatment_version),
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def analyse(
    counts: Counts,
    *,
    metric: Metric | None = None,
    alpha: float = 0.05,
    tau: float = 0.05,
    min_outcomes: int = 100,
) -> dict[str, Any]:
    """The report ``experiment status`` prints (and ``-o json`` gives whole).

    ``metric``: conversion (success/failure outcomes; z-test) or value (numeric outcomes;
    Welch t-test); default: conversion when any conversion was reported. ``tau``: the
    mixture's spread, on the rate scale for conversions and in standard deviations for values.
    """
    control, treatment, config = counts.control, counts.treatment, counts.config
    if metric is None:
        converted = control.successes + control.failures + treatment.successes + treatment.failures
        metric = "conversion" if converted or not treatment.values.count else "value"
    chi_square, srm_p = sample_ratio(
        control.exposures, treatment.exposures, config.treatment_percent
    )
    total = control.exposures + treatment.exposures
    report: dict[str, Any] = {
        "model": config.model,
        "experiment": config.experiment,
        "metric": metric,
        "treatment_percent": config.treatment_percent,
        "sample_ratio": {
            "expected_treatment_share": config.treatment_percent / 100,
            "observed_treatment_share": treatment.exposures / total if total else None,
            "chi_square": chi_square,
            "p_value": srm_p,
            "mismatch": srm_p < SRM_ALPHA,
        },
        "alpha": alpha,
    }
    sides: dict[str, dict[str, Any]] = {}
    if metric == "conversion":
        arms = [Arm(v.successes + v.failures, v.successes) for v in (control, treatment)]
        comparison = compare(arms[0], arms[1])
        relative = relative_interval(arms[0], arms[1])
        for name, counted, arm in zip(
            ("control", "treatment"), (control, treatment), arms, strict=True
        ):
            sides[name] = {
                "version": counted.version,
                "exposures": counted.exposures,
                "outcomes": arm.exposures,
                "successes": arm.conversions,
                "rate": arm.rate if arm.exposures else None,
            }
        ratio = msprt_likelihood_ratio(arms[0], arms[1], tau)
        always_valid = min(1.0, 1.0 / ratio)
        lift, low, high = comparison.lift, comparison.lift_low, comparison.lift_high
        relative_lift, p_value = comparison.relative_lift, comparison.p_value
        fewest = min(a.exposures for a in arms)
    else:
        compared = compare_means(control.values, treatment.values)
        for name, counted in (("control", control), ("treatment", treatment)):
            sides[name] = {
                "version": counted.version,
                "exposures": counted.exposures,
                "outcomes": counted.values.count,
                "mean": counted.values.mean if counted.values.count else None,
                "sd": math.sqrt(counted.values.variance),
            }
        always_valid = msprt_means(control.values, treatment.values, tau)
        lift, low, high = compared.lift, compared.lift_low, compared.lift_high
        relative_lift, p_value = compared.relative_lift, compared.p_value
        base = compared.control_mean
        relative = (low / base, high / base) if base > 0 and math.isfinite(low) else None
        fewest = min(control.values.count, treatment.values.count)
    decision, reasons = _decide(
        always_valid, lift, alpha, fewest, min_outcomes, report["sample_ratio"]["mismatch"], srm_p
    )
    report.update(
        control=sides["control"],
        treatment=sides["treatment"],
        lift=lift,
        lift_ci=[_finite(low), _finite(high)],
        relative_lift=relative_lift,
        relative_lift_ci=list(relative) if relative is not None else None,
        p_value=p_value,
        always_valid_p_value=always_valid,
        decision=decision,
        reasons=reasons,
    )
    return report


def _decide(  # noqa: PLR0917 (the decision's inputs)
    always_valid: float,
    lift: float,
    alpha: float,
    fewest: int,
    min_outcomes: int,
    mismatch: bool,
    srm_p: float,
) -> tuple[Decision, list[str]]:
    if mismatch:
        return "keep-running", [
            f"sample ratio mismatch (p = {srm_p:.2g} < {SRM_ALPHA}): the observed split is not "
            "the configured one, so assignment or counting is broken and no lift can be "
            "trusted; find the cause (a client without user keys? a stale replica?)"
        ]
    if fewest < min_outcomes:
        return "keep-running", [
            f"{fewest} outcomes on the smaller side, fewer than --experiment-min-outcomes "
            f"{min_outcomes}"
        ]
    if always_valid > alpha:
        return "keep-running", [
            f"always-valid p = {always_valid:.3g} > alpha {alpha}: no difference shown yet"
        ]
    if lift > 0:
        return "ship", [f"treatment better: always-valid p = {always_valid:.3g} <= {alpha}"]
    return "rollback", [f"treatment worse: always-valid p = {always_valid:.3g} <= {alpha}"]


def _percent(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value * 100:+.{digits}f}%"


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.2f}"


def format_report(report: dict[str, Any]) -> list[str]:
    """The report as lines for people."""
    conversion = report["metric"] == "conversion"
    lines = [
        f"experiment {report['experiment']} on {report['model']}: {report['metric']}, "
        f"treatment share {report['treatment_percent']:g}%"
    ]
    for name in ("control", "treatment"):
        side = report[name]
        if conversion:
            rate = "n/a" if side["rate"] is None else f"{side['rate'] * 100:.2f}%"
            measured = f"{side['successes']}/{side['outcomes']} converted, rate {rate}"
        else:
            mean = "n/a" if side["mean"] is None else f"{side['mean']:.4g}"
            measured = f"{side['outcomes']} values, mean {mean} (sd {side['sd']:.4g})"
        lines.append(f"  {name:9} {side['version']:>6}: {side['exposures']} exposures, {measured}")
    low, high = report["lift_ci"]
    if conversion:
        points = [_points(v) for v in (report["lift"], low, high)]
        lift = f"  lift {points[0]} percentage points, 95% CI [{points[1]}, {points[2]}]"
    else:
        shown = [f"{v:+.4g}" if v is not None else "n/a" for v in (report["lift"], low, high)]
        lift = f"  lift {shown[0]}, 95% CI [{shown[1]}, {shown[2]}]"
    lines.append(lift)
    relative = report["relative_lift_ci"]
    lines.append(
        f"  relative lift {_percent(report['relative_lift'], 1)}"
        + (f", 95% CI [{_percent(relative[0], 1)}, {_percent(relative[1], 1)}]" if relative else "")
    )
    srm = report["sample_ratio"]
    observed = srm["observed_treatment_share"]
    lines.append(
        f"  p-value {report['p_value']:.3g} (fixed horizon), always-valid p "
        f"{report['always_valid_p_value']:.3g} (alpha {report['alpha']})"
    )
    lines.append(
        f"  sample ratio: treatment {'n/a' if observed is None else f'{observed * 100:.2f}%'} "
        f"observed vs {srm['expected_treatment_share'] * 100:g}% configured, chi-square "
        f"{srm['chi_square']:.2f}, p {srm['p_value']:.3g}"
        + (" MISMATCH" if srm["mismatch"] else " ok")
    )
    lines.append(f"  decision: {report['decision'].upper()}")
    lines.extend(f"    - {reason}" for reason in report["reasons"])
    return lines


def report_for(counts: Any, settings: RolloutSettings) -> dict[str, Any]:
    return analyse(
        counts,
        metric=settings.experiment_metric,
        alpha=settings.experiment_alpha,
        tau=settings.experiment_tau,
        min_outcomes=settings.experiment_min_outcomes,
    )


def show(report: dict[str, Any], printer: Printer) -> None:
    """The report: one JSON object (``-o json``), or lines for people."""
    if printer.output == "json":
        print(json.dumps(report, default=str), file=printer.stream, flush=True)
        return
    for line in format_report(report):
        print(line, file=printer.stream)
    printer.stream.flush()
