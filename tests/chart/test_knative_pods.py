"""Every Knative-mode scenario as the pod Knative runs, probed on the real server.

Each ``ci/*-values.yaml`` in Knative mode, each environment file (with ``ci/minimal``) and the
gRPC scenario are rendered, then turned into their pod by ``tests.knative_transform`` (what
KServe and Knative do before a pod exists). Then:

- nothing the scenario sets is refused by Knative's field masks;
- the one routed port is the port the server listens on for its protocol (``h2c``: gRPC,
  ``http1``: REST);
- the real ``model-server``, started with the container's args and env (``/mnt/models`` from a
  locally trained registry, container ports mapped to free loopback ports), answers each probe
  on the port it lands on: the kubelet's liveness probe (HTTP/1.1 GET, gRPC health, TCP) and the
  queue-proxy's readiness probe (HTTP/1, its default).

One server runs per distinct configuration and is reused by the scenarios that share it.
"""

from __future__ import annotations

import copy
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving_common.net import free_port
from tests.integration.server_harness import ServerProcess
from tests.k8s_manifests import CHART, Manifest, helm_template, one
from tests.knative_transform import (
    MODEL_MOUNT,
    STORAGE_INITIALIZER,
    KnativePod,
    field_mask_refusals,
    knative_pod,
    revision_template,
)

CI = CHART / "ci"


@dataclass(frozen=True)
class Scenario:
    id: str
    files: tuple[Path, ...]
    set_values: tuple[str, ...] = ()


def knative_scenarios() -> list[Scenario]:
    found = []
    for path in sorted(CI.glob("*-values.yaml")):
        mode = (yaml.safe_load(path.read_text()).get("inferenceService") or {}).get(
            "deploymentMode", "Knative"
        )
        if mode == "Knative":
            found.append(Scenario(path.name.removesuffix("-values.yaml"), (path,)))
    found += [
        Scenario(f"env-{env}", (CI / "minimal-values.yaml", CHART / f"values-{env}.yaml"))
        for env in ("dev", "staging", "prod")
    ]
    found.append(Scenario("grpc", (CI / "minimal-values.yaml",), ("server.grpc.enabled=true",)))
    return found


SCENARIOS = knative_scenarios()


def params() -> list[Any]:
    return [pytest.param(s, id=s.id) for s in SCENARIOS]


def declared_features(scenario: Scenario) -> dict[str, str]:
    """The config-features flags the scenario's values declare Enabled."""
    names = {
        "affinity": "kubernetes.podspec-affinity",
        "nodeSelector": "kubernetes.podspec-nodeselector",
        "tolerations": "kubernetes.podspec-tolerations",
        "podSecurityContext": "kubernetes.podspec-securitycontext",
    }
    flags: dict[str, str] = {}
    for path in scenario.files:
        isvc = yaml.safe_load(path.read_text()).get("inferenceService") or {}
        for key, on in (isvc.get("knativeFeatures") or {}).items():
            flags[names[key]] = "Enabled" if on else "Disabled"
    return flags


_RENDERED: dict[Scenario, Manifest] = {}


def isvc_of(scenario: Scenario) -> Manifest:
    if scenario not in _RENDERED:
        manifests = helm_template("helm4", *scenario.files, set_values=scenario.set_values)
        _RENDERED[scenario] = one(manifests, "InferenceService")
    return copy.deepcopy(_RENDERED[scenario])  # a test may change its copy


def pod_of(scenario: Scenario) -> KnativePod:
    return knative_pod(isvc_of(scenario), declared_features(scenario))


def test_the_scenarios_are_the_ones_asked_for() -> None:
    ids = {s.id for s in SCENARIOS}
    assert {"minimal", "canary", "experiment", "grpc", "env-prod"} <= ids
    assert "standard-mode" not in ids  # a plain Deployment: no Knative there


