"""Rollout settings: ``ROLLOUT_*`` environment variables or ``--kebab-case`` flags.

``RolloutSettings`` and how they become flags (``add_settings``) and come back from the parsed
arguments (``settings_from``). Built once in ``__main__`` and passed down, it knows nothing of
the commands, the analysis, Kubernetes or Prometheus.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Collection
from typing import Any, Literal, get_args, get_origin

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rollout.decision import Policy


class RolloutSettings(BaseSettings):
    """Step a KServe canary forward on evidence from Prometheus, or roll it back."""

    model_config = SettingsConfigDict(
        env_prefix="ROLLOUT_", use_attribute_docstrings=True, extra="ignore"
    )

    namespace: str = "default"
    """Namespace of the InferenceService (like kubectl's -n)."""
    context: str | None = None
    """kubeconfig context to use (default: the current one)."""
    kubeconfig: str | None = None
    """kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)."""
    prometheus_url: str = "http://127.0.0.1:9090"
    """Prometheus to read control and treatment metrics from."""
    output: Literal["text", "json"] = "text"
    """text for people, json (one object per line) for scripts."""
    dry_run: bool = False
    """Print the patch (and the equivalent kubectl command) instead of sending it."""
    steps: list[int] = Field(default_factory=lambda: [10, 25, 50, 100])
    """Canary percentages, in order (comma-separated)."""
    interval_seconds: float = Field(default=300.0, gt=0)
    """Time at each step before it is analysed."""
    analysis_window: str = Field(default="5m", pattern=r"^\d+[smh]$")
    """PromQL range the checks look back over (e.g. 5m)."""
    min_requests: int = Field(default=100, ge=1)
    """Fewest requests per side in the window before a verdict (fewer: keep running)."""
    threshold: int = Field(default=2, ge=1)
    """Failed analysis rounds before rolling back."""
    max_error_ratio: float = Field(default=0.01, ge=0, le=1)
    """Treatment's largest share of 5xx answers."""
    max_error_ratio_increase: float = Field(default=0.005, ge=0, le=1)
    """How much the treatment's 5xx share may exceed control's."""
    max_p95_ms: float = Field(default=200.0, gt=0)
    """Treatment's largest p95 latency."""
    max_p99_ms: float = Field(default=500.0, gt=0)
    """Treatment's largest p99 latency."""
    max_latency_ratio: float = Field(default=1.5, ge=1)
    """Treatment's p95 may be at most this times control's (plus 10 ms)."""
    accuracy_confidence: float = Field(default=0.95, gt=0.5, lt=1)
    """Confidence of the live-accuracy z-test (feedback counters)."""
    min_feedback: int = Field(default=50, ge=1)
    """Fewest feedback outcomes per side before accuracy is judged."""
    ready_deadline_seconds: float = Field(default=600.0, gt=0)
    """A treatment revision not ready by then is rolled back."""
    max_rounds: int = Field(default=100, ge=1)
    """Analysis rounds after which a rollout that neither passed nor failed halts."""
    custom_query: list[str] = Field(default_factory=list)
    """Extra check, repeatable: NAME=PROMQL<=MAX or NAME=PROMQL>=MIN ($model, $version,
    $namespace, $window substituted)."""
    experiment_alpha: float = Field(default=0.05, gt=0, lt=0.5)
    """Experiments: the false-decision rate the always-valid p-value holds, however often
    the status is read."""
    experiment_min_outcomes: int = Field(default=100, ge=1)
    """Experiments: fewest outcomes on each side before ship or rollback."""
    experiment_tau: float = Field(default=0.05, gt=0)
    """Experiments: spread of the mSPRT mixture, the size of effect it is most sensitive to
    (conversion rate points for conversions, standard deviations for values)."""
    experiment_metric: Literal["conversion", "value"] | None = None
    """Experiments: compare conversions (z-test) or numeric values (Welch t-test); default:
    conversions when any were reported."""
    experiment_window: str = Field(default="30d", pattern=r"^\d+[smhdw]$")
    """Experiments: how far back Prometheus is read; longer than the experiment has run."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    """Log level (progress is printed regardless)."""

    @field_validator("steps", mode="before")
    @classmethod
    def _split_steps(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [int(part) for part in value.split(",") if part.strip()]
        return value

    def policy(self) -> Policy:
        return Policy(
            steps=tuple(self.steps),
            min_requests=self.min_requests,
            threshold=self.threshold,
            max_error_ratio=self.max_error_ratio,
            max_error_ratio_increase=self.max_error_ratio_increase,
            max_p95_seconds=self.max_p95_ms / 1000,
            max_p99_seconds=self.max_p99_ms / 1000,
            max_latency_ratio=self.max_latency_ratio,
            accuracy_confidence=self.accuracy_confidence,
            min_feedback=self.min_feedback,
            ready_deadline_seconds=self.ready_deadline_seconds,
        )


SHORT = {"namespace": ("-n",), "output": ("-o",)}
"""kubectl's short flags for the settings that have one."""


class _HelpAll(argparse.Action):
    """``--help-all``: the command's help with every setting listed, then exit."""

    def __init__(
        self, option_strings: list[str], dest: str, hidden: dict[argparse.Action, str]
    ) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="show this help with every setting, then exit",
        )
        self.hidden = hidden

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        for action, text in self.hidden.items():
            action.help = text
        parser.print_help()
        parser.exit()


