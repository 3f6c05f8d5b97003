"""``grpc.health.v1.Health`` on the real server, asked as ``grpc_health_probe`` and the kubelet's
``grpc`` probe ask it (issue 25, defect 1: the chart's liveness probe with gRPC on)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from model_registry.registry import Registry
from tests.integration.test_clients import CANCER, Served

pytestmark = pytest.mark.integration

Status = health_pb2.HealthCheckResponse
READINESS = ("", "inference.GRPCInferenceService")


def check(channel: grpc.Channel, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
    status: int = response.status
    return status


def test_ready_server_is_serving_and_unknown_services_are_not_found(
    registry_uri: str, tmp_path: Path
) -> None:
    with (
        Served(["--registry-uri", registry_uri, "--model-name", CANCER], tmp_path) as server,
        grpc.insecure_channel(server.grpc_address) as channel,
    ):
        assert server.client.get("/v2/health/ready").status_code == 200
        for service in (*READINESS, "liveness"):
            assert check(channel, service) == Status.SERVING, service
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        assert next(iter(watch)).status == Status.SERVING
        watch.cancel()
        with pytest.raises(grpc.RpcError) as error:
            check(channel, "no.such.Service")
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_model_that_does_not_load_is_not_serving_but_live(
    registry_uri: str, tmp_path: Path
) -> None:
    """Readiness names say NOT_SERVING while the model is not loaded; ``liveness`` (the
    chart's liveness probe) stays SERVING, as ``/v2/health/live`` does: a slow or failed load
    is answered by readiness, not by restarting the container."""
    version_dir = Path(Registry(registry_uri).storage.path("diabetes/v1"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.json").write_bytes((version_dir / "metadata.json").read_bytes())
    artifact = (version_dir / "model.skops").read_bytes()
    (broken / "model.skops").write_bytes(artifact[:-10] + b"0123456789")
    with (
        Served(["--model-dir", str(broken)], tmp_path) as server,
        grpc.insecure_channel(server.grpc_address) as channel,
    ):
        assert server.client.get("/v2/health/ready").status_code == 503
        for service in READINESS:
            assert check(channel, service) == Status.NOT_SERVING, service
        assert check(channel, "liveness") == Status.SERVING
        assert server.client.get("/v2/health/live").status_code == 200
