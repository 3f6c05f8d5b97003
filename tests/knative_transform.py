"""The chart's InferenceService predictor as KServe and Knative turn it into a pod.

The chart tests see the predictor as the chart renders it. Before a pod exists, KServe
(v0.20.0) and Knative Serving (knative-v1.21.1) change it; :func:`knative_pod` applies those
changes, each cited to its upstream function, so that tests can check what the kubelet and the
queue-proxy will really probe, on which port, and what Knative's field masks would refuse:

1. KServe copies the InferenceService's annotations and labels (minus its disallowed lists) and
   the predictor's pod spec into the Knative revision template, and marks the storage URI for
   its storage initializer (:func:`revision_template`);
2. Knative renames the one container port ``user-port``, appends ``PORT`` and ``K_*``, moves
   the readiness probe to the queue-proxy and rewrites the liveness probe's port
   (:func:`serving_container`, :func:`queue_proxy_readiness`);
3. KServe's pod webhook adds the storage initializer, which downloads ``STORAGE_URI`` into
   ``/mnt/models`` and points ``STORAGE_URI`` there (:func:`inject_storage_initializer`).

:func:`field_mask_refusals` models ``pkg/apis/serving/fieldmask.go``: the fields a revision
may set, the rest refused.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes.client.models

from tests.apiserver import KSERVE_ANNOTATION_DISALLOWED, KSERVE_LABEL_DISALLOWED

Manifest = dict[str, Any]

USER_CONTAINER = "kserve-container"  # KServe constants.InferenceServiceContainerName
MODEL_MOUNT = "/mnt/models"  # KServe pkg/constants/constants.go: DefaultModelLocalMountPath
STORAGE_INITIALIZER = "storage-initializer"  # constants.StorageInitializerContainerName
STORAGE_VOLUME = "kserve-provision-location"  # constants.StorageInitializerVolumeName
# constants.StorageInitializerSourceUriInternalAnnotationKey
SOURCE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
# knative/serving pkg/apis/serving/v1/revision_helpers.go: DefaultUserPort, UserPortName.
DEFAULT_USER_PORT = 8080
USER_PORT_NAME = "user-port"
# pkg/apis/serving/k8s_validation.go: reservedEnvVars and reservedPorts (pkg/networking/
# constants.go: 8012, 8013, 8022, 9090, 9091; knative.dev/pkg pprof: 8008).
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
RESERVED_PORTS = frozenset({8012, 8013, 8022, 9090, 9091, 8008})


@dataclass
class KnativePod:
    """What runs: the pod spec, its metadata, and what probes which port."""

    annotations: dict[str, str]
    labels: dict[str, str]
    spec: Manifest
    protocol: str
    """The routed port's name as the chart gave it: ``h2c`` (HTTP/2, gRPC) or ``http1``."""
    user_port: int
    """The one routed container port (Knative's ``user-port``)."""
    queue_readiness: Manifest | None
    """The readiness probe the queue-proxy runs against the user container (host, port)."""
    refused: list[str] = field(default_factory=list)
    """Fields Knative's field masks would refuse (the revision is then never created)."""

    @property
    def container(self) -> Manifest:
        found: list[Manifest] = [c for c in self.spec["containers"] if c["name"] == USER_CONTAINER]
        (user,) = found
        return user

    @property
    def env(self) -> dict[str, str]:
        return {e["name"]: e.get("value", "") for e in self.container.get("env", [])}


def pod_spec_fields() -> frozenset[str]:
    """The JSON names of a Kubernetes PodSpec (the rest of a predictor is KServe's own)."""
    return frozenset(kubernetes.client.models.V1PodSpec.attribute_map.values())


def revision_template(
    isvc: Manifest,
    annotation_disallowed: Iterable[str] = KSERVE_ANNOTATION_DISALLOWED,
    label_disallowed: Iterable[str] = KSERVE_LABEL_DISALLOWED,
) -> tuple[dict[str, str], dict[str, str], Manifest]:
    """Annotations, labels and pod spec of the predictor's Knative revision template.

    KServe v0.20.0 ``pkg/controller/v1beta1/inferenceservice/components/predictor.go``:
    ``buildPredictorResources`` keeps the InferenceService's annotations not in
    ``ServiceAnnotationDisallowedList``; ``buildObjectMeta`` unions them with the predictor's
    own, and the labels (InferenceService's, predictor's, ``serving.kserve.io/inferenceservice``
    and ``component: predictor``); ``addStorageInitializerAnnotations`` sets the source URI
    annotation from ``CustomPredictor.GetStorageUri`` (``pkg/apis/serving/v1beta1/
    predictor_custom.go``: the ``STORAGE_URI`` env of ``kserve-container``).
    ``reconcilers/knative/ksvc_reconciler.go``, ``createKnativeService``: the template's labels
    minus ``RevisionTemplateLabelDisallowedList``, and the pod spec.
    """
    meta = isvc.get("metadata") or {}
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k not in set(annotation_disallowed)
    }
    annotations.update(predictor.get("annotations") or {})
    labels = {
        **(meta.get("labels") or {}),
        **(predictor.get("labels") or {}),
        "serving.kserve.io/inferenceservice": meta["name"],
        "component": "predictor",
    }
    labels = {k: v for k, v in labels.items() if k not in set(label_disallowed)}
    spec = {k: copy.deepcopy(v) for k, v in predictor.items() if k in pod_spec_fields()}
    (user,) = [c for c in spec["containers"] if c["name"] == USER_CONTAINER]
    storage_uri = {e["name"]: e.get("value") for e in user.get("env", [])}.get("STORAGE_URI")
    if storage_uri:
        annotations[SOURCE_URI_ANNOTATION] = storage_uri
    return annotations, labels, spec