def add_settings(
    parser: argparse.ArgumentParser,
    suppress: bool = False,
    shown: Collection[str] | None = None,
) -> None:
    """Every RolloutSettings field as a --kebab-case flag (default: environment, then default).

    They are accepted before and after the command, as kubectl's are (``model-rollout -n models
    status NAME``); on a command's parser they default to SUPPRESS so that a flag given before
    the command is not reset to None by the command's parser. With ``shown`` (field names), the
    parser's help lists only those, after the command's own flags: the rest are accepted all
    the same, and ``--help-all`` lists every one."""
    fields = RolloutSettings.model_fields
    note = None
    if shown is not None:
        note = textwrap.fill(
            f"The ones this command uses most. The other {len(fields) - len(shown)} settings "
            "(thresholds, latency limits, custom queries, ...) are accepted here too, before "
            "or after the command: --help-all lists every setting.",
            76,
        )
    group = parser.add_argument_group("settings (each also ROLLOUT_<NAME>)", note)
    unset = argparse.SUPPRESS if suppress else None
    hidden: dict[argparse.Action, str] = {}
    for name, info in fields.items():
        flags = [*SHORT.get(name, ()), "--" + name.replace("_", "-")]
        helptext = (info.description or "").replace("%", "%%")
        default = info.get_default(call_default_factory=True)
        helptext += f" (default: {default})" if default not in (None, []) else ""
        if info.annotation is bool:
            action = group.add_argument(
                *flags,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=unset,
                help=helptext,
            )
        elif get_origin(info.annotation) is list and name == "custom_query":
            action = group.add_argument(
                *flags, dest=name, action="append", metavar="CHECK", default=unset, help=helptext
            )
        else:
            choices = get_args(info.annotation) if get_origin(info.annotation) is Literal else None
            action = group.add_argument(
                *flags,
                dest=name,
                metavar=None if choices else name.upper(),
                choices=choices,
                default=unset,
                help=helptext,
            )
        if shown is not None and name not in shown:
            hidden[action] = action.help or ""
            action.help = argparse.SUPPRESS
    if shown is not None:
        parser.add_argument("--help-all", action=_HelpAll, hidden=hidden)


def settings_from(args: argparse.Namespace) -> RolloutSettings:
    overrides = {
        name: getattr(args, name)
        for name in RolloutSettings.model_fields
        if getattr(args, name, None) is not None
    }
    return RolloutSettings(**overrides)
