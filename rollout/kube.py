"""The Kubernetes side of a rollout: read and patch one InferenceService, record what was done.

Only merge patches (``application/merge-patch+json``), each printable as the equivalent
``kubectl patch`` line for ``--dry-run``. The rollout's state lives in an annotation on the
InferenceService, so ``status`` works from any machine and a restarted ``start`` resumes.
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
STATE_ANNOTATION = "model-serving.io/rollout"
STORAGE_URI = "STORAGE_URI"


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
    )


def state_of(isvc: dict[str, Any]) -> dict[str, Any] | None:
    """The rollout state saved in the InferenceService's annotation, if any."""
    annotations = isvc.get("metadata", {}).get("annotations") or {}
    raw = annotations.get(STATE_ANNOTATION)
    if not raw:
        return None
    try:
        state: dict[str, Any] = json.loads(raw)
    except ValueError as error:
        raise KubeError(f"the {STATE_ANNOTATION} annotation is not JSON: {error}") from error
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


def state_patch(state: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"annotations": {STATE_ANNOTATION: json.dumps(state, sort_keys=True)}}}


def kubectl_line(name: str, namespace: str, patch: dict[str, Any]) -> str:
    """The ``kubectl patch`` command that sends ``patch``."""
    body = json.dumps(patch, separators=(",", ":"))
    return (
        f"kubectl patch inferenceservice {name} -n {namespace} --type merge -p {shlex.quote(body)}"
    )


class InferenceServices:
    """One namespace's InferenceServices through the Kubernetes API."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def _explain(self, error: ApiException, verb: str, name: str) -> KubeError:
        where = f"inferenceservice {self.namespace}/{name}"
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
                    GROUP, VERSION, self.namespace, PLURAL, name, patch
                ),
            )
        except ApiException as error:
            raise self._explain(error, "patch", name) from error
        return isvc

    def status(self, name: str) -> PredictorStatus:
        return parse_status(self.get(name))

    def load_state(self, name: str) -> dict[str, Any] | None:
        return state_of(self.get(name))

    def save_state(self, name: str, state: dict[str, Any]) -> None:
        self.patch(name, state_patch(state))

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
        if not self.dry_run:
            self.isvcs.save_state(self.name, state)

    def load_state(self) -> dict[str, Any] | None:
        return self.isvcs.load_state(self.name)
