"""kmock's Kubernetes API emulator, taught the parts of the API server a rollout relies on.

kmock stores objects as plain dicts and merges every PATCH naively. The rollout tests need
what a real API server does on top of that, so this subclass adds, for every object:

- ``resourceVersion`` that changes on every write, and a 409 when a patch carries an older one
  (optimistic concurrency, as model-rollout uses for its state);
- JSON merge patch semantics (RFC 7386): ``null`` deletes a key, lists are replaced whole;
- field ownership (server-side apply): every write records which field manager set which
  fields; an apply (``application/apply-patch+yaml``, as Helm 4 sends) that would change a
  field another manager owns is refused with 409 unless ``force=true``, and fields an applier
  stops applying are removed when nobody else owns them.

Lists are atomic here. That is how the API server treats a CRD list without
``x-kubernetes-list-type``, which is the case of ``spec.predictor.containers`` in KServe's
InferenceService CRD (``config/crd/full/serving.kserve.io_inferenceservices.yaml``: the
containers array has no list type; only nested lists such as ``env`` are maps by name).
Nested list-map semantics are not modelled, so whole lists are the unit of ownership.
"""

from __future__ import annotations

import json
import pathlib
from collections import defaultdict
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import apps, enums, rendering

Path = tuple[str, ...]
IDENTITY = {
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "resourceVersion"),
    ("metadata", "uid"),
    ("metadata", "managedFields"),
    ("metadata", "creationTimestamp"),
    ("metadata", "generation"),
}


def leaves(obj: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Every field path to a scalar or a list (lists are atomic), with its value."""
    if isinstance(obj, dict) and obj:
        found: dict[Path, Any] = {}
        for key, value in obj.items():
            found.update(leaves(value, (*prefix, key)))
        return found
    return {} if prefix in IDENTITY or prefix[:1] == ("status",) else {prefix: obj}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def delete_path(obj: dict[str, Any], path: Path) -> None:
    node: Any = obj
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)


def dotted(path: Path) -> str:
    return "." + ".".join(path)


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with resource versions, merge patches and field managers."""

    owners: dict[Any, dict[tuple[str, str], set[Path]]] = attrs.field(
        factory=lambda: defaultdict(dict), init=False
    )
    """Per object key: (manager, operation) -> the field paths it owns."""
    written: list[tuple[Any, dict[str, Any]]] = attrs.field(factory=list, init=False)
    """Every object as stored by a patch, in order: (key, object)."""
    _counter: int = attrs.field(default=100, init=False)

    def managers_of(self, key: Any, path: Path) -> set[str]:
        return {manager for (manager, _), paths in self.owners[key].items() if path in paths}

    def _next_version(self) -> str:
        self._counter += 1
        return str(self._counter)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        is_patch = request.action == enums.action.UPDATE and request.name is not None
        is_create = request.action == enums.action.CREATE
        if request.resource is None or not (is_patch or is_create):
            return await super()._handle(request)
        key, before, refused = self._patch(request) if is_patch else self._create(request)
        if refused is not None:
            return refused
        # The object is stored as this server would; kmock's reactions (e.g. a planted 403) and
        # fallbacks then answer, skipping kmock's own naive merge of the request body.
        response = await apps.RawHandler._handle(self, request)
        if response.status >= 400 and key is not None:
            if before is None:
                self._objects[key].delete()
            else:
                self._objects[key] = before
        return response

    def _create(
        self, request: rendering.Request
    ) -> tuple[Any, dict[str, Any] | None, aiohttp.web.StreamResponse | None]:
        obj = json.loads(json.dumps(request.data))
        meta = obj.setdefault("metadata", {})
        key: Any = (request.resource, request.namespace or meta.get("namespace"), meta.get("name"))
        if key in self._objects and not self._objects[key].deleted:
            return None, None, self._status(409, "AlreadyExists", f"{meta.get('name')} exists")
        meta["resourceVersion"] = self._next_version()
        meta.setdefault("uid", f"uid-{meta['resourceVersion']}")
        if key in self._objects:
            self._objects[key].create(obj)
        else:
            self._objects[key] = obj
        manager = request.params.get("fieldManager", "unknown")
        self.owners[key] = {(manager, "Update"): set(leaves(obj))}
        return key, None, None

    def _patch(
        self, request: rendering.Request
    ) -> tuple[Any, dict[str, Any] | None, aiohttp.web.StreamResponse | None]:
        """Store the patched object: (key, the object before, or the refusal to answer)."""
        key: Any = (request.resource, request.namespace, request.name)
        kind = request.headers.get("Content-Type", "").split(";")[0]
        manager = request.params.get("fieldManager", "unknown")
        if key not in self._objects or self._objects[key].deleted:
            if kind != "application/apply-patch+yaml":
                return None, None, self._status(404, "NotFound", f"{request.name} not found")
            created = yaml.safe_load(request.text)  # an apply creates what is missing
            created.setdefault("metadata", {})["resourceVersion"] = self._next_version()
            self._objects[key] = created
            self.owners[key] = {(manager, "Apply"): set(leaves(created))}
            self.written.append((key, json.loads(json.dumps(created))))
            return key, None, None
        before: dict[str, Any] = json.loads(json.dumps(self._objects[key].raw))
        current: dict[str, Any] = json.loads(json.dumps(before))
        meta = current.setdefault("metadata", {})
        meta.setdefault("resourceVersion", self._next_version())
        if kind == "application/apply-patch+yaml":
            applied = yaml.safe_load(request.text)
            force = request.params.get("force") == "true"
            result = self._apply(key, current, applied, manager, force)
            if isinstance(result, aiohttp.web.StreamResponse):
                return None, None, result
            new = result
        else:
            patch = request.data
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != meta["resourceVersion"]:
                return (
                    None,
                    None,
                    self._status(
                        409,
                        "Conflict",
                        f"Operation cannot be fulfilled on {request.name}: the object has been "
                        "modified; please apply your changes to the latest version and try again",
                    ),
                )
            new = merge_patch(current, patch)
            self._take(key, current, new, manager)
        new.setdefault("metadata", {})["resourceVersion"] = self._next_version()
        self._objects[key] = new
        self.written.append((key, json.loads(json.dumps(new))))
        return key, before, None

    def _take(self, key: Any, old: dict[str, Any], new: dict[str, Any], manager: str) -> None:
        """An update: its manager owns what it changed; nobody owns what was removed."""
        before, after = leaves(old), leaves(new)
        changed = {p for p in after if before.get(p, object()) != after[p]}
        removed = set(before) - set(after)
        for paths in self.owners[key].values():
            paths.difference_update(changed | removed)
        self.owners[key].setdefault((manager, "Update"), set()).update(changed)

    def _apply(
        self, key: Any, current: dict[str, Any], applied: dict[str, Any], manager: str, force: bool
    ) -> dict[str, Any] | aiohttp.web.StreamResponse:
        """Server-side apply of ``applied`` by ``manager``."""
        now, wanted = leaves(current), leaves(applied)
        conflicts: list[tuple[str, Path]] = []
        for path, value in wanted.items():
            if path in now and now[path] == value:
                continue  # same value: shared ownership, never a conflict
            for other in sorted(self.managers_of(key, path) - {manager}):
                conflicts.append((other, path))
        if conflicts and not force:
            lines = "\n".join(f'- conflict with "{m}": {dotted(p)}' for m, p in conflicts)
            return self._status(
                409,
                "Conflict",
                f"Apply failed with {len(conflicts)} conflict(s):\n{lines}",
            )
        result: dict[str, Any] = json.loads(json.dumps(current))
        for path, value in wanted.items():
            node = result
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        for entry, paths in self.owners[key].items():
            if entry[0] != manager:
                paths.difference_update(p for p in wanted if now.get(p, object()) != wanted[p])
        previous = self.owners[key].get((manager, "Apply"), set())
        for path in previous - set(wanted):
            if not self.managers_of(key, path) - {manager}:
                delete_path(result, path)
        self.owners[key][(manager, "Apply")] = set(wanted)
        return result

    @staticmethod
    def _status(code: int, reason: str, message: str) -> aiohttp.web.StreamResponse:
        body = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                "code": code, "reason": reason, "message": message}  # fmt: skip
        return aiohttp.web.json_response(body, status=code)


