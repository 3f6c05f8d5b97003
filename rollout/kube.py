"""The Kubernetes API side of a rollout: read and patch InferenceServices and their rollout
ConfigMaps, record what was done as Events, and drive the canary split for the analysis loop.

Only merge patches (``application/merge-patch+json``, built by ``rollout.isvc``) sent with the
field manager ``model-rollout``, or with ``--dry-run`` printed as the equivalent ``kubectl
patch`` line. Forbidden (403), not found (404), conflicts (409) and an API server that does
not answer become :class:`KubeError` with what to do about them. A ConfigMap model-rollout
creates is owned by the InferenceService, so deleting the InferenceService removes it. It knows
nothing of argparse, Prometheus, the decision or the commands; ``kubernetes`` is imported
where it is used, so that the commands that never call the API (``--help``, the rehearsals, a
dry-run promote or rollback) start without it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from rollout.isvc import (
    FIELD_MANAGER,
    GROUP,
    PLURAL,
    VERSION,
    KubeError,
    PredictorStatus,
    configmap_name,
    kubectl_line,
    parse_status,
    percent_patch,
    state_of,
    state_patch,
)
from rollout.output import Printer
from rollout.settings import RolloutSettings

if TYPE_CHECKING:
    from kubernetes import client


class InferenceServices:
    """One namespace's InferenceServices (and their rollout ConfigMaps) through the API."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def _explain(
        self, error: Exception, verb: str, name: str, kind: str = "inferenceservice"
    ) -> KubeError:
        from kubernetes.client.exceptions import ApiException

        where = f"{kind} {self.namespace}/{name}"
        if not isinstance(error, ApiException):  # urllib3's: no answer at all
            host = self.core.api_client.configuration.host
            reason = getattr(error, "reason", None) or error
            return KubeError(
                f"cannot reach the Kubernetes API at {host} to {verb} {where}: {reason}"
            )
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
        except failures() as error:
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
        except failures() as error:
            raise self._explain(error, "patch", name) from error
        return isvc

    def status(self, name: str) -> PredictorStatus:
        return parse_status(self.get(name))

    def rollout_configmap(self, name: str) -> dict[str, Any] | None:
        """The rollout ConfigMap of ``name`` (None if there is none yet)."""
        cm_name = configmap_name(name)
        try:
            configmap = self.core.read_namespaced_config_map(cm_name, self.namespace)
        except failures() as error:
            if getattr(error, "status", None) == 404:
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
        except failures() as error:
            if getattr(error, "status", None) != 404 or resource_version:
                raise self._explain(error, "patch", cm_name, "configmap") from error
            written = self._create_configmap(name, state, owner or self.get(name))
        return cast(dict[str, Any], self.core.api_client.sanitize_for_serialization(written))

    def _create_configmap(
        self, name: str, state: dict[str, Any], owner: dict[str, Any]
    ) -> client.V1ConfigMap:
        from kubernetes import client

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
        except failures() as error:
            raise self._explain(error, "create", configmap_name(name), "configmap") from error

    def record_event(self, name: str, reason: str, message: str, warning: bool = False) -> None:
        """An Event on the InferenceService (``kubectl describe`` and ``get events`` show it)."""
        from kubernetes import client

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
        except failures() as error:
            raise self._explain(error, "record an event on", name) from error


def failures() -> tuple[type[Exception], ...]:
    """What a call through the client raises: the API's refusals (``ApiException``), and
    urllib3's errors when the API server does not answer at all (unreachable, TLS, timeout)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    return ApiException, HTTPError


def api_client(kubeconfig: str | None, context: str | None) -> client.ApiClient:
    """A client like kubectl's: the kubeconfig (and context) given, else $KUBECONFIG or
    ~/.kube/config, else the in-cluster service account."""
    from kubernetes import client, config
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


def send_patch(  # noqa: PLR0917 (a patch and where it goes)
    isvcs: Any,
    name: str,
    patch: dict[str, Any],
    what: str,
    settings: RolloutSettings,
    printer: Printer,
) -> None:
    """Patch InferenceService ``name``, or with --dry-run print the patch and its kubectl line."""
    if settings.dry_run:
        printer.event("dry-run", f"would {what}", patch=patch)
        print(kubectl_line(name, settings.namespace, patch), flush=True)
    else:
        isvcs.patch(name, patch)
        printer.event("patched", what)
