"""What an InferenceService document says and how to patch it: no API calls.

Its predictor's status, storage URI and experiment settings as read from the document, the
merge patches model-rollout sends (``canaryTrafficPercent`` at every step, the predictor
container's ``STORAGE_URI`` once at ``start``, its ``MODEL_SERVER_EXPERIMENT_*`` variables), the
rollout ConfigMap's keys, and each patch as the equivalent ``kubectl patch`` line for
``--dry-run``. It knows nothing of the Kubernetes client, Prometheus, argparse or the commands:
``rollout.kube`` sends what this builds.

The rollout's state and the release's rollout defaults live in the ConfigMap ``NAME-rollout``,
never on the InferenceService: KServe copies every InferenceService annotation and label into
the Knative revision template (``buildObjectMeta`` in KServe's
``pkg/controller/v1beta1/inferenceservice/components/predictor.go``, and ``createKnativeService``
in ``reconcilers/knative/ksvc_reconciler.go``), so a state annotation written each round would
start a new, cold revision each round. ``canaryTrafficPercent`` only changes the Knative
service's ``spec.traffic``, not its template.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
STORAGE_URI = "STORAGE_URI"
FIELD_MANAGER = "model-rollout"
"""Field manager of every write (``kubectl get -o yaml --show-managed-fields`` names it)."""
STATE_KEY, STEPS_KEY, INTERVAL_KEY = "state", "steps", "intervalSeconds"
"""Keys of the rollout ConfigMap: the state (JSON) and the chart's rollout defaults."""
KNATIVE_MODES = {"Knative", "Serverless"}
"""KServe's Knative deployment mode, by its name since 0.16 and its older name."""


def configmap_name(name: str) -> str:
    """The rollout ConfigMap of InferenceService ``name``."""
    return f"{name}-rollout"