@pytest.mark.parametrize("scenario", params())
def test_nothing_the_scenario_sets_is_refused_by_knative(scenario: Scenario) -> None:
    pod = pod_of(scenario)
    assert pod.refused == []
    annotations = isvc_of(scenario)["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Knative"


def test_the_field_mask_model_can_refuse() -> None:
    """Standard mode's pod fields, read as a Knative revision, are refused one by one; with
    the flags Enabled or Allowed they pass, but for what no flag allows."""
    standard = one(helm_template("helm4", CI / "standard-mode-values.yaml"), "InferenceService")
    spec = revision_template(standard)[2]  # the pod spec part of the predictor
    spec["securityContext"] = {**spec["securityContext"], "sysctls": [{"name": "a", "value": "b"}]}
    spec["containers"][0]["securityContext"]["seLinuxOptions"] = {"level": "s0"}
    spec["containers"][0]["env"].append({"name": "PORT", "value": "1"})
    refused = field_mask_refusals(spec, {})
    for expected in (
        "spec.securityContext",
        "spec.nodeSelector",
        "spec.tolerations",
        "spec.terminationGracePeriodSeconds",
        "spec.containers[0].securityContext.seLinuxOptions",
        "spec.containers[0].env[PORT] is reserved",
    ):
        assert expected in refused
    flags = {
        "kubernetes.podspec-securitycontext": "Allowed",
        "kubernetes.podspec-nodeselector": "Enabled",
        "kubernetes.podspec-tolerations": "Enabled",
    }
    assert sorted(field_mask_refusals(spec, flags)) == [
        "spec.containers[0].env[PORT] is reserved",
        "spec.containers[0].securityContext.seLinuxOptions",
        "spec.securityContext.sysctls",
        "spec.terminationGracePeriodSeconds",
    ]


def test_the_transform_does_what_knative_and_kserve_do() -> None:
    """One scenario end to end, field by field (the citations are in tests/knative_transform)."""
    isvc = isvc_of(next(s for s in SCENARIOS if s.id == "grpc"))
    pod = knative_pod(isvc)
    c = pod.container
    assert c["ports"] == [{"name": "user-port", "containerPort": 8081}]
    assert pod.protocol == "h2c"
    assert pod.user_port == 8081
    env = pod.env
    assert (env["PORT"], env["K_REVISION"]) == ("8081", "breast-cancer-predictor-00001")
    assert env["K_SERVICE"] == env["K_CONFIGURATION"] == "breast-cancer-predictor"
    assert env["STORAGE_URI"] == MODEL_MOUNT
    (init,) = pod.spec["initContainers"]
    assert init["name"] == STORAGE_INITIALIZER
    assert init["args"] == ["gs://models-bucket/registry/breast-cancer/v1", MODEL_MOUNT]
    assert {"name": "kserve-provision-location", "mountPath": MODEL_MOUNT, "readOnly": True} in (
        c["volumeMounts"]
    )
    assert "readinessProbe" not in c  # moved to the queue-proxy
    assert pod.queue_readiness is not None
    assert pod.queue_readiness["httpGet"] == {
        "path": "/v2/models/breast-cancer/ready",
        "port": 8080,  # its own explicit port, kept
        "host": "127.0.0.1",
        "scheme": "HTTP",
    }
    liveness = c["livenessProbe"]
    if "httpGet" in liveness or "tcpSocket" in liveness:  # rewritten to the user port
        assert (liveness.get("httpGet") or liveness.get("tcpSocket"))["port"] == 8081
    assert pod.labels["serving.kserve.io/inferenceservice"] == "breast-cancer"
    assert pod.labels["component"] == "predictor"
    assert pod.annotations["internal.serving.kserve.io/storage-initializer-sourceuri"] == (
        "gs://models-bucket/registry/breast-cancer/v1"
    )
    assert "minReplicas" not in pod.spec  # KServe's, not the pod's
    # A named or missing readiness port: the queue-proxy probes the user port.
    isvc["spec"]["predictor"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = "http"
    renamed = knative_pod(isvc).queue_readiness
    assert renamed is not None
    assert renamed["httpGet"]["port"] == 8081


# -- the server as configured ----------------------------------------------------------------


def server_ports(container: Manifest) -> dict[str, int]:
    """The ports the server listens on, from its args and env: {"http1": N, "h2c": M}."""
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    http = 8080  # ModelServerSettings.http_port's default
    for arg in container.get("args", []):
        if match := re.fullmatch(r"--http-port=(\d+)", arg):
            http = int(match.group(1))
    ports = {"http1": int(env.get("MODEL_SERVER_HTTP_PORT", http))}
    if env.get("MODEL_SERVER_ENABLE_GRPC") == "true":
        ports["h2c"] = int(env.get("MODEL_SERVER_GRPC_PORT", "8081"))
    return ports


@pytest.mark.parametrize("scenario", params())
def test_the_routed_port_is_the_servers_port_for_its_protocol(scenario: Scenario) -> None:
    pod = pod_of(scenario)
    ports = server_ports(pod.container)
    assert pod.protocol in ports, f"{pod.protocol} routed, but the server serves {ports}"
    assert pod.user_port == ports[pod.protocol]


@pytest.fixture(scope="module")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained samples at every version a scenario names: breast-cancer v1-v3, diabetes v1-v4."""
    from trainer.settings import TrainerSettings
    from trainer.train import run

    root = tmp_path_factory.mktemp("knative-pods") / "registry"
    for sample, versions in (("breast-cancer", 3), ("diabetes", 4)):
        for _ in range(versions):
            run(TrainerSettings(sample=sample, registry_uri=str(root)))
    return root


LOG_URI = "MODEL_SERVER_PREDICTION_LOG_URI"


def local_copy(uri: str, registry: Path) -> str:
    """A registry version's URI (gs:// or s3://, as the storage initializer or the server would
    read it) as the same version in the local registry."""
    match = re.fullmatch(r"(?:gs|s3)://[^/]+/(?:.+/)?([a-z0-9-]+)/(v\d+)/?", uri)
    assert match, f"not a registry version URI: {uri}"
    local = registry / match.group(1) / match.group(2)
    assert (local / "metadata.json").is_file(), f"{uri}: no {local} trained"
    return str(local)


@dataclass(frozen=True)
class LocalConfig:
    """The container as a local process: args, env, and container port -> loopback port."""

    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    container_http_port: int


def local_config(pod: KnativePod, registry: Path) -> LocalConfig:
    c = pod.container
    downloads = {
        init["args"][1]: local_copy(init["args"][0], registry)
        for init in pod.spec.get("initContainers", [])
        if init["name"] == STORAGE_INITIALIZER
    }

    def local(value: str) -> str:
        for mount, directory in downloads.items():
            if value == mount or value.startswith(mount + "/"):
                return directory + value[len(mount) :]
        if value.startswith(("gs://", "s3://")):
            return local_copy(value, registry)
        return value

    args = []
    for arg in c.get("args", []):
        name, eq, value = arg.partition("=")
        if name == "--http-port":
            continue  # ServerProcess gives its own loopback port
        args.append(f"{name}={local(value)}" if eq else arg)
    env = {e["name"]: local(e.get("value", "")) for e in c.get("env", []) if e["name"] != LOG_URI}
    env.pop("STORAGE_URI")  # read by KServe and its storage initializer, not by the server
    if any(e["name"] == LOG_URI for e in c.get("env", [])):
        # The prediction log goes beside the local registry, as the chart puts it beside the real.
        env[LOG_URI] = str(registry.parent / "prediction-log")
    return LocalConfig(tuple(args), tuple(sorted(env.items())), server_ports(c)["http1"])


@dataclass
class Running:
    server: ServerProcess
    ports: dict[int, int]
    """Container port -> loopback port."""
    started: float
    """When the container started (time.monotonic), for the probes' initialDelaySeconds."""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[LocalConfig, Running]]:
    started: dict[LocalConfig, Running] = {}
    yield started
    for running in started.values():
        running.server.stop()


def running(config: LocalConfig, servers: dict[LocalConfig, Running], log_dir: Path) -> Running:
    if config in servers:
        return servers[config]
    env = dict(config.env)
    ports: dict[int, int] = {}
    if env.get("MODEL_SERVER_ENABLE_GRPC") == "true":
        grpc_port = free_port()
        ports[int(env.get("MODEL_SERVER_GRPC_PORT", "8081"))] = grpc_port
        env["MODEL_SERVER_GRPC_PORT"] = str(grpc_port)
    server = ServerProcess(list(config.args), log_dir, env=env)
    ports[config.container_http_port] = server.port
    if "PORT" in env:
        env["PORT"] = str(ports.get(int(env["PORT"]), 0))
    server.env.update(env)
    started = time.monotonic()
    servers[config] = Running(server.start(), ports, started)
    return servers[config]


def http_probe(port: int, action: Manifest, timeout: float) -> str | None:
    """An httpGet probe as the kubelet (and, without autodetect-http2, the queue-proxy) sends
    it: HTTP/1.1 GET, success for 200-399. None when it succeeds, else why it failed."""
    url = f"http://127.0.0.1:{port}{action.get('path', '/')}"
    headers = {"User-Agent": "kube-probe/1.32"}
    headers.update({h["name"]: h["value"] for h in action.get("httpHeaders", [])})
    try:
        with httpx.Client(http1=True, http2=False, timeout=timeout) as client:
            status = client.get(url, headers=headers).status_code
    except httpx.HTTPError as error:
        return f"GET {url}: {type(error).__name__}: {error}"
    return None if 200 <= status < 400 else f"GET {url}: {status}"


def grpc_probe(port: int, action: Manifest, timeout: float) -> str | None:
    """A grpc probe as the kubelet sends it: grpc.health.v1.Health/Check(service)."""
    request = health_pb2.HealthCheckRequest(service=action.get("service", ""))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
    except grpc.RpcError as error:
        return f"grpc health {action.get('service', '')!r}: {error.code()}"
    serving = health_pb2.HealthCheckResponse.SERVING
    return None if reply.status == serving else f"grpc health: status {reply.status}"


def tcp_probe(port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return None
    except OSError as error:
        return f"connect 127.0.0.1:{port}: {error}"


def probe_once(probe: Manifest, ports: dict[int, int]) -> str | None:
    timeout = float(probe.get("timeoutSeconds", 1))
    for kind in ("httpGet", "grpc", "tcpSocket"):
        if kind in probe:
            action = probe[kind]
            container_port = int(action["port"])
            if container_port not in ports:
                return f"{kind} port {container_port}: nothing listens there"
            port = ports[container_port]
            if kind == "httpGet":
                return http_probe(port, action, timeout)
            if kind == "grpc":
                return grpc_probe(port, action, timeout)
            return tcp_probe(port, timeout)
    return f"no probe handler this test runs: {sorted(probe)}"


def probe_until(probe: Manifest, ports: dict[int, int], attempts: int) -> str | None:
    """The probe tried up to ``attempts`` times a second apart (a slow model load is not
    a failure of the probe); the last failure, or None."""
    failure = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(1)
        failure = probe_once(probe, ports)
        if failure is None:
            return None
    return failure


@pytest.mark.integration
@pytest.mark.parametrize("scenario", params())
def test_the_server_answers_each_probe_on_the_port_it_lands_on(
    scenario: Scenario,
    local_registry: Path,
    servers: dict[LocalConfig, Running],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Issue 25, defect 1: before the chart's grpc liveness probe, the grpc scenario failed
    here (the kubelet's HTTP/1.1 GET, rewritten to the h2c port, reached the gRPC server:
    ``RemoteProtocolError: illegal request line``)."""
    pod = pod_of(scenario)
    config = local_config(pod, local_registry)
    live = running(config, servers, tmp_path_factory.mktemp("logs"))
    problems = {}
    # The queue-proxy's readiness probe: ready once the model has loaded.
    if pod.queue_readiness is not None:
        problems["readiness (queue-proxy)"] = probe_until(pod.queue_readiness, live.ports, 60)
    c = pod.container
    for name in ("livenessProbe", "startupProbe", "readinessProbe"):  # what the kubelet runs
        if name in c:
            # The kubelet's first probe waits initialDelaySeconds from the container's start.
            delay = live.started + int(c[name].get("initialDelaySeconds", 0)) - time.monotonic()
            time.sleep(max(0.0, delay))
            threshold = int(c[name].get("failureThreshold", 3))
            problems[f"{name} (kubelet)"] = probe_until(c[name], live.ports, threshold)
    # The routed port answers its protocol.
    routed = live.ports.get(pod.user_port)
    assert routed is not None, f"nothing listens on the routed port {pod.user_port}"
    if pod.protocol == "h2c":
        problems["routed port (gRPC)"] = grpc_probe(routed, {}, 5)
    else:
        problems["routed port (HTTP/1)"] = http_probe(routed, {"path": "/v2/health/live"}, 5)
    failed = {k: v for k, v in problems.items() if v is not None}
    assert failed == {}, f"{failed}\nserver log:\n{live.server.log()[-2000:]}"


def test_the_probe_helpers_can_fail(tmp_path: Path) -> None:
    """Nothing listening: every probe kind reports a failure, never a pass."""
    port = free_port()
    ports = {8080: port}
    assert probe_once({"httpGet": {"path": "/", "port": 8080}}, ports)
    assert probe_once({"tcpSocket": {"port": 8080}}, ports)
    assert probe_once({"grpc": {"port": 8080}, "timeoutSeconds": 1}, ports)
    assert probe_once({"httpGet": {"path": "/", "port": 9999}}, ports)
