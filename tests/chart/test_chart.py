"""The Helm chart, rendered by real helm 3 and helm 4 and validated strictly.

Every ``ci/*-values.yaml`` scenario renders with both, every object passes strict validation,
and the rendered objects carry what the values asked for. Bad values are refused by
``values.schema.json`` with a message naming the value.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.apiserver import revision_template
from tests.k8s_manifests import (
    CHART,
    KUBERNETES_VERSIONS,
    ROOT,
    Manifest,
    RenderError,
    by_kind,
    helm_template,
    one,
    validate,
)
from tests.k8s_manifests import helm as helm_binary

HELMS = ("helm3", "helm4")
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
CI = CHART / "ci"


def scenario_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], list[Manifest]]:
    """Every scenario rendered once by each helm."""
    return {
        (helm, scenario_id(path)): helm_template(helm, path) for helm in HELMS for path in SCENARIOS
    }


def render(*values: str, files: tuple[str, ...] = ("minimal",), helm: str = "helm4") -> list[Any]:
    return helm_template(helm, *(CI / f"{f}-values.yaml" for f in files), set_values=values)


def predictor(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, "InferenceService")["spec"]["predictor"]
    return spec


def container(manifests: list[Manifest]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = predictor(manifests)["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def rollout_configmap(manifests: list[Manifest]) -> Manifest:
    (found,) = [
        m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-rollout")
    ]
    return found


ENVIRONMENTS = ("dev", "staging", "prod")


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_environment_values_render_and_validate(helm: str, environment: str) -> None:
    env_file = CHART / f"values-{environment}.yaml"
    manifests = helm_template(helm, CI / "minimal-values.yaml", env_file)
    assert [p for m in manifests for p in validate(m)] == []
    assert rollout_configmap(manifests)["data"]["steps"]
    assert one(manifests, "Role")  # every environment lets model-rollout work


def test_environments_differ_where_they_should() -> None:
    def isvc_spec(environment: str) -> dict[str, Any]:
        manifests = helm_template(
            "helm4", CI / "minimal-values.yaml", CHART / f"values-{environment}.yaml"
        )
        return predictor(manifests)

    dev, prod = isvc_spec("dev"), isvc_spec("prod")
    assert dev["minReplicas"] == 0
    assert prod["minReplicas"] >= 2
    assert prod["maxReplicas"] > dev["maxReplicas"]
    prod_manifests = helm_template("helm4", CI / "minimal-values.yaml", CHART / "values-prod.yaml")
    assert rollout_configmap(prod_manifests)["data"] == {
        "steps": "5,10,25,50,100",
        "intervalSeconds": "600",
    }
    assert "affinity" not in predictor(prod_manifests)  # Knative refuses it by default
    dev_rules = one(
        helm_template(
            "helm4",
            CI / "minimal-values.yaml",
            CHART / "values-dev.yaml",
            set_values=["monitoring.prometheusRule.enabled=true"],
        ),
        "PrometheusRule",
    )
    severities = {
        r["labels"]["severity"]
        for g in dev_rules["spec"]["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    assert severities == {"warning"}  # nothing pages in dev


def test_the_required_scenarios_exist() -> None:
    names = {scenario_id(p) for p in SCENARIOS}
    required = {"minimal", "canary", "experiment", "gke-workload-identity", "monitoring"}
    required |= {"trainer-off", "prediction-log"}
    assert required | {"standard-mode"} <= names


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_id)
def test_every_rendered_object_is_valid(
    rendered: dict[tuple[str, str], list[Manifest]], helm: str, scenario: Path
) -> None:
    manifests = rendered[(helm, scenario_id(scenario))]
    assert by_kind(manifests, "InferenceService"), "no InferenceService rendered"
    problems = [p for m in manifests for p in validate(m)]
    assert problems == []


@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_id)
def test_helm_3_and_4_render_the_same_objects(
    rendered: dict[tuple[str, str], list[Manifest]], scenario: Path
) -> None:
    assert rendered[("helm3", scenario_id(scenario))] == rendered[("helm4", scenario_id(scenario))]


def test_canary_percent_only_when_set() -> None:
    assert "canaryTrafficPercent" not in predictor(render())
    assert predictor(render(files=("canary",)))["canaryTrafficPercent"] == 10
    assert predictor(render("canary.trafficPercent=0"))["canaryTrafficPercent"] == 0
    assert predictor(render("canary.trafficPercent=100"))["canaryTrafficPercent"] == 100
    for helm in HELMS:  # promote with --set ...=null: helm drops the key, the field goes
        promoted = render("canary.trafficPercent=null", files=("canary",), helm=helm)
        assert "canaryTrafficPercent" not in predictor(promoted)


def test_storage_uri_from_registry_or_given() -> None:
    assert (
        env_of(container(render()))["STORAGE_URI"] == "gs://models-bucket/registry/breast-cancer/v1"
    )
    assert (
        env_of(container(render("registry.uri=s3://b/reg/", "model.version=v12")))["STORAGE_URI"]
        == "s3://b/reg/breast-cancer/v12"
    )
    assert (
        env_of(container(render(files=("trainer-off",))))["STORAGE_URI"]
        == "gs://models-bucket/registry/diabetes/v4"
    )


def test_inference_service_shape() -> None:
    manifests = render(files=("canary",))
    isvc = one(manifests, "InferenceService")
    assert isvc["metadata"]["name"] == "breast-cancer"
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Knative"
    assert annotations["serving.kserve.io/enable-tag-routing"] == "true"
    # Without KServe's qpext queue-proxy nothing serves the aggregated port: both off, explicitly.
    assert annotations["serving.kserve.io/enable-metric-aggregation"] == "false"
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "false"
    assert "prometheus.kserve.io/port" not in annotations
    spec = predictor(manifests)
    assert spec["serviceAccountName"] == "demo-model-serving-predictor"
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 3)
    assert (spec["scaleMetric"], spec["scaleTarget"]) == ("concurrency", 8)
    assert (spec["containerConcurrency"], spec["timeout"]) == (0, 60)
    assert "terminationGracePeriodSeconds" not in spec  # Knative refuses it
    assert "securityContext" not in spec  # Knative refuses a pod security context by default
    assert spec["automountServiceAccountToken"] is False
    mounted = predictor(render("serviceAccounts.automountToken=true"))
    assert "automountServiceAccountToken" not in mounted  # Knative refuses true: left out
    c = container(manifests)
    assert c["name"] == "kserve-container"
    assert c["image"] == "europe-docker.pkg.dev/my-project/model-serving/model-server:0.1.0"
    assert "--model-dir=/mnt/models" in c["args"]
    assert "--model-name=breast-cancer" in c["args"]
    assert c["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert env_of(c)["MODEL_SERVER_LOG_FORMAT"] == "json"
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_tag_routing_off_by_default() -> None:
    annotations = one(render(), "InferenceService")["metadata"]["annotations"]
    assert "serving.kserve.io/enable-tag-routing" not in annotations


def test_probes_hit_the_servers_real_endpoints() -> None:
    c = container(render())
    assert c["readinessProbe"]["httpGet"] == {
        "path": "/v2/models/breast-cancer/ready",
        "port": 8080,
    }
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert c["readinessProbe"]["periodSeconds"] == 5


def test_security_context_everywhere() -> None:
    manifests = render(files=("minimal", "monitoring"))
    strict = {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    trainer_pod = one(manifests, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    test_pod = one(manifests, "Pod")["spec"]
    for c in (container(manifests), trainer_pod["containers"][0], test_pod["containers"][0]):
        assert strict.items() <= c["securityContext"].items(), c["name"]
        assert c["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert trainer_pod["securityContext"]["runAsNonRoot"] is True
    assert trainer_pod["automountServiceAccountToken"] is False


def test_standard_mode() -> None:
    manifests = render(files=("standard-mode",))
    isvc = one(manifests, "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    spec = predictor(manifests)
    # The grace period, 20 s for the prediction log's last flush, 5 s of margin.
    assert spec["terminationGracePeriodSeconds"] == 55
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["nodeSelector"] == {"cloud.google.com/gke-nodepool": "serving"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert (spec["scaleMetric"], spec["scaleTarget"]) == ("cpu", 70)
    assert by_kind(manifests, "CronJob") == []


def test_canary_in_standard_mode_is_refused() -> None:
    with pytest.raises(RenderError, match=r"needs inferenceService\.deploymentMode=Knative"):
        render("canary.trafficPercent=10", files=("standard-mode",))


def test_workload_identity_and_rbac() -> None:
    manifests = render(files=("gke-workload-identity",))
    accounts = {sa["metadata"]["name"]: sa for sa in by_kind(manifests, "ServiceAccount")}
    gsa = "iam.gke.io/gcp-service-account"
    # The public predictor reads the registry as its own (read-only) Google account.
    assert accounts["demo-model-serving-predictor"]["metadata"]["annotations"][gsa] == (
        "model-reader@my-project.iam.gserviceaccount.com"
    )
    assert accounts["demo-model-serving-trainer"]["metadata"]["annotations"][gsa] == (
        "model-trainer@my-project.iam.gserviceaccount.com"
    )
    assert predictor(manifests)["serviceAccountName"] == "demo-model-serving-predictor"
    trainer_pod = one(manifests, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert trainer_pod["serviceAccountName"] == "demo-model-serving-trainer"
    assert "demo-model-serving-rollout" in accounts
    role = one(manifests, "Role")
    isvc_rule = next(r for r in role["rules"] if r["apiGroups"] == ["serving.kserve.io"])
    assert isvc_rule["resourceNames"] == ["breast-cancer"]
    assert set(isvc_rule["verbs"]) == {"get", "watch", "patch"}
    configmap_rules = [r for r in role["rules"] if r["resources"] == ["configmaps"]]
    assert {"resourceNames": ["breast-cancer-rollout"], "verbs": ["get", "patch"]}.items() <= (
        configmap_rules[0].items()
    )
    assert configmap_rules[1]["verbs"] == ["create"]
    assert any(r["resources"] == ["events"] and "create" in r["verbs"] for r in role["rules"])
    binding = one(manifests, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "demo-model-serving-rollout", "namespace": "models"}
    ]
    c = container(manifests)
    assert c["image"].endswith("model-server@sha256:" + "0123456789abcdef" * 4)


def test_rbac_off_by_default_and_custom_subjects() -> None:
    default = render()
    assert by_kind(default, "Role") == []
    assert by_kind(default, "RoleBinding") == []
    manifests = render(
        "rollout.rbac.create=true",
        "rollout.rbac.subjects[0].kind=Group",
        "rollout.rbac.subjects[0].name=release-engineers",
        "rollout.rbac.subjects[0].apiGroup=rbac.authorization.k8s.io",
    )
    assert one(manifests, "RoleBinding")["subjects"][0]["name"] == "release-engineers"
    assert [sa["metadata"]["name"] for sa in by_kind(manifests, "ServiceAccount")] == [
        "demo-model-serving-predictor",
        "demo-model-serving-trainer",
    ]


def test_trainer_cronjob() -> None:
    manifests = render(files=("gke-workload-identity",))
    cron = one(manifests, "CronJob")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["schedule"] == "0 3 * * *"
    assert spec["timeZone"] == "Europe/Paris"
    assert spec["startingDeadlineSeconds"] == 600
    job = spec["jobTemplate"]["spec"]
    assert (job["backoffLimit"], job["activeDeadlineSeconds"]) == (2, 3600)
    fail_rule = job["podFailurePolicy"]["rules"][0]
    assert fail_rule["action"] == "FailJob"
    assert fail_rule["onExitCodes"]["values"] == [2, 3, 4]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "demo-model-serving-trainer"
    trainer = pod["containers"][0]
    assert trainer["image"] == "europe-docker.pkg.dev/my-project/model-serving/model-trainer:0.1.0"
    env = env_of(trainer)
    assert env["TRAINER_MODEL_NAME"] == "breast-cancer"
    assert env["TRAINER_REGISTRY_URI"] == "gs://models-bucket/registry"
    assert env["TRAINER_DATA_URI"] == "gs://models-bucket/data/breast-cancer.parquet"
    assert env["TRAINER_TARGET"] == "diagnosis"
    assert json.loads(env["TRAINER_PARAM"]) == {"C": 0.5}
    assert env["TRAINER_PUSHGATEWAY_URL"] == "http://prometheus-pushgateway.monitoring:9091"
    assert env["TRAINER_PROMOTE"] == "false"
    assert by_kind(render(files=("trainer-off",)), "CronJob") == []


@pytest.mark.parametrize("key", ["drop", "features"])
def test_trainer_columns_reach_the_trainer_as_it_reads_them(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart's list becomes TRAINER_DROP / TRAINER_FEATURES, read back by the trainer's own
    settings into the same names (a comma inside a name survives: the value is a JSON array)."""
    from trainer.settings import TrainerSettings

    columns = ["customer_id", "note, free text"]
    listed = ",".join(c.replace(",", "\\,") for c in columns)  # --set escapes a comma
    cron = one(render(f"trainer.{key}={{{listed}}}"), "CronJob")
    env = env_of(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0])
    variable = f"TRAINER_{key.upper()}"
    other = "TRAINER_FEATURES" if key == "drop" else "TRAINER_DROP"
    assert other not in env
    monkeypatch.setenv(variable, env[variable])
    settings = TrainerSettings(_env_file=None, data_uri="d.csv", target="y")
    assert getattr(settings, key) == columns


