"""Render and strictly validate Kubernetes manifests (Helm chart output, kustomize builds).

Built-in kinds go through ``kubernetes-validate`` in strict mode (unknown fields fail) for
Kubernetes 1.30 and the newest schema the package ships; a kind without a schema fails too.
InferenceServices are checked field by field against the ``kserve`` package's model classes
(and the ``kubernetes`` client's for the pod parts): unknown fields, wrong types and missing
required fields fail. Custom resources of the Prometheus Operator get structural checks.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kserve.models
import kubernetes.client.models
import kubernetes_validate
import yaml
from kubernetes.client import Configuration

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "model-serving"
TOOLS = ROOT / ".tools"
KUBERNETES_VERSIONS = ("1.32", kubernetes_validate.latest_version())

Manifest = dict[str, Any]

# API groups of objects the strict built-in schemas cover.
BUILTIN_GROUPS = {"", "apps", "batch", "rbac.authorization.k8s.io", "policy", "autoscaling"}


def tool(env: str, default: str) -> str:
    """Path of a pinned binary (``make tools`` installs them; the Makefile exports the env)."""
    path = os.environ.get(env) or str(TOOLS / default)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is missing: run `make tools` (sets {env})")
    return path


HELMS = {"helm3": ("HELM3_BIN", "helm3/helm"), "helm4": ("HELM4_BIN", "helm4/helm")}


def helm(name: str) -> str:
    env, default = HELMS[name]
    return tool(env, default)


def kubectl() -> str:
    return tool("KUBECTL_BIN", "helm4/kubectl")


def load_all(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


class RenderError(Exception):
    """``helm template`` refused the values; ``str()`` is helm's message."""


def helm_template(
    helm_name: str,
    *values_files: Path,
    set_values: Iterable[str] = (),
    release: str = "demo",
    namespace: str = "models",
    extra_args: Iterable[str] = (),
    chart: Path = CHART,
) -> list[Manifest]:
    """``helm template`` the chart; raise :class:`RenderError` with helm's stderr on refusal."""
    command = [helm(helm_name), "template", release, str(chart), "--namespace", namespace]
    command += list(extra_args)
    for values in values_files:
        command += ["-f", str(values)]
    for item in set_values:
        command += ["--set", item]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        # Helm notes (on stderr) that files/ links to monitoring/: not part of the error.
        lines = [line for line in done.stderr.splitlines() if "symbolic link" not in line]
        raise RenderError("\n".join(lines).strip())
    return load_all(done.stdout)


def kustomize(path: Path) -> list[Manifest]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    return load_all(done.stdout)


def api_group(manifest: Manifest) -> str:
    api_version = str(manifest["apiVersion"])
    return api_version.split("/", maxsplit=1)[0] if "/" in api_version else ""


def validate(manifest: Manifest) -> list[str]:
    """Every problem found in ``manifest`` (empty when valid)."""
    kind, group = manifest.get("kind"), api_group(manifest)
    if group == "serving.kserve.io" and kind == "InferenceService":
        return validate_inference_service(manifest)
    if group == "monitoring.coreos.com":
        return validate_prometheus_operator(manifest)
    if group == "monitoring.googleapis.com":
        return validate_managed_prometheus(manifest)
    if group in BUILTIN_GROUPS:
        return validate_builtin(manifest)
    return [f"{kind} ({manifest.get('apiVersion')}): no validator for this kind"]


def validate_builtin(manifest: Manifest) -> list[str]:
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(p) for p in error.path)
            problems.append(
                f"{manifest['kind']} (Kubernetes {version}) at {where}: {error.message}"
            )
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"no schema: {error.message}")
    return problems


# -- InferenceService, against the kserve package's generated model classes ---------------

_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "datetime": (str,),
    "date": (str,),
    "ResourceQuantity": (str, int, float),
}


def _model_class(name: str) -> Any:
    return getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name, None)


def _check(value: Any, type_name: str, path: str, problems: list[str]) -> None:
    if value is None:
        return
    if match := re.fullmatch(r"(?:list|List)\[(.+)\]", type_name):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, match.group(1), f"{path}[{i}]", problems)
    elif match := re.fullmatch(r"(?:dict\((\w+), (.+)\)|Dict\[(\w+), (.+)\])", type_name):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        for key, item in value.items():
            _check(item, match.group(2) or match.group(4), f"{path}.{key}", problems)
    elif type_name in _PRIMITIVES:
        expected = _PRIMITIVES[type_name]
        wrong_bool = isinstance(value, bool) and bool not in expected and object not in expected
        if wrong_bool or not isinstance(value, expected):
            problems.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
    else:
        _check_object(value, type_name, path, problems)


