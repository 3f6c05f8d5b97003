"""The Kubernetes side of a rollout: read and patch one InferenceService, record what was done.

Only merge patches (``application/merge-patch+json``) sent with the field manager
``model-rollout``, each printable as the equivalent ``kubectl patch`` line for ``--dry-run``.
The InferenceService is patched in two places only: ``spec.predictor.canaryTrafficPercent``
(every step) and the predictor container's ``STORAGE_URI`` (once, at ``start``).

The rollout's state and the release's rollout defaults live in the ConfigMap ``NAME-rollout``,
never on the InferenceService: KServe copies every InferenceService annotation and label into
the Knative revision template (``buildObjectMeta`` in KServe's
``pkg/controller/v1beta1/inferenceservice/components/predictor.go``, and ``createKnativeService``
in ``reconcilers/knative/ksvc_reconciler.go``), so a state annotation written each round would
start a new, cold revision each round. ``canaryTrafficPercent`` only changes the Knative
service's ``spec.traffic``, not its template. A ConfigMap model-rollout creates is owned by the
InferenceService, so deleting the InferenceService removes it.

Every step and verdict is also a Kubernetes Event on the InferenceService.
Forbidden (403) and not found (404) become :class:`KubeError` with what to do about them.
"""

from __future__ import annotations

import json
import shlex
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

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


