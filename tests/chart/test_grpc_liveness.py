"""The predictor's liveness probe with gRPC on survives Knative's port rewrite (issue 25, defect 1).

Knative sets an ``httpGet`` or ``tcpSocket`` liveness probe's port to the routed container port
(knative/serving ``pkg/reconciler/revision/resources/deploy.go``, ``rewriteUserLivenessProbe``).
With gRPC on that is h2c 8081, where the kubelet's HTTP/1.1 GET fails forever. A ``grpc`` probe
is not rewritten; it asks the server's ``grpc.health.v1.Health`` for ``liveness``
(tests/integration/test_grpc_health.py asks the real server the same way).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.k8s_manifests import CHART, helm_template, one

HELMS = ("helm3", "helm4")
CI = CHART / "ci"


def server_container(*values: str, helm: str) -> dict[str, Any]:
    manifests = helm_template(helm, CI / "minimal-values.yaml", set_values=values)
    (container,) = one(manifests, "InferenceService")["spec"]["predictor"]["containers"]
    return container  # type: ignore[no-any-return]


def knative_liveness_port(container: dict[str, Any]) -> Any:
    """The port the kubelet probes once Knative's rewriteUserLivenessProbe has run."""
    probe = container["livenessProbe"]
    (routed,) = container["ports"]
    if "httpGet" in probe or "tcpSocket" in probe:
        return routed["containerPort"]
    return probe["grpc"]["port"]


@pytest.mark.parametrize("helm", HELMS)
def test_with_grpc_on_liveness_is_a_grpc_probe_on_the_grpc_port(helm: str) -> None:
    container = server_container(
        "server.grpc.enabled=true", "server.livenessProbe.periodSeconds=7", helm=helm
    )
    probe = container["livenessProbe"]
    assert probe["grpc"] == {"port": 8081, "service": "liveness"}
    assert "httpGet" not in probe
    assert "tcpSocket" not in probe
    assert (probe["periodSeconds"], probe["initialDelaySeconds"]) == (7, 10)  # values still apply
    assert container["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    assert knative_liveness_port(container) == 8081  # the gRPC server, asked in gRPC
    # readiness is unchanged: queue-proxy probes it itself, on its explicit port
    assert container["readinessProbe"]["httpGet"]["port"] == 8080


@pytest.mark.parametrize("helm", HELMS)
def test_with_grpc_off_liveness_is_unchanged(helm: str) -> None:
    container = server_container(helm=helm)
    probe = container["livenessProbe"]
    assert probe["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert "grpc" not in probe
    assert knative_liveness_port(container) == 8080