def _check_object(value: Any, type_name: str, path: str, problems: list[str]) -> None:
    cls = _model_class(type_name)
    if cls is None:
        problems.append(f"{path}: no model class {type_name} to check against")
        return
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a {type_name} object, got {type(value).__name__}")
        return
    by_json_key = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    present: dict[str, Any] = {}
    for key, item in value.items():
        attr = by_json_key.get(key)
        if attr is None:
            problems.append(f"{path}.{key}: unknown field of {type_name}")
            continue
        present[attr] = item
        _check(item, cls.openapi_types[attr], f"{path}.{key}", problems)
    fields = getattr(cls, "model_fields", None)
    if fields is not None:  # the kubernetes client's models are pydantic models
        problems.extend(
            f"{path}: required field {cls.attribute_map[attr]} of {type_name} is missing"
            for attr, info in fields.items()
            if info.is_required() and attr not in present
        )
        return
    # kserve's generated setters refuse a missing required field and values outside an enum.
    config = Configuration()
    config.client_side_validation = True
    try:
        cls(**present, local_vars_configuration=config)
    except (ValueError, TypeError) as error:
        problems.append(f"{path} ({type_name}): {error}")


def validate_inference_service(manifest: Manifest) -> list[str]:
    problems: list[str] = []
    if manifest.get("apiVersion") != "serving.kserve.io/v1beta1":
        problems.append(
            f"apiVersion {manifest.get('apiVersion')!r} is not serving.kserve.io/v1beta1"
        )
    _check(manifest, "V1beta1InferenceService", "InferenceService", problems)
    if "spec" not in manifest or "predictor" not in manifest.get("spec", {}):
        problems.append("InferenceService: spec.predictor is required")
    return problems


# -- Prometheus Operator objects (no schema ships in Python packages): structure -----------


def validate_prometheus_operator(manifest: Manifest) -> list[str]:
    kind, spec = manifest.get("kind"), manifest.get("spec") or {}
    problems: list[str] = []
    if manifest.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append(f"{kind}: apiVersion must be monitoring.coreos.com/v1")
    if kind == "PodMonitor":
        if not spec.get("selector", {}).get("matchLabels"):
            problems.append("PodMonitor: spec.selector.matchLabels is empty")
        for endpoint in spec.get("podMetricsEndpoints") or [{}]:
            if not endpoint.get("port") or not str(endpoint.get("path", "")).startswith("/"):
                problems.append(f"PodMonitor: endpoint needs a port name and a path: {endpoint}")
    elif kind == "PrometheusRule":
        groups = spec.get("groups") or []
        if not groups:
            problems.append("PrometheusRule: no groups")
        for group in groups:
            for rule in group.get("rules") or []:
                if ("record" in rule) == ("alert" in rule) or not rule.get("expr"):
                    problems.append(f"PrometheusRule {group.get('name')}: bad rule {rule}")
    else:
        problems.append(f"{kind}: not a Prometheus Operator kind this chart creates")
    return problems


# GKE Managed Prometheus: the parts of its v1 CRDs this chart uses, strict (unknown fields refused).
# Read from GoogleCloudPlatform/prometheus-engine, charts/operator/crds/
# monitoring.googleapis.com_podmonitorings.yaml and monitoring.googleapis.com_rules.yaml: spec
# requires selector and endpoints; an endpoint requires port and interval; targetLabels.metadata
# is an enum; fromPod entries require from; a Rules group requires name and rules; a rule expr.
_DURATION = {
    "type": "string",
    "pattern": "^((([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    "(([0-9]+)s)?(([0-9]+)ms)?|0)$",
}
_GMP_SCHEMAS: dict[str, dict[str, Any]] = {
    "PodMonitoring": {
        "type": "object",
        "required": ["selector", "endpoints"],
        "additionalProperties": False,
        "properties": {
            "selector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"matchLabels": {"type": "object", "minProperties": 1}},
                "required": ["matchLabels"],
            },
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["port", "interval"],
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": ["string", "integer"], "minLength": 1},
                        "path": {"type": "string", "pattern": "^/"},
                        "interval": _DURATION,
                        "timeout": _DURATION,
                    },
                },
            },
            "targetLabels": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "metadata": {
                        "type": "array",
                        "items": {
                            "enum": [
                                "container",
                                "node",
                                "pod",
                                "top_level_controller_name",
                                "top_level_controller_type",
                            ]
                        },
                    },
                    "fromPod": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["from"],
                            "additionalProperties": False,
                            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
    "Rules": {
        "type": "object",
        "required": ["groups"],
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "rules"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "interval": _DURATION,
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["expr"],
                                "additionalProperties": False,
                                "properties": {
                                    "record": {"type": "string"},
                                    "alert": {"type": "string"},
                                    "expr": {"type": "string", "minLength": 1},
                                    "for": _DURATION,
                                    "labels": {"type": "object"},
                                    "annotations": {"type": "object"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def validate_managed_prometheus(manifest: Manifest) -> list[str]:
    kind = manifest.get("kind")
    schema = _GMP_SCHEMAS.get(str(kind))
    if schema is None or manifest.get("apiVersion") != "monitoring.googleapis.com/v1":
        return [f"{kind} ({manifest.get('apiVersion')}): not a GKE Managed Prometheus v1 kind"]
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{kind} at spec/{'/'.join(str(p) for p in error.path)}: {error.message}"
        for error in validator.iter_errors(manifest.get("spec") or {})
    ]


def by_kind(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") == kind]


def one(manifests: Iterable[Manifest], kind: str) -> Manifest:
    found = by_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