# KServe's defaults (pkg/constants/constants.go: ServiceAnnotationDisallowedList and
# RevisionTemplateLabelDisallowedList); inferenceservice-config can add to both lists.
KSERVE_ANNOTATION_DISALLOWED = (
    "autoscaling.knative.dev/min-scale",
    "autoscaling.knative.dev/max-scale",
    "internal.serving.kserve.io/storage-initializer-sourceuri",
    "kubectl.kubernetes.io/last-applied-configuration",
    "modelFormat",
)
KSERVE_LABEL_DISALLOWED = ("networking.knative.dev/visibility",)


def revision_template(
    isvc: dict[str, Any],
    annotation_disallowed: tuple[str, ...] = KSERVE_ANNOTATION_DISALLOWED,
    label_disallowed: tuple[str, ...] = KSERVE_LABEL_DISALLOWED,
) -> str:
    """What KServe puts into the Knative revision template of the predictor, as a stable string.

    From KServe's ``components/predictor.go`` (``buildPredictorResources``: the InferenceService's
    annotations minus the disallowed list; ``buildObjectMeta``: its labels and the predictor's)
    and ``reconcilers/knative/ksvc_reconciler.go`` (``createKnativeService``: the template gets
    those labels minus the label disallowed list, and the pod spec; ``canaryTrafficPercent``
    only shapes ``spec.traffic``). Any change to this string is a new Knative revision.
    """
    meta = isvc.get("metadata") or {}
    predictor = dict((isvc.get("spec") or {}).get("predictor") or {})
    predictor.pop("canaryTrafficPercent", None)
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in annotation_disallowed
    }
    annotations.update(predictor.pop("annotations", None) or {})
    labels = {**(meta.get("labels") or {}), **(predictor.pop("labels", None) or {})}
    labels = {k: v for k, v in labels.items() if k not in label_disallowed}
    return json.dumps(
        {"annotations": annotations, "labels": labels, "predictor": predictor}, sort_keys=True
    )


def write_kubeconfig(server: kmock.KubernetesEmulator, directory: pathlib.Path) -> pathlib.Path:
    """A kubeconfig in ``directory`` whose current context is ``server``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "mock", "cluster": {"server": str(server.url).rstrip("/")}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "mock", "context": {"cluster": "mock", "user": "me"}}],
        "current-context": "mock",
    }
    path = directory / "kubeconfig"
    path.write_text(json.dumps(config))
    return path