class InferenceServices:
    """One namespace's InferenceServices (and their rollout ConfigMaps) through the API."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def _explain(
        self, error: ApiException, verb: str, name: str, kind: str = "inferenceservice"
    ) -> KubeError:
        where = f"{kind} {self.namespace}/{name}"
        if error.status == 404:
            return KubeError(f"{where} not found (is the namespace right?)", 404)
        if error.status == 403:
            return KubeError(
                f"forbidden to {verb} {where}: the account needs the chart's rollout Role "
                "(helm value rollout.rbac.create=true) or equivalent RBAC",
                403,
            )
        if error.status == 409:
            return KubeError(f"{where} changed while patching it; run the command again", 409)
        return KubeError(f"cannot {verb} {where}: HTTP {error.status} {error.reason}", error.status)

    def get(self, name: str) -> dict[str, Any]:
        try:
            isvc = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name
                ),
            )
        except ApiException as error:
            raise self._explain(error, "get", name) from error
        return isvc

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        try:
            isvc = cast(
                dict[str, Any],
                self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    name,
                    patch,
                    field_manager=FIELD_MANAGER,
                ),
            )
        except ApiException as error:
            raise self._explain(error, "patch", name) from error
        return isvc

    def status(self, name: str) -> PredictorStatus:
        return parse_status(self.get(name))

    def rollout_configmap(self, name: str) -> dict[str, Any] | None:
        """The rollout ConfigMap of ``name`` (None if there is none yet)."""
        cm_name = configmap_name(name)
        try:
            configmap = self.core.read_namespaced_config_map(cm_name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise self._explain(error, "get", cm_name, "configmap") from error
        return cast(dict[str, Any], self.core.api_client.sanitize_for_serialization(configmap))

    def load_state(self, name: str) -> dict[str, Any] | None:
        return state_of(self.rollout_configmap(name))

    def save_state(
        self,
        name: str,
        state: dict[str, Any],
        owner: dict[str, Any] | None = None,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Write the state into ``NAME-rollout``, creating it (owned by ``owner``, the
        InferenceService) when the chart did not. Returns the ConfigMap as written."""
        cm_name = configmap_name(name)
        try:
            written = self.core.patch_namespaced_config_map(
                cm_name,
                self.namespace,
                state_patch(state, resource_version),
                field_manager=FIELD_MANAGER,
            )
        except ApiException as error:
            if error.status != 404 or resource_version:
                raise self._explain(error, "patch", cm_name, "configmap") from error
            written = self._create_configmap(name, state, owner or self.get(name))
        return cast(dict[str, Any], self.core.api_client.sanitize_for_serialization(written))

    def _create_configmap(
        self, name: str, state: dict[str, Any], owner: dict[str, Any]
    ) -> client.V1ConfigMap:
        meta = owner.get("metadata", {})
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=configmap_name(name),
                labels={
                    "app.kubernetes.io/managed-by": FIELD_MANAGER,
                    "serving.kserve.io/inferenceservice": name,
                },
                owner_references=[
                    client.V1OwnerReference(
                        api_version=f"{GROUP}/{VERSION}",
                        kind="InferenceService",
                        name=name,
                        uid=meta.get("uid", ""),
                    )
                ]
                if meta.get("uid")
                else None,
            ),
            data=state_patch(state)["data"],
        )
        try:
            return self.core.create_namespaced_config_map(
                self.namespace, body, field_manager=FIELD_MANAGER
            )
        except ApiException as error:
            raise self._explain(error, "create", configmap_name(name), "configmap") from error

    def record_event(self, name: str, reason: str, message: str, warning: bool = False) -> None:
        """An Event on the InferenceService (``kubectl describe`` and ``get events`` show it)."""
        now = datetime.now(UTC)
        event = client.CoreV1Event(
            # Named like the events Kubernetes makes: the object's name and a unique suffix.
            metadata=client.V1ObjectMeta(name=f"{name}.{uuid.uuid4().hex[:16]}"),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind="InferenceService",
                name=name,
                namespace=self.namespace,
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            source=client.V1EventSource(component="model-rollout"),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self.core.create_namespaced_event(self.namespace, event)
        except ApiException as error:
            raise self._explain(error, "record an event on", name) from error


def api_client(kubeconfig: str | None, context: str | None) -> client.ApiClient:
    """A client like kubectl's: the kubeconfig (and context) given, else $KUBECONFIG or
    ~/.kube/config, else the in-cluster service account."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        return cast(
            client.ApiClient,
            config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context
            ),
        )
    except (ConfigException, OSError) as error:
        if kubeconfig or context:
            raise KubeError(f"cannot load kubeconfig: {error}") from error
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except ConfigException:
            raise KubeError(
                f"no Kubernetes configuration: {error} (set KUBECONFIG or --kubeconfig)"
            ) from error
        return client.ApiClient()


class KubeTarget:
    """The canary split of one InferenceService, for the analysis loop."""

    def __init__(self, isvcs: InferenceServices, name: str, dry_run: bool = False) -> None:
        self.isvcs, self.name, self.dry_run = isvcs, name, dry_run
        self.control_revision: str | None = None
        self._version: str | None = None
        """resourceVersion of the rollout ConfigMap as last read or written."""

    def set_percent(self, percent: int | None) -> None:
        patch = percent_patch(percent)
        if self.dry_run:
            print(kubectl_line(self.name, self.isvcs.namespace, patch), flush=True)
            return
        self.isvcs.patch(self.name, patch)

    def treatment_ready(self) -> bool:
        status = self.isvcs.status(self.name)
        return status.latest_is_ready and status.latest_created != self.control_revision

    def record(self, reason: str, message: str, warning: bool = False) -> None:
        if not self.dry_run:
            self.isvcs.record_event(self.name, reason, message, warning)

    def save_state(self, state: dict[str, Any]) -> None:
        """Write over the version last read; if someone paused the rollout meanwhile, the
        write fails (409), and it is redone keeping their pause."""
        if self.dry_run:
            return
        try:
            written = self.isvcs.save_state(self.name, state, resource_version=self._version)
        except KubeError as error:
            if error.status != 409:
                raise
            persisted = self.load_state() or {}
            if persisted.get("phase") == "paused" and state.get("phase") == "progressing":
                state = {**state, "phase": "paused"}
            written = self.isvcs.save_state(self.name, state, resource_version=self._version)
        self._version = written.get("metadata", {}).get("resourceVersion")

    def load_state(self) -> dict[str, Any] | None:
        configmap = self.isvcs.rollout_configmap(self.name)
        self._version = (configmap or {}).get("metadata", {}).get("resourceVersion")
        return state_of(configmap)


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