class KubeError(Exception):
    """The Kubernetes API refused or failed a call; the message says what to do."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Traffic:
    revision: str
    percent: int
    latest: bool
    tag: str | None = None


@dataclass(frozen=True)
class PredictorStatus:
    """``status.components.predictor`` and readiness of an InferenceService."""

    latest_created: str | None = None
    latest_ready: str | None = None
    latest_rolled_out: str | None = None
    previous_rolled_out: str | None = None
    traffic: tuple[Traffic, ...] = ()
    ready: bool = False
    storage_uri: str | None = None
    canary_percent: int | None = None
    conditions: dict[str, str] = field(default_factory=dict)
    deployment_mode: str | None = None

    @property
    def latest_is_ready(self) -> bool:
        """The latest created revision is ready (the one a canary sends traffic to)."""
        return self.latest_created is not None and self.latest_created == self.latest_ready


def _container(spec: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = spec.get("predictor", {}).get("containers") or [{}]
    return containers[0]


def storage_uri_of(isvc: dict[str, Any]) -> str | None:
    spec = isvc.get("spec", {})
    for env in _container(spec).get("env") or []:
        if env.get("name") == STORAGE_URI:
            return str(env.get("value"))
    uri = spec.get("predictor", {}).get("model", {}).get("storageUri")
    return str(uri) if uri else None


def parse_status(isvc: dict[str, Any]) -> PredictorStatus:
    status = isvc.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    conditions = {c.get("type", ""): c.get("status", "") for c in status.get("conditions") or []}
    traffic = tuple(
        Traffic(
            revision=t.get("revisionName", ""),
            percent=int(t.get("percent") or 0),
            latest=bool(t.get("latestRevision")),
            tag=t.get("tag"),
        )
        for t in predictor.get("traffic") or []
    )
    percent = isvc.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")
    return PredictorStatus(
        latest_created=predictor.get("latestCreatedRevision"),
        latest_ready=predictor.get("latestReadyRevision"),
        latest_rolled_out=predictor.get("latestRolledoutRevision"),
        previous_rolled_out=predictor.get("previousRolledoutRevision"),
        traffic=traffic,
        ready=conditions.get("Ready") == "True",
        storage_uri=storage_uri_of(isvc),
        canary_percent=None if percent is None else int(percent),
        conditions=conditions,
        deployment_mode=status.get("deploymentMode"),
    )


def check_knative_mode(isvc: dict[str, Any]) -> None:
    """Refuse an InferenceService whose canary split KServe would ignore.

    ``canaryTrafficPercent`` works in Knative mode only. KServe records the mode it really
    uses in ``status.deploymentMode``; KServe before 0.16 does not know the annotation value
    ``Knative`` and falls back to the cluster's default mode, which this reveals.
    """
    mode = (isvc.get("status") or {}).get("deploymentMode")
    if mode and mode not in KNATIVE_MODES:
        asked = (isvc.get("metadata", {}).get("annotations") or {}).get(
            "serving.kserve.io/deploymentMode", "unset"
        )
        raise KubeError(
            f"KServe runs this InferenceService in {mode} mode (annotation asks for {asked}): "
            "canaryTrafficPercent is ignored there. Canaries need Knative mode, and the "
            "Knative/Standard annotation values need KServe 0.16 or newer"
        )


def check_rolled_out(isvc: dict[str, Any]) -> None:
    """Refuse a canary that KServe would turn into a full cutover.

    KServe splits the traffic only when ``canaryTrafficPercent`` is set *and*
    ``status.components.predictor.latestRolledoutRevision`` is not empty; otherwise it routes
    100% to the latest revision (``createKnativeService`` in KServe v0.20.0's
    ``pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go``).
    Until a revision has rolled out there is no control to keep the rest of the traffic.
    """
    status = parse_status(isvc)
    if status.latest_rolled_out:
        return
    name = isvc.get("metadata", {}).get("name", "the InferenceService")
    namespace = isvc.get("metadata", {}).get("namespace", "NS")
    raise KubeError(
        f"{name} has no rolled-out revision yet (status.components.predictor."
        "latestRolledoutRevision is empty): KServe ignores canaryTrafficPercent until one has "
        "rolled out and would send all the traffic to the new version at once. Wait until it is "
        f"Ready (kubectl wait --for=condition=Ready inferenceservice/{name} -n {namespace}), "
        "then start the canary"
    )


def version_in(uri: str | None) -> str | None:
    """The registry version (``vN``) a storage URI ends in, if it does."""
    match = VERSION_IN_URI.search(uri or "")
    return match.group(1) if match else None


def state_of(configmap: dict[str, Any] | None) -> dict[str, Any] | None:
    """The rollout state saved in the rollout ConfigMap, if any."""
    raw = ((configmap or {}).get("data") or {}).get(STATE_KEY)
    if not raw:
        return None
    try:
        state: dict[str, Any] = json.loads(raw)
    except ValueError as error:
        name = (configmap or {}).get("metadata", {}).get("name")
        raise KubeError(f"configmap {name}: {STATE_KEY} is not JSON: {error}") from error
    return state


def percent_patch(percent: int | None) -> dict[str, Any]:
    """Set (or, with ``None``, remove) ``canaryTrafficPercent``."""
    return {"spec": {"predictor": {"canaryTrafficPercent": percent}}}


def storage_patch(isvc: dict[str, Any], uri: str, percent: int) -> dict[str, Any]:
    """Serve ``uri`` as the new (latest) revision with ``percent`` of the traffic.

    A merge patch replaces lists whole, so the container list is sent complete with only
    STORAGE_URI changed, and ``resourceVersion`` makes a concurrent edit fail (409) rather
    than be overwritten.
    """
    spec = isvc.get("spec", {})
    containers = [dict(c) for c in spec.get("predictor", {}).get("containers") or []]
    if not containers:
        raise KubeError("the InferenceService has no predictor container to point at a new URI")
    env = [dict(e) for e in containers[0].get("env") or []]
    found = False
    for entry in env:
        if entry.get("name") == STORAGE_URI:
            entry["value"], found = uri, True
    if not found:
        env.insert(0, {"name": STORAGE_URI, "value": uri})
    containers[0] = {**containers[0], "env": env}
    return {
        "metadata": {"resourceVersion": isvc.get("metadata", {}).get("resourceVersion")},
        "spec": {"predictor": {"containers": containers, "canaryTrafficPercent": percent}},
    }


def state_patch(state: dict[str, Any], resource_version: str | None = None) -> dict[str, Any]:
    """Write ``state`` into the rollout ConfigMap; with ``resource_version``, only over the
    version read (a concurrent ``pause`` then makes this write fail with 409, not vanish)."""
    patch: dict[str, Any] = {"data": {STATE_KEY: json.dumps(state, sort_keys=True)}}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch


def kubectl_line(
    name: str, namespace: str, patch: dict[str, Any], kind: str = "inferenceservice"
) -> str:
    """The ``kubectl patch`` command that sends ``patch`` as model-rollout does."""
    body = json.dumps(patch, separators=(",", ":"))
    return (
        f"kubectl patch {kind} {name} -n {namespace} --type merge "
        f"--field-manager {FIELD_MANAGER} -p {shlex.quote(body)}"
    )


VERSION_IN_URI = re.compile(r"/(v[1-9][0-9]*)/?$")


def treatment_uri(
    current: str | None,
    version: str | None,
    storage_uri: str | None,
    flags: tuple[str, str] = ("--version", "--storage-uri"),
) -> tuple[str, str]:
    """(storage URI, version) of the treatment, from its full URI or its version next to
    ``current``; ``flags`` name the two options in errors."""
    if storage_uri:
        match = VERSION_IN_URI.search(storage_uri)
        if match is None:
            raise ValueError(f"{flags[1]} {storage_uri!r} must end in a registry vN")
        return storage_uri.rstrip("/"), match.group(1)
    if version is None or not re.fullmatch(r"v[1-9][0-9]*", version):
        raise ValueError(f"{flags[0]} {version!r} must look like v3")
    if current is None or VERSION_IN_URI.search(current) is None:
        raise ValueError(f"the current storage URI does not end in a registry vN: use {flags[1]}")
    return VERSION_IN_URI.sub(f"/{version}", current.rstrip("/")), version


EXPERIMENT_ENV = "MODEL_SERVER_EXPERIMENT"
"""Prefix of the predictor's experiment settings (``MODEL_SERVER_EXPERIMENT_*``)."""