def _port_of(action: Mapping[str, Any]) -> int:
    """``intstr.IntValue()``: a number, or 0 for a name."""
    port = str(action.get("port", ""))
    return int(port) if port.isdigit() else 0


def user_port(container: Manifest) -> int:
    """knative/serving ``pkg/reconciler/revision/resources/deploy.go``, ``getUserPort``."""
    ports = container.get("ports") or []
    return (
        int(ports[0]["containerPort"])
        if ports and ports[0].get("containerPort")
        else (DEFAULT_USER_PORT)
    )


def queue_proxy_readiness(container: Manifest) -> Manifest | None:
    """The user readiness probe as the queue-proxy runs it.

    knative/serving ``pkg/reconciler/revision/resources/queue.go``, ``makeQueueContainer``: the
    probe port is the probe's own number if it has one, else the user port;
    ``applyReadinessProbeDefaults`` sets host 127.0.0.1, that port and scheme HTTP. The
    queue-proxy speaks HTTP/1 to it unless ``autodetect-http2`` is Enabled
    (``pkg/queue/readiness/probe.go``, ``httpProbe``: ``MaxProtoMajor: 1``; Disabled by default
    in ``pkg/apis/config/features.go``).
    """
    probe = copy.deepcopy(container.get("readinessProbe"))
    if probe is None:
        return None
    port = user_port(container)
    for kind in ("httpGet", "tcpSocket", "grpc"):
        if kind in probe and _port_of(probe[kind]) > 0:
            port = _port_of(probe[kind])
    if "httpGet" in probe:
        probe["httpGet"].update(host="127.0.0.1", port=port)
        probe["httpGet"].setdefault("scheme", "HTTP")
    elif "tcpSocket" in probe:
        probe["tcpSocket"].update(host="127.0.0.1", port=port)
    elif "exec" in probe:  # still run by the kubelet; the queue-proxy connects over TCP
        probe = {**{k: v for k, v in probe.items() if k != "exec"}}
        probe["tcpSocket"] = {"host": "127.0.0.1", "port": port}
    elif "grpc" in probe:
        probe["grpc"]["port"] = port
    return probe


def serving_container(
    container: Manifest, revision: str, configuration: str, service: str
) -> Manifest:
    """The user container in the revision's Deployment.

    knative/serving ``pkg/reconciler/revision/resources/deploy.go``: ``makeServingContainer``
    replaces the ports with one ``user-port`` (``buildContainerPorts``), appends ``PORT``
    (``buildUserPortEnv``) and rewrites the liveness probe's port (``rewriteUserLivenessProbe``:
    ``httpGet`` and ``tcpSocket`` get the user port; ``grpc`` and ``exec`` are left alone);
    ``makeContainer`` appends ``K_REVISION``, ``K_CONFIGURATION``, ``K_SERVICE``
    (``env_var.go``, ``getKnativeEnvVar``) and drops an httpGet, tcpSocket or grpc readiness
    probe, which the queue-proxy runs instead.
    """
    out = copy.deepcopy(container)
    port = user_port(container)
    out["ports"] = [{"name": USER_PORT_NAME, "containerPort": port}]
    out["env"] = [
        *out.get("env", []),
        {"name": "PORT", "value": str(port)},
        {"name": "K_REVISION", "value": revision},
        {"name": "K_CONFIGURATION", "value": configuration},
        {"name": "K_SERVICE", "value": service},
    ]
    readiness = out.get("readinessProbe") or {}
    if {"httpGet", "tcpSocket", "grpc"} & readiness.keys():
        del out["readinessProbe"]
    liveness = out.get("livenessProbe") or {}
    if "httpGet" in liveness:
        liveness["httpGet"]["port"] = port
    elif "tcpSocket" in liveness:
        liveness["tcpSocket"]["port"] = port
    return out