def test_trainer_drop_and_features_together_are_refused() -> None:
    with pytest.raises(RenderError, match=r"trainer\.drop and trainer\.features are exclusive"):
        render("trainer.drop={a}", "trainer.features={b}")


def test_trainer_without_data_is_a_clear_error() -> None:
    with pytest.raises(RenderError, match=r"trainer\.dataUri is required"):
        render("trainer.dataUri=")


def test_missing_model_name_is_a_clear_error() -> None:
    for helm in HELMS:
        with pytest.raises(RenderError, match=r"model[./]name"):
            helm_template(helm)


def test_monitoring_objects_off_by_default() -> None:
    kinds = {m["kind"] for m in render()}
    assert kinds.isdisjoint({"PodMonitor", "PrometheusRule", "PodMonitoring", "Rules"})
    assert [m["metadata"]["name"] for m in by_kind(render(), "ConfigMap")] == [
        "breast-cancer-rollout"
    ]


def monitoring_rules() -> dict[str, Any]:
    groups: list[Any] = []
    for path in sorted((ROOT / "monitoring" / "rules").glob("*.yaml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return {"groups": groups}


def test_monitoring_objects_from_the_single_source() -> None:
    manifests = render(files=("minimal", "monitoring"))
    for kind in ("PodMonitor", "PrometheusRule"):
        assert one(manifests, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    pod_monitor = one(manifests, "PodMonitor")["spec"]
    assert pod_monitor["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": "breast-cancer",
        "component": "predictor",
    }
    assert pod_monitor["podMetricsEndpoints"][0]["port"] == "user-port"
    assert pod_monitor["podMetricsEndpoints"][0]["path"] == "/metrics"
    relabelings = pod_monitor["podMetricsEndpoints"][0]["relabelings"]
    assert {"targetLabel": "job", "replacement": "model-serving"} in relabelings

    # Rules: exactly monitoring/rules, with the runbook links moved to the configured base.
    expected = json.loads(
        json.dumps(monitoring_rules()).replace(
            "https://github.com/model-serving/model-serving/blob/main/monitoring/RUNBOOK.md",
            "https://runbooks.internal.example/model-serving",
        )
    )
    assert one(manifests, "PrometheusRule")["spec"] == expected
    assert "{{ $labels.model_name }}" in json.dumps(expected)  # untouched by helm's templating

    (dashboard,) = [
        m for m in by_kind(manifests, "ConfigMap") if m is not rollout_configmap(manifests)
    ]
    assert dashboard["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"]["grafana_folder"] == "Models"
    source = ROOT / "monitoring" / "dashboards" / "model-serving.json"
    assert dashboard["data"] == {"model-serving.json": source.read_text()}


def test_rules_without_base_override_keep_their_links() -> None:
    rule = one(render("monitoring.prometheusRule.enabled=true"), "PrometheusRule")
    assert rule["spec"] == monitoring_rules()
    assert "release" not in rule["metadata"]["labels"]


def test_podmonitor_port_in_standard_mode() -> None:
    manifests = render("monitoring.podMonitor.enabled=true", files=("standard-mode",))
    assert one(manifests, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "http1"


def test_chart_files_link_to_monitoring_not_copies() -> None:
    for name in ("rules", "dashboards"):
        link = CHART / "files" / name
        assert link.is_symlink(), f"{link} must link to monitoring/{name}, not hold a copy"
        assert link.resolve() == (ROOT / "monitoring" / name).resolve()


def test_helm_test_pod_checks_readiness_and_infers() -> None:
    pod = one(render(), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["python", "-m", "model_server.smoke"]
    assert "--url=http://breast-cancer-predictor.models.svc.cluster.local" in c["args"]
    assert "--model=breast-cancer" in c["args"]


def test_labels_on_every_object() -> None:
    manifests = render(files=("minimal", "monitoring"), helm="helm3")
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "model-serving", manifest["kind"]
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if manifest["kind"] == "InferenceService":
            # KServe copies these into the revision: a versioned label would roll the model.
            assert "helm.sh/chart" not in labels
            assert "app.kubernetes.io/version" not in labels
        else:
            assert labels["helm.sh/chart"] == "model-serving-0.1.0"
    pod_labels = one(manifests, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]
    assert "app.kubernetes.io/version" not in pod_labels["labels"]


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize(
    ("values", "named"),
    [
        (["canary.trafficPercent=150"], "trafficPercent"),
        (["canary.trafficPercent=-1"], "trafficPercent"),
        (["canary.trafficPercent=ten"], "trafficPercent"),
        (["inferenceService.unknownKey=1"], "unknownKey"),
        (["unknownTopLevel=1"], "unknownTopLevel"),
        (["inferenceService.minReplicas=two"], "minReplicas"),
        (["inferenceService.deploymentMode=Serverless"], "deploymentMode"),
        (["model.name=Breast_Cancer"], "name"),
        (["model.version=latest"], "version"),
        (["image.digest=sha256:nothex"], "digest"),
        (["server.workers=0"], "workers"),
        (["trainer.concurrencyPolicy=Allow"], "concurrencyPolicy"),
        (["serviceAccounts.predictor.gcpServiceAccount=not-an-email"], "gcpServiceAccount"),
        (["monitoring.provider=datadog"], "provider"),
        (["server.affinity.podAntiAffinity.x=1"], r"knativeFeatures[./]affinity"),
        (["server.nodeSelector.pool=serving"], r"knativeFeatures[./]nodeSelector"),
        (["server.tolerations[0].key=dedicated"], r"knativeFeatures[./]tolerations"),
        (["server.podSecurityContext.fsGroup=1"], r"knativeFeatures[./]podSecurityContext"),
    ],
)
def test_bad_values_are_refused_by_the_schema(helm: str, values: list[str], named: str) -> None:
    with pytest.raises(RenderError) as refused:
        render(*values, helm=helm)
    message = str(refused.value)
    assert "schema" in message.lower() or "values don't meet" in message.lower(), message
    assert re.search(named, message), message


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("server.podSecurityContext.fsGroupChangePolicy=OnRootMismatch", "fsGroupChangePolicy"),
        ("server.podSecurityContext.sysctls[0].name=net.core.somaxconn", "sysctls"),
        ("server.podSecurityContext.seLinuxOptions.level=s0", "seLinuxOptions"),
        ("server.securityContext.seLinuxOptions.level=s0", "seLinuxOptions"),
    ],
)
def test_security_context_fields_knative_never_takes_are_refused(
    helm: str, value: str, named: str
) -> None:
    """Knative's field masks drop these even with kubernetes.podspec-securitycontext on
    (knative/serving pkg/apis/serving/fieldmask.go, PodSecurityContextMask and
    SecurityContextMask), so the revision would be refused: the schema refuses them first."""
    declared = "inferenceService.knativeFeatures.podSecurityContext=true"
    with pytest.raises(RenderError) as refused:
        render(value, declared, helm=helm)
    message = str(refused.value)
    assert "values don't meet" in message.lower(), message
    assert named in message, message
    # Standard mode runs a plain Deployment: Kubernetes takes them.
    assert render(value, files=("standard-mode",), helm=helm)
    # What Knative keeps still renders.
    kept = predictor(render("server.podSecurityContext.fsGroup=10001", declared, helm=helm))
    assert kept["securityContext"] == {"fsGroup": 10001}


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize(
    ("values", "missing", "named"),
    [
        (
            ["image.repository="],
            "image.repository",
            r"trainer\.image\.repository=\S+/model-trainer",
        ),
        (["trainer.image.repository="], "trainer.image.repository", r"--set image\.repository=\S+"),
        (["image.repository=", "trainer.enabled=false"], "image.repository", "model-server$"),
    ],
)
def test_a_release_without_an_image_repository_does_not_render(
    helm: str, values: list[str], missing: str, named: str
) -> None:
    """No default image: one nobody pushed can never be pulled. The refusal names the value,
    the other one a release needs (not the trainer's when it is off) and the build step."""
    with pytest.raises(RenderError) as refused:
        render(*values, helm=helm)
    message = str(refused.value)
    assert f"{missing} is required" in message, message
    assert re.search(named, message, re.MULTILINE), message
    assert "docker/server.Dockerfile" in message, message
    if "trainer.enabled=false" in values:
        assert "trainer.image" not in message, message


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize(
    "repository",
    [
        "europe-docker.pkg.dev/my-project/models/model-server:0.1.0",  # a tag: that is image.tag
        "model-server:0.1.0",
        "europe-docker.pkg.dev/my-project/models/model-server@sha256",  # that is image.digest
        "europe-docker.pkg.dev/My-Project/models/model-server",  # path components are lower case
        "my repo/model-server",
        "registry.example//model-server",
    ],
)
def test_an_image_repository_that_is_no_repository_is_refused(helm: str, repository: str) -> None:
    for key in ("image.repository", "trainer.image.repository"):
        with pytest.raises(RenderError, match="repository"):
            render(f"{key}={repository}", helm=helm)


@pytest.mark.parametrize(
    "repository",
    ["localhost:5001/model-server", "kind.local/model-server", "ghcr.io/org/model_server"],
)
def test_registry_hosts_with_ports_and_plain_names_are_taken(repository: str) -> None:
    image = container(render(f"image.repository={repository}"))["image"]
    assert image == f"{repository}:0.1.0"


def test_the_validators_catch_mistakes() -> None:
    """The strict checks above can fail: each planted mistake is reported by path."""
    manifests = render(files=("minimal", "monitoring"))
    isvc = one(manifests, "InferenceService")
    c = isvc["spec"]["predictor"]["containers"][0]
    c["imagePullPolicyy"] = "Always"
    del c["name"]
    c["readinessProbe"]["httpGet"].pop("port")
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = "10"
    isvc["spec"]["predictor"]["minReplicass"] = 1
    problems = "\n".join(validate(isvc))
    for expected in (
        "containers[0].imagePullPolicyy: unknown field of V1Container",
        "required field name of V1Container is missing",
        "required field port of V1HTTPGetAction is missing",
        "canaryTrafficPercent: expected int, got str",
        "predictor.minReplicass: unknown field of V1beta1PredictorSpec",
    ):
        assert expected in problems

    cron = one(manifests, "CronJob")
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    cron["spec"]["schedule"] = 5
    problems = "\n".join(validate(cron))
    assert "restartPolicyy" in problems
    assert "Kubernetes 1.32" in problems
    assert f"Kubernetes {KUBERNETES_VERSIONS[-1]}" in problems

    assert validate({"apiVersion": "example.com/v1", "kind": "Widget"}) == [
        "Widget (example.com/v1): no validator for this kind"
    ]
    rule = one(manifests, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0].pop("expr")
    assert validate(rule)


def bumped_chart(tmp_path: Path, version: str) -> Path:
    """A copy of the chart (links to monitoring/ resolved) at another chart and app version."""
    copy = tmp_path / "model-serving"
    shutil.copytree(CHART, copy, symlinks=False)
    chart_yaml = (copy / "Chart.yaml").read_text()
    chart_yaml = re.sub(r"(?m)^version: .*$", f"version: {version}", chart_yaml)
    chart_yaml = re.sub(r"(?m)^appVersion: .*$", f'appVersion: "{version}"', chart_yaml)
    (copy / "Chart.yaml").write_text(chart_yaml)
    return copy


@pytest.mark.parametrize("helm", HELMS)
def test_a_chart_upgrade_does_not_make_a_new_revision(helm: str, tmp_path: Path) -> None:
    """KServe copies the InferenceService's labels and annotations into the Knative revision
    template: a chart upgrade that pins the same image must leave that template as it was, or
    every model would move to a new revision with all its traffic and no canary."""
    pinned = ("image.tag=0.1.0",)
    files = (CI / "minimal-values.yaml", CI / "monitoring-values.yaml")
    before = helm_template(helm, *files, set_values=pinned)
    after = helm_template(helm, *files, set_values=pinned, chart=bumped_chart(tmp_path, "0.2.0"))
    assert one(after, "CronJob")["metadata"]["labels"]["helm.sh/chart"] == "model-serving-0.2.0"
    old, new = one(before, "InferenceService"), one(after, "InferenceService")
    assert revision_template(new) == revision_template(old)
    # The test can fail: a versioned label on the InferenceService is a new revision.
    new["metadata"]["labels"]["app.kubernetes.io/version"] = "0.2.0"
    assert revision_template(new) != revision_template(old)


def test_a_kubernetes_older_than_1_32_is_refused() -> None:
    for helm in HELMS:
        with pytest.raises(RenderError, match=r"kubeVersion|1\.32"):
            helm_template(helm, CI / "minimal-values.yaml", extra_args=["--kube-version", "1.31.0"])
        assert helm_template(
            helm, CI / "minimal-values.yaml", extra_args=["--kube-version", "1.32.0"]
        )


def test_pod_fields_behind_knative_flags_need_the_flag_declared() -> None:
    declared = render(
        "server.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=100",
        "server.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"
        ".podAffinityTerm.topologyKey=kubernetes.io/hostname",
        "inferenceService.knativeFeatures.affinity=true",
    )
    assert predictor(declared)["affinity"]["podAntiAffinity"]
    # Standard mode runs a plain Deployment: no Knative flags there.
    standard = predictor(render("server.affinity.nodeAffinity.x=1", files=("standard-mode",)))
    assert standard["affinity"] == {"nodeAffinity": {"x": 1}}
    # With the schema skipped, the template still refuses, saying what to do.
    for helm in HELMS:
        with pytest.raises(RenderError, match=r"kubernetes\.podspec-nodeselector feature"):
            helm_template(
                helm,
                CI / "minimal-values.yaml",
                set_values=["server.nodeSelector.pool=serving"],
                extra_args=["--skip-schema-validation"],
            )


def test_predictor_and_trainer_never_share_a_google_account() -> None:
    same = "same@my-project.iam.gserviceaccount.com"
    with pytest.raises(RenderError, match="could then overwrite registry versions"):
        render(
            f"serviceAccounts.predictor.gcpServiceAccount={same}",
            f"serviceAccounts.trainer.gcpServiceAccount={same}",
        )


def test_managed_prometheus_objects_on_gke() -> None:
    manifests = render(files=("gke-workload-identity",))
    assert by_kind(manifests, "PodMonitor") == by_kind(manifests, "PrometheusRule") == []
    monitoring = one(manifests, "PodMonitoring")
    # Its name is the job label GMP gives the targets; the rules match model-serving(-.+)?.
    assert monitoring["metadata"]["name"] == "model-serving-breast-cancer"
    assert monitoring["spec"]["endpoints"][0] == {
        "port": "user-port",
        "path": "/metrics",
        "interval": "15s",
        "timeout": "10s",
    }
    assert monitoring["spec"]["selector"]["matchLabels"]["serving.kserve.io/inferenceservice"] == (
        "breast-cancer"
    )
    assert one(manifests, "Rules")["spec"] == monitoring_rules()
    assert validate(monitoring) == []
    monitoring["spec"]["endpoints"][0]["scrapeTimeout"] = "10s"  # a PodMonitor field, not GMP's
    assert validate(monitoring) == ["PodMonitoring at spec/endpoints/0: Additional properties "
                                    "are not allowed ('scrapeTimeout' was unexpected)"]  # fmt: skip


@pytest.mark.parametrize("helm", HELMS)
def test_a_missing_monitoring_crd_fails_the_install_clearly(helm: str) -> None:
    """A real install knows the cluster's APIs (here given with --api-versions, as helm's
    discovery would): without the monitoring kinds, the install stops and names them."""
    kserve_cluster = ["--api-versions", "serving.kserve.io/v1beta1"]
    with pytest.raises(
        RenderError, match=r"monitoring\.coreos\.com/v1/(PodMonitor|PrometheusRule) kind"
    ):
        helm_template(helm, CI / "minimal-values.yaml", CI / "monitoring-values.yaml",
                      extra_args=kserve_cluster)  # fmt: skip
    with pytest.raises(
        RenderError, match=r"monitoring\.googleapis\.com/v1/(PodMonitoring|Rules) kind"
    ):
        helm_template(helm, CI / "gke-workload-identity-values.yaml", extra_args=kserve_cluster)
    operator = ["--api-versions", "monitoring.coreos.com/v1/PodMonitor",
                "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]  # fmt: skip
    assert helm_template(helm, CI / "minimal-values.yaml", CI / "monitoring-values.yaml",
                         extra_args=kserve_cluster + operator)  # fmt: skip


def test_metric_aggregation_and_scrape_annotations() -> None:
    aggregated = one(render("monitoring.metricAggregation=true"), "InferenceService")
    annotations = aggregated["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-metric-aggregation"] == "true"
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert annotations["prometheus.kserve.io/port"] == "8080"
    scraped = predictor(render("monitoring.scrapeAnnotations=true"))
    assert scraped["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }


def test_tag_routing_is_described_as_kserve_does_it() -> None:
    text = (CHART / "values.yaml").read_text()
    assert "latest-NAME-predictor.NAMESPACE.DOMAIN" in text
    assert "always tags the previous rolled-out revision" in text
    # Helm 4 renders NOTES without a cluster (helm 3's install --dry-run asks one its version).
    notes = subprocess.run(
        [helm_binary("helm4"), "install", "demo", str(CHART), "-n", "models",
         "--dry-run=client", "-f", str(CI / "canary-values.yaml")],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split("NOTES:", 1)[1]  # fmt: skip
    assert "prev-breast-cancer-predictor.models." in notes
    assert "latest-breast-cancer-predictor.models." in notes


def test_notes_warn_of_the_placeholder_runbook_url() -> None:
    def notes(*values: str) -> str:
        command = [helm_binary("helm4"), "install", "demo", str(CHART), "-n", "models",
                   "--dry-run=client", "-f", str(CI / "minimal-values.yaml")]  # fmt: skip
        for value in values:
            command += ["--set", value]
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
        return done.stdout.split("NOTES:", 1)[1]

    assert "runbookBaseUrl" in notes("monitoring.prometheusRule.enabled=true")
    assert "runbookBaseUrl" not in notes()
    assert "runbookBaseUrl" not in notes(
        "monitoring.prometheusRule.enabled=true",
        "monitoring.prometheusRule.runbookBaseUrl=https://runbooks.internal.example/ms",
    )


@pytest.mark.parametrize("helm", HELMS)
def test_grpc_turns_on_with_one_h2c_port_and_metrics_still_scraped(helm: str) -> None:
    manifests = render("server.grpc.enabled=true", files=("minimal", "monitoring"), helm=helm)
    c = container(manifests)
    env = env_of(c)
    assert env["MODEL_SERVER_ENABLE_GRPC"] == "true"
    assert env["MODEL_SERVER_GRPC_PORT"] == "8081"
    # Knative routes exactly one container port; h2c makes it HTTP/2 (gRPC).
    assert c["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"]["port"] == 8080
    endpoint = one(manifests, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_ip"],
        "targetLabel": "__address__",
        "replacement": "$1:8080",
    } in endpoint["relabelings"]
    assert [p for m in manifests for p in validate(m)] == []
    off = container(render(helm=helm))
    assert "MODEL_SERVER_ENABLE_GRPC" not in env_of(off)
    assert off["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    # GKE Managed Prometheus too: a numeric PodMonitoring port is scraped at podIP:PORT, declared
    # or not (prometheus-engine pkg/operator/apis/monitoring/v1/pod_config.go).
    gmp = render("server.grpc.enabled=true", files=("gke-workload-identity",), helm=helm)
    assert one(gmp, "PodMonitoring")["spec"]["endpoints"][0]["port"] == 8080
    assert [p for m in gmp for p in validate(m)] == []
    plain = render(files=("gke-workload-identity",), helm=helm)
    assert one(plain, "PodMonitoring")["spec"]["endpoints"][0]["port"] == "user-port"
    with pytest.raises(RenderError, match="maxMessageBytes"):
        render("server.grpc.maxMessageBytes=5", helm=helm)


@pytest.mark.parametrize("helm", HELMS)
def test_max_request_bytes_is_passed_only_when_set(helm: str) -> None:
    assert "MODEL_SERVER_MAX_REQUEST_BYTES" not in env_of(container(render(helm=helm)))
    env = env_of(container(render("server.maxRequestBytes=8388608", helm=helm)))
    assert env["MODEL_SERVER_MAX_REQUEST_BYTES"] == "8388608"
    with pytest.raises(RenderError, match="maxRequestBytes"):
        render("server.maxRequestBytes=10", helm=helm)


@pytest.mark.parametrize("helm", HELMS)
def test_slow_client_limits_reach_the_server(helm: str) -> None:
    env = env_of(container(render(helm=helm)))
    assert (
        env["MODEL_SERVER_HEADER_TIMEOUT"],
        env["MODEL_SERVER_BODY_TIMEOUT"],
        env["MODEL_SERVER_MAX_CONNECTIONS"],
        env["MODEL_SERVER_TIMEOUT_KEEP_ALIVE"],
    ) == ("10", "15", "4096", "65")
    for wrong in ("server.headerTimeoutSeconds=0", "server.maxConnections=0"):
        with pytest.raises(RenderError):
            render(wrong, helm=helm)


@pytest.mark.parametrize("helm", HELMS)
def test_max_concurrency_follows_container_concurrency_per_worker(helm: str) -> None:
    def max_concurrency(*overrides: str) -> str | None:
        return env_of(container(render(*overrides, helm=helm))).get("MODEL_SERVER_MAX_CONCURRENCY")

    assert max_concurrency() is None  # the server's own default (32)
    assert max_concurrency("inferenceService.containerConcurrency=10") == "10"
    cc_and_workers = ("inferenceService.containerConcurrency=10", "server.workers=3")
    assert max_concurrency(*cc_and_workers) == "4"  # rounded up: 3 x 4 >= 10
    assert max_concurrency(*cc_and_workers, "server.maxConcurrency=7") == "7"
    assert max_concurrency("server.maxConcurrency=0") == "0"  # no limit
    assert env_of(container(render(helm=helm)))["MODEL_SERVER_RETRY_AFTER_SECONDS"] == "1"
    with pytest.raises(RenderError, match="maxConcurrency"):
        render("server.maxConcurrency=-1", helm=helm)


@pytest.mark.parametrize("helm", HELMS)
def test_model_load_retry_settings_reach_the_server(helm: str) -> None:
    env = env_of(container(render("server.modelLoad.retryMaxSeconds=60", helm=helm)))
    assert (
        env["MODEL_SERVER_LOAD_WAIT_SECONDS"],
        env["MODEL_SERVER_LOAD_RETRY_INITIAL_SECONDS"],
        env["MODEL_SERVER_LOAD_RETRY_MAX_SECONDS"],
    ) == ("10", "1", "60")
    with pytest.raises(RenderError, match="retryInitialSeconds"):
        render("server.modelLoad.retryInitialSeconds=0", helm=helm)


@pytest.mark.parametrize("helm", HELMS)
def test_engine_settings_reach_the_server(helm: str) -> None:
    env = env_of(container(render(helm=helm)))
    assert (env["MODEL_SERVER_ENGINE"], env["MODEL_SERVER_ENGINE_THREADS"]) == ("auto", "1")
    env = env_of(container(render("server.engine=sklearn", "server.engineThreads=2", helm=helm)))
    assert (env["MODEL_SERVER_ENGINE"], env["MODEL_SERVER_ENGINE_THREADS"]) == ("sklearn", "2")
    with pytest.raises(RenderError, match="engine"):
        render("server.engine=tensorflow", helm=helm)


@pytest.mark.parametrize("helm", HELMS)
def test_an_experiment_reaches_the_server_as_its_settings(helm: str) -> None:
    env = env_of(container(render(files=("experiment",), helm=helm)))
    assert env["STORAGE_URI"] == "gs://models-bucket/registry/breast-cancer/v1"  # the control
    assert {k: v for k, v in env.items() if k.startswith("MODEL_SERVER_EXPERIMENT")} == {
        "MODEL_SERVER_EXPERIMENT": "checkout-2026-11",
        "MODEL_SERVER_EXPERIMENT_TREATMENT": "gs://models-bucket/registry/breast-cancer/v2",
        "MODEL_SERVER_EXPERIMENT_PERCENT": "30",
        "MODEL_SERVER_EXPERIMENT_USER_HEADER": "x-user-id",
        "MODEL_SERVER_EXPERIMENT_USER_PARAMETER": "user_id",
        "MODEL_SERVER_EXPERIMENT_REQUIRE_USER": "false",
    }
    # The names are the server's own settings (MODEL_SERVER_ + the field, upper case).
    from model_server.settings import ModelServerSettings

    fields = {f"MODEL_SERVER_{name.upper()}" for name in ModelServerSettings.model_fields}
    assert {k for k in env if k.startswith("MODEL_SERVER_EXPERIMENT")} <= fields
    given = render(
        "experiment.treatmentStorageUri=s3://other/breast-cancer/v7",
        files=("experiment",),
        helm=helm,
    )
    assert env_of(container(given))["MODEL_SERVER_EXPERIMENT_TREATMENT"] == (
        "s3://other/breast-cancer/v7"
    )
    assert not any(
        k.startswith("MODEL_SERVER_EXPERIMENT") for k in env_of(container(render(helm=helm)))
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["experiment.name="], "experiment.name is required"),
        (["experiment.treatmentVersion="], "experiment.treatmentVersion"),
        (["experiment.treatmentVersion=v1"], "is model.version, the control"),
        (["canary.trafficPercent=10"], "do not mix"),
        (["registry.uri=pvc://claim/registry"], "must be a gs:// or s3:// URI"),
        (["experiment.percent=100"], "percent"),
        (["experiment.name=Check Out"], "name"),
    ],
)
def test_a_bad_experiment_is_refused_by_name(values: list[str], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render(*values, files=("experiment",))
