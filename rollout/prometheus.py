"""Measure control and treatment in Prometheus for the decision engine.

Each side is selected by ``model_name`` and ``model_version`` (and ``namespace`` when given):
the version is what tells control from treatment in every metric the model server exports.
Windows are PromQL durations (``5m``). Any transport or API error becomes
``Measurements(prometheus_up=False)``: the engine halts on it and never promotes. It knows
nothing of Kubernetes, the commands or the decision's rules (only its measurement types).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx

from rollout.decision import Custom, Measurements, Side

SERVER_ERRORS = "5..|INTERNAL|UNKNOWN|DATA_LOSS|UNAVAILABLE|DEADLINE_EXCEEDED"
"""``code`` values that are server errors: HTTP 5xx, and over gRPC the status names that map
to 5xx (the server's ``code`` label holds the gRPC status name for gRPC requests)."""


class PrometheusError(Exception):
    """Prometheus could not answer a query (unreachable, HTTP error, bad query)."""


@dataclass(frozen=True)
class CustomQuery:
    """A user's PromQL check: passes while the query's single value stays within bounds.

    ``$model``, ``$version`` (the treatment's), ``$namespace`` and ``$window`` are substituted.
    """

    name: str
    query: str
    min_value: float | None = None
    max_value: float | None = None


class Prometheus:
    """The instant-query half of Prometheus's HTTP API."""

    def __init__(self, url: str, timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def query(self, expr: str) -> list[float]:
        """The values of an instant query (NaN dropped); raises :class:`PrometheusError`."""
        return [value for _, value in self.query_labelled(expr)]

    def query_labelled(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """Each series of an instant query with its labels (NaN dropped); raises
        :class:`PrometheusError`."""
        try:
            response = self.client.get(f"{self.url}/api/v1/query", params={"query": expr})
        except httpx.HTTPError as error:
            raise PrometheusError(f"{self.url} is unreachable: {error}") from error
        try:
            body = response.json()
        except ValueError as error:
            raise PrometheusError(f"{self.url} answered HTTP {response.status_code}") from error
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"query failed ({response.status_code}): {body.get('error')}")
        series = [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]
        return [(labels, value) for labels, value in series if not math.isnan(value)]

    def scalar(self, expr: str) -> float | None:
        values = self.query(expr)
        return values[0] if values else None


def selector(model: str, version: str, namespace: str | None, label: str = "model_version") -> str:
    """``model_name`` and ``label`` (the version, or e.g. the experiment), in ``namespace``."""
    labels = [f'model_name="{model}"', f'{label}="{version}"']
    if namespace:
        labels.insert(0, f'namespace="{namespace}"')
    return ", ".join(labels)


def measure_side(
    prometheus: Prometheus, model: str, version: str, window: str, namespace: str | None
) -> Side | None:
    """One side's counts and latency over ``window``; ``None`` when it has no series at all."""
    sel = selector(model, version, namespace)
    requests = prometheus.scalar(f"sum(increase(model_server_requests_total{{{sel}}}[{window}]))")
    if requests is None:
        return None
    errors = prometheus.scalar(
        f'sum(increase(model_server_requests_total{{{sel}, code=~"{SERVER_ERRORS}"}}[{window}]))'
    )

    def quantile(q: float) -> float | None:
        return prometheus.scalar(
            f"histogram_quantile({q}, sum by (le) "
            f"(rate(model_server_request_duration_seconds_bucket{{{sel}}}[{window}])))"
        )

    def feedback(outcome: str) -> float:
        value = prometheus.scalar(
            f'sum(increase(model_server_feedback_total{{{sel}, outcome="{outcome}"}}[{window}]))'
        )
        return value or 0.0

    return Side(
        requests=requests,
        errors=errors or 0.0,
        p95_seconds=quantile(0.95),
        p99_seconds=quantile(0.99),
        correct=feedback("correct"),
        incorrect=feedback("incorrect"),
    )


def measure(
    prometheus: Prometheus,
    *,
    model: str,
    control: str,
    treatment: str,
    window: str,
    namespace: str | None = None,
    custom: tuple[CustomQuery, ...] = (),
    treatment_ready: bool = True,
    waited_for_ready_seconds: float = 0.0,
) -> Measurements:
    """Both sides (and the custom checks) over ``window``, for :func:`rollout.decision.decide`."""
    try:
        control_side = measure_side(prometheus, model, control, window, namespace)
        treatment_side = measure_side(prometheus, model, treatment, window, namespace)
        results = []
        for check in custom:
            expr = (
                check.query.replace("$model", model)
                .replace("$version", treatment)
                .replace("$namespace", namespace or "")
                .replace("$window", window)
            )
            value = prometheus.scalar(expr)
            passed = value is not None and (
                (check.min_value is None or value >= check.min_value)
                and (check.max_value is None or value <= check.max_value)
            )
            results.append(Custom(check.name, value, passed))
    except PrometheusError:
        return Measurements(prometheus_up=False)
    return Measurements(
        prometheus_up=True,
        treatment_ready=treatment_ready,
        waited_for_ready_seconds=waited_for_ready_seconds,
        control=control_side,
        treatment=treatment_side,
        custom=tuple(results),
        window=window,
    )
