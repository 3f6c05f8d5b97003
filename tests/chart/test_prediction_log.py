"""The chart's ``predictionLog`` values, as the predictor's environment and pod.

The server runs from ``--model-dir`` in a pod, so it cannot place the log beside a registry
itself: the chart names the URI (``prediction-log`` beside ``registry.uri``, the server's own
rule), refuses a release where there is no such place, and leaves the pod time for the log's
last flush on a graceful stop.
"""

from __future__ import annotations

from typing import Any

import pytest

from model_server.settings import ModelServerSettings
from prediction_log.schema import default_log_uri
from tests.k8s_manifests import CHART, RenderError, helm_template, one

HELMS = ("helm3", "helm4")
CI = CHART / "ci"
LOG_ENV = (
    "MODEL_SERVER_PREDICTION_LOG",
    "MODEL_SERVER_PREDICTION_LOG_URI",
    "MODEL_SERVER_PREDICTION_LOG_FLUSH_ROWS",
    "MODEL_SERVER_PREDICTION_LOG_FLUSH_SECONDS",
    "MODEL_SERVER_PREDICTION_LOG_MAX_BUFFERED",
    "MODEL_SERVER_PREDICTION_LOG_PAYLOADS",
)


def render(*values: str, scenario: str = "minimal", helm: str = "helm4") -> dict[str, Any]:
    manifests = helm_template(helm, CI / f"{scenario}-values.yaml", set_values=values)
    predictor: dict[str, Any] = one(manifests, "InferenceService")["spec"]["predictor"]
    return predictor