def inject_storage_initializer(spec: Manifest, annotations: Mapping[str, str]) -> None:
    """KServe v0.20.0 ``pkg/webhook/admission/pod/storage_initializer_injector.go``:
    ``InjectStorageInitializer`` reads the source URI annotation; ``CommonStorageInitialization``
    (one URI) adds the ``storage-initializer`` init container with args ``[URI, /mnt/models]``,
    mounts the ``kserve-provision-location`` emptyDir at ``/mnt/models`` in it and in the user
    container, and sets the user container's ``STORAGE_URI`` to ``/mnt/models``."""
    uri = annotations.get(SOURCE_URI_ANNOTATION)
    if not uri:
        return
    spec.setdefault("volumes", []).append({"name": STORAGE_VOLUME, "emptyDir": {}})
    mount = {"name": STORAGE_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": True}
    spec.setdefault("initContainers", []).append(
        {"name": STORAGE_INITIALIZER, "args": [uri, MODEL_MOUNT], "volumeMounts": [mount]}
    )
    for container in spec["containers"]:
        if container["name"] != USER_CONTAINER:
            continue
        container.setdefault("volumeMounts", []).append(mount)
        for env in container.get("env", []):
            if env["name"] == "STORAGE_URI" and env.get("value"):
                env["value"] = MODEL_MOUNT


def knative_pod(
    isvc: Manifest, features: Mapping[str, str] | None = None, generation: int = 1
) -> KnativePod:
    """The predictor's pod in Knative mode, from the rendered InferenceService."""
    name = isvc["metadata"]["name"]
    annotations, labels, spec = revision_template(isvc)
    refused = field_mask_refusals(spec, features or {})
    (user,) = [c for c in spec["containers"] if c["name"] == USER_CONTAINER]
    ports = user.get("ports") or []
    protocol = str(ports[0].get("name", "http1")) if ports else "http1"
    queue = queue_proxy_readiness(user)
    # KServe names the Knative Service NAME-predictor; Knative numbers its revisions.
    service = f"{name}-predictor"
    pod_spec = dict(spec)
    pod_spec["containers"] = [
        serving_container(c, f"{service}-{generation:05d}", service, service)
        if c["name"] == USER_CONTAINER
        else c
        for c in spec["containers"]
    ]
    inject_storage_initializer(pod_spec, annotations)
    return KnativePod(annotations, labels, pod_spec, protocol, user_port(user), queue, refused)


# -- knative/serving pkg/apis/serving/fieldmask.go (knative-v1.21.1) ----------------------------

# Flags as config-features names them; a flag other than "Disabled" lets the field through
# (the masks test `!= config.Disabled`). Defaults: pkg/apis/config/features.go,
# defaultFeaturesConfig.
DEFAULT_FEATURES = {"kubernetes.podspec-volumes-emptydir": "Enabled"}

_POD_ALWAYS = {"serviceAccountName", "containers", "volumes", "imagePullSecrets"}
_POD_ALWAYS |= {"enableServiceLinks", "automountServiceAccountToken"}
_POD_FLAGGED = {  # PodSpecMask
    "affinity": "kubernetes.podspec-affinity",
    "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
    "hostAliases": "kubernetes.podspec-hostaliases",
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "tolerations": "kubernetes.podspec-tolerations",
    "securityContext": "kubernetes.podspec-securitycontext",
    "shareProcessNamespace": "kubernetes.podspec-shareprocessnamespace",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
    "schedulerName": "kubernetes.podspec-schedulername",
    "initContainers": "kubernetes.podspec-init-containers",
    "dnsPolicy": "kubernetes.podspec-dnspolicy",
    "dnsConfig": "kubernetes.podspec-dnsconfig",
    "hostIPC": "kubernetes.podspec-hostipc",
    "hostPID": "kubernetes.podspec-hostpid",
    "hostNetwork": "kubernetes.podspec-hostnetwork",
}
_CONTAINER = {  # ContainerMask
    "name", "args", "command", "env", "workingDir", "envFrom", "image", "imagePullPolicy",
    "livenessProbe", "ports", "readinessProbe", "resources", "securityContext", "startupProbe",
    "terminationMessagePath", "terminationMessagePolicy", "volumeMounts",
}  # fmt: skip
_SECURITY_CONTEXT = {  # SecurityContextMask (privileged only when false)
    "capabilities", "readOnlyRootFilesystem", "runAsUser", "runAsGroup", "runAsNonRoot",
    "allowPrivilegeEscalation", "seccompProfile", "privileged",
}  # fmt: skip
_POD_SECURITY_CONTEXT = {  # PodSecurityContextMask, with podspec-securitycontext
    "runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups", "seccompProfile",
}  # fmt: skip
_PROBE = {  # ProbeMask and HandlerMask
    "exec", "httpGet", "tcpSocket", "grpc", "initialDelaySeconds", "timeoutSeconds",
    "periodSeconds", "successThreshold", "failureThreshold", "terminationGracePeriodSeconds",
}  # fmt: skip
_HANDLERS = {  # HTTPGetActionMask, TCPSocketActionMask, GRPCActionMask, ExecActionMask
    "httpGet": {"host", "path", "scheme", "httpHeaders", "port"},
    "tcpSocket": {"host", "port"},
    "grpc": {"port", "service"},
    "exec": {"command"},
}
_PORT = {"containerPort", "name", "protocol"}  # ContainerPortMask
_VOLUME_MOUNT = {"name", "readOnly", "mountPath", "subPath"}  # VolumeMountMask
_VOLUME_SOURCES = {  # VolumeSourceMask
    "secret": None,
    "configMap": None,
    "projected": None,
    "emptyDir": "kubernetes.podspec-volumes-emptydir",
    "persistentVolumeClaim": "kubernetes.podspec-persistent-volume-claim",
    "hostPath": "kubernetes.podspec-volumes-hostpath",
    "csi": "kubernetes.podspec-volumes-csi",
    "image": "kubernetes.podspec-volumes-image",
}


def field_mask_refusals(spec: Manifest, features: Mapping[str, str]) -> list[str]:
    """Every field of the revision's pod spec that Knative's field masks drop (and so refuse),
    with ``features`` (``config-features`` flags: Enabled, Allowed or Disabled) over the
    defaults. Also the reserved env vars and ports of ``k8s_validation.go``."""
    mask = _Mask({**DEFAULT_FEATURES, **features})
    allowed_pod = _POD_ALWAYS | {k for k, flag in _POD_FLAGGED.items() if mask.on(flag)}
    mask.extra(spec, allowed_pod, "spec")
    if "automountServiceAccountToken" in spec and spec["automountServiceAccountToken"] is not False:
        mask.refused.append("spec.automountServiceAccountToken (only false)")
    if "securityContext" in allowed_pod:
        mask.extra(spec.get("securityContext") or {}, _POD_SECURITY_CONTEXT, "spec.securityContext")
    sources = {k for k, flag in _VOLUME_SOURCES.items() if mask.on(flag)}
    for i, volume in enumerate(spec.get("volumes") or []):
        mask.extra(volume, {"name"} | sources, f"spec.volumes[{i}]")
    for i, container in enumerate(spec.get("containers") or []):
        mask.container(container, f"spec.containers[{i}]")
    return mask.refused


@dataclass
class _Mask:
    flags: Mapping[str, str]
    refused: list[str] = field(default_factory=list)

    def on(self, flag: str | None) -> bool:
        return flag is None or self.flags.get(flag, "Disabled") != "Disabled"

    def extra(self, obj: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
        self.refused.extend(f"{path}.{k}" for k in obj if k not in set(allowed))

    def container(self, container: Manifest, where: str) -> None:
        self.extra(container, _CONTAINER, where)
        context = container.get("securityContext") or {}
        self.extra(context, _SECURITY_CONTEXT, f"{where}.securityContext")
        if context.get("privileged") not in (None, False):
            self.refused.append(f"{where}.securityContext.privileged (only false)")
        for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container.get(probe_name) or {}
            self.extra(probe, _PROBE, f"{where}.{probe_name}")
            for handler, allowed in _HANDLERS.items():
                self.extra(probe.get(handler) or {}, allowed, f"{where}.{probe_name}.{handler}")
        for j, port in enumerate(container.get("ports") or []):
            self.extra(port, _PORT, f"{where}.ports[{j}]")
            if port.get("containerPort") in RESERVED_PORTS:
                self.refused.append(f"{where}.ports[{j}]: {port['containerPort']} is reserved")
        propagation = self.on("kubernetes.podspec-volumes-mount-propagation")
        mount_fields = _VOLUME_MOUNT | ({"mountPropagation"} if propagation else set())
        for j, mount in enumerate(container.get("volumeMounts") or []):
            self.extra(mount, mount_fields, f"{where}.volumeMounts[{j}]")
        sources = {"configMapKeyRef", "secretKeyRef"}  # EnvVarSourceMask
        if self.on("kubernetes.podspec-fieldref"):
            sources |= {"fieldRef", "resourceFieldRef"}
        for env in container.get("env") or []:
            self.extra(env.get("valueFrom") or {}, sources, f"{where}.env[{env['name']}]")
            if env["name"] in RESERVED_ENV:
                self.refused.append(f"{where}.env[{env['name']}] is reserved")