def experiment_env(isvc: dict[str, Any]) -> dict[str, str]:
    """The predictor container's experiment settings, by variable name."""
    env = _container(isvc.get("spec", {})).get("env") or []
    return {
        str(e["name"]): str(e.get("value", ""))
        for e in env
        if str(e.get("name", "")).startswith(EXPERIMENT_ENV)
    }


def env_patch(isvc: dict[str, Any], changes: dict[str, str | None]) -> dict[str, Any]:
    """Set (or, with None, remove) variables of the predictor container.

    As in :func:`storage_patch`: the container list whole (a merge patch replaces lists), over
    the ``resourceVersion`` read, so a concurrent edit fails with 409 instead of being lost.
    """
    spec = isvc.get("spec", {})
    containers = [dict(c) for c in spec.get("predictor", {}).get("containers") or []]
    if not containers:
        raise KubeError("the InferenceService has no predictor container to configure")
    env: list[dict[str, Any]] = []
    for entry in containers[0].get("env") or []:
        name = entry.get("name")
        if name not in changes:
            env.append(dict(entry))
        elif changes[name] is not None:  # in place: the order of the rest is kept
            env.append({"name": name, "value": changes[name]})
    present = {e.get("name") for e in containers[0].get("env") or []}
    env += [
        {"name": k, "value": v} for k, v in changes.items() if v is not None and k not in present
    ]
    containers[0] = {**containers[0], "env": env}
    return {
        "metadata": {"resourceVersion": isvc.get("metadata", {}).get("resourceVersion")},
        "spec": {"predictor": {"containers": containers}},
    }