def env(predictor: dict[str, Any]) -> dict[str, str]:
    (container,) = predictor["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def log_env(predictor: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in env(predictor).items() if k in LOG_ENV}


@pytest.mark.parametrize("helm", HELMS)
def test_the_log_is_on_beside_the_registry_by_default(helm: str) -> None:
    assert log_env(render(helm=helm)) == {
        "MODEL_SERVER_PREDICTION_LOG": "true",
        "MODEL_SERVER_PREDICTION_LOG_URI": "gs://models-bucket/prediction-log",
        "MODEL_SERVER_PREDICTION_LOG_FLUSH_ROWS": "10000",
        "MODEL_SERVER_PREDICTION_LOG_FLUSH_SECONDS": "10",
        "MODEL_SERVER_PREDICTION_LOG_MAX_BUFFERED": "50000",
        "MODEL_SERVER_PREDICTION_LOG_PAYLOADS": "false",
    }


@pytest.mark.parametrize("helm", HELMS)
def test_the_scenario_of_its_own_reaches_the_server(helm: str) -> None:
    assert log_env(render(scenario="prediction-log", helm=helm)) == {
        "MODEL_SERVER_PREDICTION_LOG": "true",
        "MODEL_SERVER_PREDICTION_LOG_URI": "s3://models-audit/prediction-log",
        "MODEL_SERVER_PREDICTION_LOG_FLUSH_ROWS": "2000",
        "MODEL_SERVER_PREDICTION_LOG_FLUSH_SECONDS": "2.5",
        "MODEL_SERVER_PREDICTION_LOG_MAX_BUFFERED": "20000",
        "MODEL_SERVER_PREDICTION_LOG_PAYLOADS": "true",
    }


@pytest.mark.parametrize(
    "registry",
    [
        "gs://models-bucket/registry",
        "s3://models-bucket/registry/",
        "gs://b/team/registry//",
        "gs://b/a/b/c",
        "s3://b/r",
    ],
)
def test_the_derived_uri_is_the_servers_own(registry: str) -> None:
    """The chart and the server put the log in the same place for the same registry."""
    derived = log_env(render(f"registry.uri={registry}"))["MODEL_SERVER_PREDICTION_LOG_URI"]
    assert derived == default_log_uri(registry)


@pytest.mark.parametrize("scenario", ["minimal", "prediction-log", "trainer-off"])
def test_the_server_takes_what_the_chart_renders(
    scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The names and spellings are the server's settings: it parses them into these values."""
    rendered = log_env(render(scenario=scenario))
    for name, value in rendered.items():
        monkeypatch.setenv(name, value)
    settings = ModelServerSettings(model_dir="/mnt/models")
    assert settings.prediction_log is True
    assert settings.prediction_log_uri == rendered["MODEL_SERVER_PREDICTION_LOG_URI"]
    assert settings.prediction_log_flush_rows == int(
        rendered["MODEL_SERVER_PREDICTION_LOG_FLUSH_ROWS"]
    )
    assert settings.prediction_log_flush_seconds == float(
        rendered["MODEL_SERVER_PREDICTION_LOG_FLUSH_SECONDS"]
    )
    assert settings.prediction_log_max_buffered == int(
        rendered["MODEL_SERVER_PREDICTION_LOG_MAX_BUFFERED"]
    )
    assert settings.prediction_log_payloads is (scenario == "prediction-log")


def test_off_says_so_and_needs_no_place(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bucket-root registry is refused with the log on (below), and fine with it off.
    off = log_env(render("predictionLog.enabled=false", "registry.uri=gs://models-bucket"))
    assert off == {
        "MODEL_SERVER_PREDICTION_LOG": "false",
        "MODEL_SERVER_PREDICTION_LOG_PAYLOADS": "false",
    }
    for name, value in off.items():
        monkeypatch.setenv(name, value)
    assert ModelServerSettings(model_dir="/mnt/models").prediction_log is False


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize(
    ("values", "scenario", "message"),
    [
        (["registry.uri=gs://models-bucket"], "minimal", r"is a bucket's root"),
        (["registry.uri=s3://models-bucket/"], "minimal", r"is a bucket's root"),
        (["predictionLog.uri="], "trainer-off", r"predictionLog\.uri is required"),
        (["registry.uri=pvc://claim/registry"], "minimal", r"to gs:// or s3:// only"),
        (["registry.uri=gs://b/prediction-log"], "minimal", r"must not hold one another"),
        (["predictionLog.uri=gs://models-bucket"], "minimal", r"must not hold one another"),
        (
            ["predictionLog.uri=gs://models-bucket/registry/log"],
            "minimal",
            r"must not hold one another",
        ),
        (["predictionLog.maxBuffered=100"], "minimal", r"maxBuffered \(100\) must be at least"),
        (["inferenceService.timeout=54"], "minimal", r"Set inferenceService\.timeout to 55"),
    ],
)
def test_a_log_with_no_right_place_is_refused_by_name(
    helm: str, values: list[str], scenario: str, message: str
) -> None:
    with pytest.raises(RenderError, match=message) as refused:
        render(*values, scenario=scenario, helm=helm)
    assert "predictionLog" in str(refused.value)


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("predictionLog.uri=/var/log/predictions", "uri"),
        ("predictionLog.uri=pvc://claim/log", "uri"),
        ("predictionLog.uri=gs://", "uri"),
        ("predictionLog.flushRows=0", "flushRows"),
        ("predictionLog.flushSeconds=0", "flushSeconds"),
        ("predictionLog.maxBuffered=0", "maxBuffered"),
        ("predictionLog.payloads=maybe", "payloads"),
        ("predictionLog.sampleRate=1", "sampleRate"),
    ],
)
def test_bad_log_values_are_refused_by_the_schema(helm: str, value: str, named: str) -> None:
    with pytest.raises(RenderError, match="values don't meet") as refused:
        render(value, helm=helm)
    assert named in str(refused.value)


def test_the_pod_has_time_for_the_last_flush() -> None:
    """Standard mode: the in-flight grace, up to 20 s for the writer's close, and a margin.
    Knative refuses the field and gives the pod the revision's timeout instead, which must
    cover its queue-proxy's 30 s drain before SIGTERM and the same flush."""
    standard = render(scenario="standard-mode")
    assert standard["terminationGracePeriodSeconds"] == 30 + 20 + 5
    shorter = render("server.gracePeriodSeconds=10", scenario="standard-mode")
    assert shorter["terminationGracePeriodSeconds"] == 10 + 20 + 5
    off = render("predictionLog.enabled=false", scenario="standard-mode")
    assert off["terminationGracePeriodSeconds"] == 30 + 5
    knative = render()
    assert "terminationGracePeriodSeconds" not in knative
    assert knative["timeout"] >= 30 + 20 + 5
    # Standard mode has no queue-proxy drain: a short request timeout is no problem there.
    assert render("inferenceService.timeout=10", scenario="standard-mode")
    assert render("inferenceService.timeout=10", "predictionLog.enabled=false")
