"""``model-registry``: list, show, compare, alias and verify registered model versions."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import orjson

from model_registry.errors import InvalidName, NotFound, RegistryError
from model_registry.metadata import FeatureSpec, ModelMetadata
from model_registry.registry import LATEST, Registry, VersionStatus, normalize_version

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REGISTRY_ERROR = 4

SHOWN_NAMES = 20
"""Most models, versions or aliases a not-found message lists."""
TEXT_WIDTH = 100
"""Where text output wraps long lists (parameters)."""

HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "f1": True,
    "roc_auc": True,
    "r2": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
}
"""Which way each metric the trainer records improves (the trainer's own table,
``trainer.evaluate.HIGHER_IS_BETTER``, which this package may not import; a test keeps the two
the same). Metadata records the primary metric, not its direction."""

EPILOG = f"""\
environment:
  MODEL_REGISTRY_URI   default for --registry-uri (else ./registry)
  GCS: Workload Identity or GOOGLE_APPLICATION_CREDENTIALS; S3: the usual AWS_* variables

exit codes:
  {EXIT_OK}  success
  {EXIT_VERIFY_FAILED}  verify found a version that readers would not load
  {EXIT_USAGE}  bad arguments or invalid names
  {EXIT_NOT_FOUND}  model, version or alias not found
  {EXIT_REGISTRY_ERROR}  storage or registry error (unreachable, permission, conflict)

examples:
  model-registry list
  model-registry list breast-cancer --all
  model-registry show breast-cancer production --output json
  model-registry compare breast-cancer production latest
  model-registry alias breast-cancer production v3
  model-registry verify breast-cancer
"""


COMPARE_DESCRIPTION = """\
Compare version B of a model with version A, side by side:
- held-out metrics and their difference (B - A); which version is better by the model's
  primary metric (for rmse, mae and log_loss lower is better, for the others higher)
- the estimator and its parameters (those that differ; * marks one set with --param)
- training rows, and the data's URI and sha256
- the feature schema: features added, removed, changed in kind or dtype, or reordered
- the engine a server would run (ONNX Runtime on a checked model.onnx, or the pipeline)
- the champion gate's decision recorded when each version was trained
Each version may be v3, 3, an alias (production) or latest, as show takes them."""

COMPARE_EPILOG = """\
examples:
  # is the newest version better than the one in production?
  model-registry compare breast-cancer production latest
  model-registry compare breast-cancer v2 v3
  model-registry compare breast-cancer production candidate -o json | jq .better_version

exit codes: 0 compared (whichever is better), 2 bad arguments, 3 a model or version not
found, 4 storage or registry error
"""


def global_flags(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """--registry-uri and --output, accepted before or after the command (as kubectl and helm
    accept their global flags). On a command's own parser they default to SUPPRESS, so a flag
    given before the command is not reset by the command's parser."""

    def default(value: str) -> str:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--registry-uri",
        default=default(os.environ.get("MODEL_REGISTRY_URI", "./registry")),
        help="registry root: a path, gs://bucket/prefix or s3://bucket/prefix "
        "(default: $MODEL_REGISTRY_URI, else ./registry)",
    )
    parser.add_argument(
        "--output",
        "-o",
        choices=["text", "json"],
        default=default("text"),
        help="text for people, json for scripts (default: text)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-registry",
        description="Inspect and manage the model registry (local path, gs:// or s3://).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    global_flags(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = commands.add_parser("list", help="list models, or the versions of one model")
    ls.add_argument("model", nargs="?", help="model name; omit to list models")
    ls.add_argument(
        "--all", action="store_true", help="also show incomplete and corrupt version directories"
    )

    show = commands.add_parser("show", help="show one version's metadata")
    show.add_argument("model")
    show.add_argument("ref", nargs="?", default=LATEST, help="v3, 3, an alias, or latest (default)")

    compare = commands.add_parser(
        "compare",
        help="compare two versions: metrics, parameters, data, features, engine, gate",
        description=COMPARE_DESCRIPTION,
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("model", help="model name")
    compare.add_argument(
        "a", metavar="VERSION_A", help="the version compared with: v3, 3, an alias or latest"
    )
    compare.add_argument(
        "b", metavar="VERSION_B", help="the version compared (differences are B - A): likewise"
    )

    alias = commands.add_parser(
        "alias", help="list aliases, or point one at a version (verified first)"
    )
    alias.add_argument("model")
    alias.add_argument("alias", nargs="?", help="alias name, e.g. production")
    alias.add_argument("ref", nargs="?", help="version to point the alias at: v3, 3 or latest")
    alias.add_argument("--delete", action="store_true", help="remove the alias")

    verify = commands.add_parser(
        "verify", help="check metadata and artifact sha256 of one or every version"
    )
    verify.add_argument("model")
    verify.add_argument("ref", nargs="?", help="v3, 3, an alias or latest; omit for every version")
    for command in (ls, show, compare, alias, verify):
        global_flags(command, suppress=True)
    return parser


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _status_json(status: VersionStatus) -> dict[str, Any]:
    meta = status.metadata
    return {
        "model_name": status.model_name,
        "version": status.version,
        "state": status.state,
        "problem": status.problem,
        "created_at": meta.created_at.isoformat() if meta else None,
        "estimator": meta.training.estimator if meta else None,
        "metrics": meta.metrics if meta else None,
    }


def _names(names: Sequence[str], *, newest: bool = False) -> str:
    """``a, b, c``, at most ``SHOWN_NAMES`` of them: the first ones, or the last with ``newest``."""
    if len(names) <= SHOWN_NAMES:
        return ", ".join(names)
    if newest:
        return f"..., {', '.join(names[-SHOWN_NAMES:])} ({len(names)} in all)"
    return f"{', '.join(names[:SHOWN_NAMES])}, ... ({len(names)} in all)"


def _explain(registry: Registry, model: str, ref: str | None, error: NotFound) -> str:
    """``error``'s message with what does exist: the model's published versions and aliases, or
    the registry's models when the model has no version at all. Best effort: when looking
    fails, the original message."""
    try:
        statuses = registry.statuses(model)
        if not statuses:
            models = registry.list_models()
            known = f"models: {_names(models)}" if models else "the registry has no models"
            return f"model {model!r} not found in {registry.uri}; {known}"
        aliases = registry.aliases(model)
    except RegistryError:
        return str(error)
    published = [s.version for s in statuses if s.ok]
    known = "versions: " + (_names(published, newest=True) if published else "none published")
    if aliases:
        pointers = [f"{name} -> {version}" for name, version in sorted(aliases.items())]
        known += f" (aliases: {_names(pointers)})"
    return f"{_missing(model, ref, statuses, aliases) or error}; {known}"


def _missing(
    model: str, ref: str | None, statuses: Sequence[VersionStatus], aliases: dict[str, str]
) -> str | None:
    """What ``ref`` lacks, in words; None when it is there after all (a race: the registry's
    own message then stands)."""
    if ref is None or ref == LATEST:
        return None if any(s.ok for s in statuses) else f"model {model!r} has no published versions"
    version = normalize_version(ref)
    via = ""
    if version is None:
        if ref not in aliases:
            return f"model {model!r} has no alias {ref!r}"
        version, via = aliases[ref], f" (alias {ref} points at it)"
    status = next((s for s in statuses if s.version == version), None)
    if status is None:
        return f"model {model!r} has no version {version}{via}"
    if not status.ok:
        return f"model {model!r} version {version}{via} is {status.state}: {status.problem}"
    return None


@contextmanager
def _explained(registry: Registry, model: str, ref: str | None = None) -> Iterator[None]:
    """Turn a ``NotFound`` about ``model`` (and ``ref``) into one that lists what exists."""
    try:
        yield
    except NotFound as error:
        raise NotFound(_explain(registry, model, ref, error)) from error


def _get(registry: Registry, model: str, ref: str) -> ModelMetadata:
    """A published version's metadata; not found, an error that lists what exists."""
    with _explained(registry, model, ref):
        return registry.get(model, ref)


def _cmd_list(registry: Registry, args: argparse.Namespace) -> int:
    if not args.model:
        models = registry.list_models()
        if args.output == "json":
            _print_json({"registry": registry.uri, "models": models})
        elif not models:
            print(f"no models in {registry.uri}")
        else:
            print("\n".join(models))
        return EXIT_OK
    statuses = registry.statuses(args.model)
    shown = [s for s in statuses if args.all or s.ok]
    aliases = registry.aliases(args.model)
    by_version: dict[str, list[str]] = {}
    for name, version in sorted(aliases.items()):
        by_version.setdefault(version, []).append(name)
    if not statuses:  # the same exit code for text and JSON: a script can tell
        with _explained(registry, args.model):
            raise NotFound(f"model {args.model!r} has no versions in {registry.uri}")
    if args.output == "json":
        rows = [{**_status_json(s), "aliases": by_version.get(s.version, [])} for s in shown]
        _print_json({"model_name": args.model, "versions": rows, "aliases": aliases})
        return EXIT_OK
    print(
        f"{'VERSION':<8} {'STATE':<10} {'CREATED (UTC)':<20} {'ALIASES':<20} {'ESTIMATOR':<18} "
        "METRICS / PROBLEM"
    )
    for status in shown:
        meta = status.metadata
        created = meta.created_at.strftime("%Y-%m-%d %H:%M:%S") if meta else "-"
        detail = status.problem or (
            " ".join(f"{k}={v:.4f}" for k, v in sorted(meta.metrics.items())) if meta else ""
        )
        tags = ",".join(by_version.get(status.version, [])) or "-"
        estimator = (meta.training.estimator if meta else None) or "-"
        print(
            f"{status.version:<8} {status.state:<10} {created:<20} {tags:<20} {estimator:<18} "
            f"{detail}"
        )
    return EXIT_OK


def _cmd_show(registry: Registry, args: argparse.Namespace) -> int:
    meta = _get(registry, args.model, args.ref)
    if args.output == "json":
        _print_json(meta.model_dump(mode="json"))
        return EXIT_OK
    aliases = [k for k, v in sorted(registry.aliases(args.model).items()) if v == meta.version]
    print(f"model:       {meta.model_name}")
    print(
        f"version:     {meta.version}" + (f"  (aliases: {', '.join(aliases)})" if aliases else "")
    )
    print(f"uri:         {registry.version_uri(meta.model_name, meta.version)}")
    print(f"created:     {meta.created_at.isoformat()}")
    print(f"task:        {meta.task}   estimator: {meta.training.estimator}")
    extra = meta.training.model_extra or {}
    overrides = extra.get("param_overrides")
    if isinstance(overrides, dict):
        print(_wrapped("overrides:", _params_text(overrides)) if overrides else "overrides:   none")
    print(_wrapped("parameters:", _params_text(meta.training.params) or ["none recorded"]))
    print(
        f"artifact:    {meta.artifact.file} ({meta.artifact.format}, {meta.artifact.size_bytes} B)"
    )
    print(f"sha256:      {meta.artifact.sha256}")
    print(
        f"features:    {len(meta.features)} ({', '.join(meta.feature_names[:6])}"
        + (", ...)" if len(meta.features) > 6 else ")")
    )
    target = meta.target
    classes = f" classes={target.classes}" if target.classes is not None else ""
    print(f"target:      {target.name}{classes}")
    print(f"training:    {meta.training.rows} rows from {meta.training.data_uri}")
    print(f"             in {meta.training.duration_seconds:.2f}s")
    metric, recorded = primary_metric(meta)
    direction = _direction(metric)
    print(
        "metrics:     "
        + "  ".join(f"{k}={v:.4f}" for k, v in sorted(meta.metrics.items()))
        + f"  (primary: {metric}{'' if recorded else ' by default'}"
        + (f", {direction}" if direction else "")
        + ")"
    )
    print("gate:        " + _gate_text(extra.get("gate")))
    prov = meta.provenance
    print(
        f"provenance:  package {prov.package_version}, sklearn {prov.sklearn}, "
        f"python {prov.python}, git {prov.git_sha or 'unknown'}"
    )
    print("onnx:        " + _onnx_line(meta))
    return EXIT_OK


def primary_metric(meta: ModelMetadata) -> tuple[str, bool]:
    """The version's primary metric, and whether its metadata recorded it (older versions did
    not: then the trainer's default, roc_auc for binary classifiers, f1 for more classes and
    rmse for regressors)."""
    if meta.primary_metric:
        return meta.primary_metric, True
    if meta.task == "regression":
        return "rmse", False
    return ("roc_auc" if len(meta.target.classes or ()) == 2 else "f1"), False


def _direction(metric: str) -> str | None:
    """``higher is better``, ``lower is better``, or None for a metric not known here."""
    if metric not in HIGHER_IS_BETTER:
        return None
    return "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"


def _param_text(value: Any) -> str:
    """A parameter value as ``--param`` takes it: JSON, but text that JSON would not read as
    text (``gini``) bare."""
    if isinstance(value, str) and value:
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return orjson.dumps(value).decode()


def _params_text(params: dict[str, Any]) -> list[str]:
    return [f"{name}={_param_text(value)}" for name, value in sorted(params.items())]


def _wrapped(label: str, items: Sequence[str]) -> str:
    """``label`` and ``items`` separated by spaces, wrapped at ``TEXT_WIDTH`` under the first
    item (an item is never broken)."""
    indent = " " * 13
    lines = [f"{label:<13}"]
    for item in items:
        if len(lines[-1]) > len(indent) and len(lines[-1]) + 1 + len(item) > TEXT_WIDTH:
            lines.append(indent)
        lines[-1] += item if len(lines[-1]) == len(indent) else f" {item}"
    return "\n".join(line.rstrip() for line in lines)


def _gate_text(gate: Any) -> str:
    """The champion gate's decision recorded at training, in words."""
    if not isinstance(gate, dict):
        return "not recorded"
    if gate.get("accepted"):
        verdict = "accepted"
    elif gate.get("forced"):
        verdict = "rejected, registered with --force"
    else:
        verdict = "rejected"
    reason = gate.get("reason")
    return f"{verdict}: {reason}" if reason else verdict


def _onnx_line(meta: ModelMetadata) -> str:
    onnx = meta.onnx
    if onnx is None:
        return "none (registered before ONNX export)"
    if onnx.file is None:
        return f"none: {onnx.reason}"
    extra = onnx.model_extra or {}
    check = extra.get("check") or {}
    from model_registry.onnx_runtime import checked_on  # numpy and pandas: only when shown

    return (
        f"{onnx.file} ({onnx.size_bytes} B, sha256 {onnx.sha256}), {checked_on(check)}"
        f"; skl2onnx {extra.get('skl2onnx')}, onnxruntime {extra.get('onnxruntime')}"
    )


def _cmd_compare(registry: Registry, args: argparse.Namespace) -> int:
    a = _get(registry, args.model, args.a)
    b = _get(registry, args.model, args.b)
    aliases = registry.aliases(args.model)
    report = comparison(a, b, refs=(args.a, args.b), aliases=aliases)
    if args.output == "json":
        _print_json(report)
    else:
        print("\n".join(_comparison_lines(report)))
    return EXIT_OK


Side = Literal["a", "b", "same"]


def _better(metric: str, a: float | None, b: float | None) -> Side | None:
    """Which side is better by ``metric``; None when one lacks it or its direction is unknown."""
    if a is None or b is None or metric not in HIGHER_IS_BETTER:
        return None
    if a == b:
        return "same"
    return "b" if (b > a) == HIGHER_IS_BETTER[metric] else "a"


def _judged_by(a: ModelMetadata, b: ModelMetadata) -> tuple[str, str | None]:
    """The primary metric to compare by, and a note when it is not simply both versions' own."""
    (metric_a, recorded_a), (metric_b, recorded_b) = primary_metric(a), primary_metric(b)
    if metric_a == metric_b:
        unrecorded = [m.version for m, r in ((a, recorded_a), (b, recorded_b)) if not r]
        if not unrecorded:
            return metric_a, None
        return metric_a, (
            f"{metric_a}, the trainer's default for the task: "
            f"{' and '.join(dict.fromkeys(unrecorded))} recorded no primary metric"
        )
    measured = [m for m in (metric_b, metric_a) if m in a.metrics and m in b.metrics]
    metric = measured[0] if measured else metric_b
    return metric, (
        f"the versions' primary metrics differ ({a.version}: {metric_a}, {b.version}: "
        f"{metric_b}); compared by {metric}"
    )


def _verdict(metric: str, a: ModelMetadata, b: ModelMetadata) -> tuple[Side | None, str]:
    value_a, value_b = a.metrics.get(metric), b.metrics.get(metric)
    missing = [m.version for m, v in ((a, value_a), (b, value_b)) if v is None]
    if missing:
        return None, f"none: {' and '.join(dict.fromkeys(missing))} recorded no {metric}"
    assert value_a is not None
    assert value_b is not None
    direction = _direction(metric)
    if direction is None:
        return None, f"none: which way {metric} improves is not known here"
    better = _better(metric, value_a, value_b)
    if better == "same":
        return better, f"neither: both have {metric} {value_a:.4f}"
    winner = a.version if better == "a" else b.version
    return better, (
        f"{winner} is better by {metric} ({direction}): {a.version} {value_a:.4f}, "
        f"{b.version} {value_b:.4f}"
    )


def _same_value(x: Any, y: Any) -> bool:
    return bool(x == y) and isinstance(x, bool) == isinstance(y, bool)


def _feature_changes(a: ModelMetadata, b: ModelMetadata) -> dict[str, Any]:
    """What a client of A must change to call B: features added, removed, changed in kind or
    dtype, and whether the common ones come in another order (V1 rows given as lists)."""
    in_a = {f.name: f for f in a.features}
    in_b = {f.name: f for f in b.features}

    def spec(feature: FeatureSpec) -> dict[str, str]:
        return {"name": feature.name, "kind": feature.kind, "dtype": feature.dtype}

    changed = [
        {"name": f.name, "a": spec(f), "b": spec(in_b[f.name])}
        for f in a.features
        if f.name in in_b and (f.kind, f.dtype) != (in_b[f.name].kind, in_b[f.name].dtype)
    ]
    added = [spec(f) for f in b.features if f.name not in in_a]
    removed = [spec(f) for f in a.features if f.name not in in_b]
    reordered = [n for n in a.feature_names if n in in_b] != [
        n for n in b.feature_names if n in in_a
    ]
    return {
        "same": not (added or removed or changed or reordered),
        "count": {"a": len(a.features), "b": len(b.features)},
        "added": added,
        "removed": removed,
        "changed": changed,
        "reordered": reordered,
    }


def _engine(meta: ModelMetadata) -> dict[str, Any]:
    """What a server with the default engine (auto) runs, as far as metadata tells: ONNX Runtime
    on a checked ``model.onnx`` (the server checks it again at load), else the pipeline."""
    onnx = meta.onnx
    if onnx is None or onnx.file is None:
        reason = onnx.reason if onnx is not None else "registered before ONNX export"
        return {"engine": "sklearn", "onnx": None, "note": f"no model.onnx: {reason}"}
    described = {"file": onnx.file, "sha256": onnx.sha256, "size_bytes": onnx.size_bytes}
    if meta.training.estimator == "gradient-boosting":  # model_registry.onnx_runtime.unsupported
        return {
            "engine": "sklearn",
            "onnx": described,
            "note": f"{onnx.file} is not used: the server runs gradient boosting with the "
            "pipeline (float64 thresholds)",
        }
    from model_registry.onnx_runtime import checked_on  # numpy and pandas: only when shown

    check = (onnx.model_extra or {}).get("check") or {}
    return {"engine": "onnx", "onnx": described, "note": f"{onnx.file} {checked_on(check)}"}


def comparison(
    a: ModelMetadata, b: ModelMetadata, *, refs: tuple[str, str], aliases: dict[str, str]
) -> dict[str, Any]:
    """Version B of a model against version A: the document ``compare -o json`` prints, and the
    text output shows."""
    metric, note = _judged_by(a, b)
    better, summary = _verdict(metric, a, b)
    names = sorted(set(a.metrics) | set(b.metrics), key=lambda name: (name != metric, name))
    metrics = {}
    for name in names:
        value_a, value_b = a.metrics.get(name), b.metrics.get(name)
        metrics[name] = {
            "a": value_a,
            "b": value_b,
            "difference": None if value_a is None or value_b is None else value_b - value_a,
            "higher_is_better": HIGHER_IS_BETTER.get(name),
            "better": _better(name, value_a, value_b),
        }
    params_a, params_b = a.training.params, b.training.params
    extra_a, extra_b = a.training.model_extra or {}, b.training.model_extra or {}

    def side(meta: ModelMetadata, ref: str) -> dict[str, Any]:
        return {
            "ref": ref,
            "version": meta.version,
            "aliases": sorted(k for k, v in aliases.items() if v == meta.version),
            "created_at": meta.created_at.isoformat(),
        }

    def data(meta: ModelMetadata) -> dict[str, Any]:
        training = meta.training
        return {
            "rows": training.rows,
            "test_rows": training.test_rows,
            "data_uri": training.data_uri,
            "data_sha256": training.data_sha256,
        }

    def target(meta: ModelMetadata) -> dict[str, Any]:
        return {"name": meta.target.name, "classes": meta.target.classes}

    return {
        "model_name": a.model_name,
        "a": side(a, refs[0]),
        "b": side(b, refs[1]),
        "primary_metric": {
            "name": metric,
            "higher_is_better": HIGHER_IS_BETTER.get(metric),
            "note": note,
        },
        "better": better,
        "better_version": {"a": a.version, "b": b.version}.get(better or ""),
        "verdict": summary,
        "metrics": metrics,
        "estimator": {"a": a.training.estimator, "b": b.training.estimator},
        "params": {
            "differing": sorted(
                name
                for name in set(params_a) | set(params_b)
                if name not in params_a
                or name not in params_b
                or not _same_value(params_a[name], params_b[name])
            ),
            "overrides": {"a": extra_a.get("param_overrides"), "b": extra_b.get("param_overrides")},
            "a": params_a,
            "b": params_b,
        },
        "training": {
            "a": data(a),
            "b": data(b),
            "same_data": a.training.data_sha256 == b.training.data_sha256,
        },
        "features": _feature_changes(a, b),
        "target": {"same": target(a) == target(b), "a": target(a), "b": target(b)},
        "engine": {"a": _engine(a), "b": _engine(b)},
        "gate": {"a": extra_a.get("gate"), "b": extra_b.get("gate")},
    }


LABEL = 13
"""Width of the labels of ``show`` and ``compare`` (``metrics:     ``)."""


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows in columns two spaces apart, the second where the values of labelled lines start."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    widths[0] = max(widths[0], LABEL - 2)
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _labelled(label: str, values: Sequence[str]) -> list[str]:
    """``label:`` then each value on a line of its own, aligned."""
    return [f"{label + ':' if i == 0 else '':<{LABEL}}{value}" for i, value in enumerate(values)]


def _number(value: float | None, sign: str = "") -> str:
    return "-" if value is None else f"{value:{sign}.4f}"


def _comparison_lines(report: dict[str, Any]) -> list[str]:
    """``comparison``'s document for people."""
    a, b = report["a"], report["b"]
    va, vb = a["version"], b["version"]

    def named(side: dict[str, Any]) -> str:
        aliases = side["aliases"]
        return str(side["version"]) + (f" ({', '.join(aliases)})" if aliases else "")

    def both(section: dict[str, Any], field: str | None = None) -> list[str]:
        values = [section[key] if field is None else section[key][field] for key in ("a", "b")]
        return ["-" if value is None else str(value) for value in values]

    lines = [f"model:       {report['model_name']}"]
    if va == vb:
        lines.append(f"{'':<{LABEL}}(A and B are both {named(a)})")
    lines.append(f"verdict:     {report['verdict']}")
    if report["primary_metric"]["note"]:
        lines.append(f"{'':<{LABEL}}({report['primary_metric']['note']})")
    training, engine, gate = report["training"], report["engine"], report["gate"]
    summary = [
        ["", named(a), named(b)],
        ["created", *(created[:19].replace("T", " ") for created in both(report, "created_at"))],
        ["estimator", *both(report["estimator"])],
        ["rows", *both(training, "rows")],
        ["test rows", *both(training, "test_rows")],
        ["engine", *both(engine, "engine")],
    ]
    return [
        *lines,
        "",
        *_table(summary),
        "",
        *_metric_lines(report, va, vb),
        "",
        *_param_lines(report["params"], va, vb),
        "",
        *_data_lines(training, va, vb),
        *_feature_lines(report, va, vb),
        *_labelled(
            "engine",
            [f"{v}: {engine[k]['engine']}, {engine[k]['note']}" for k, v in (("a", va), ("b", vb))],
        ),
        *_labelled("gate", [f"{v}: {_gate_text(gate[k])}" for k, v in (("a", va), ("b", vb))]),
    ]


def _metric_lines(report: dict[str, Any], va: str, vb: str) -> list[str]:
    primary = report["primary_metric"]["name"]
    winners = {"a": va, "b": vb, "same": "same"}
    rows = [["METRIC", va, vb, f"{vb} - {va}", "BETTER"]]
    for name, metric in report["metrics"].items():
        rows.append(
            [
                name + (" *" if name == primary else ""),
                _number(metric["a"]),
                _number(metric["b"]),
                _number(metric["difference"], "+"),
                winners.get(metric["better"] or "", "-"),
            ]
        )
    return [*_table(rows), f"{'':<{LABEL}}(* the primary metric)"]


def _param_lines(params: dict[str, Any], va: str, vb: str) -> list[str]:
    if not (params["a"] or params["b"]):
        return ["parameters:  none recorded"]
    if not params["differing"]:
        return [f"parameters:  the same ({len(params['a'])})"]
    rows = [["PARAMETER", va, vb]]
    for name in params["differing"]:
        cells = [name]
        for key in ("a", "b"):
            cell = _param_text(params[key][name]) if name in params[key] else "-"
            overridden = name in (params["overrides"][key] or {})
            cells.append(cell + (" *" if overridden else ""))
        rows.append(cells)
    same = len(set(params["a"]) & set(params["b"]) - set(params["differing"]))
    return [*_table(rows), f"{'':<{LABEL}}(* set with --param; {same} more the same)"]


def _data_lines(training: dict[str, Any], va: str, vb: str) -> list[str]:
    a, b = training["a"], training["b"]
    if (a["data_uri"], a["data_sha256"]) == (b["data_uri"], b["data_sha256"]):
        return [f"data:        the same: {a['data_uri']} (sha256 {a['data_sha256']})"]
    lines = [f"{v}: {d['data_uri']} (sha256 {d['data_sha256']})" for v, d in ((va, a), (vb, b))]
    if training["same_data"]:
        lines.append("(the same bytes at two URIs)")
    elif a["data_uri"] == b["data_uri"]:
        lines.append("(the data at this URI changed between the two)")
    return _labelled("data", lines)


def _feature_lines(report: dict[str, Any], va: str, vb: str) -> list[str]:
    features = report["features"]
    count = features["count"]
    if features["same"]:
        lines = [f"features:    the same {count['a']}"]
    else:
        changes = [
            *(f"{vb} adds {f['name']} ({f['kind']}, {f['dtype']})" for f in features["added"]),
            *(f"{vb} drops {f['name']} ({f['kind']}, {f['dtype']})" for f in features["removed"]),
            *(
                f"{f['name']} is {f['a']['kind']} {f['a']['dtype']} in {va}, "
                f"{f['b']['kind']} {f['b']['dtype']} in {vb}"
                for f in features["changed"]
            ),
        ]
        if features["reordered"]:
            changes.append(f"the features they share come in another order in {vb}")
        summary = f"differ ({count['a']} in {va}, {count['b']} in {vb}):"
        lines = _labelled("features", [summary, *changes])
    target = report["target"]
    if not target["same"]:
        lines += _labelled(
            "target",
            [
                f"{version}: {t['name']}"
                + (f" classes={t['classes']}" if t["classes"] is not None else "")
                for version, t in ((va, target["a"]), (vb, target["b"]))
            ],
        )
    return lines


def _cmd_alias(registry: Registry, args: argparse.Namespace) -> int:
    if args.delete:
        if not args.alias or args.ref:
            raise InvalidName("usage: alias MODEL ALIAS --delete")
        with _explained(registry, args.model, args.alias):
            version = registry.delete_alias(args.model, args.alias)
        result = {"model_name": args.model, "alias": args.alias, "deleted": version}
        _print_json(result) if args.output == "json" else print(
            f"{args.model}: removed alias {args.alias} (was {version})"
        )
        return EXIT_OK
    if args.alias and args.ref:
        with _explained(registry, args.model, args.ref):
            version = registry.set_alias(args.model, args.alias, args.ref)
        result = {"model_name": args.model, "alias": args.alias, "version": version}
        _print_json(result) if args.output == "json" else print(
            f"{args.model}: {args.alias} -> {version}"
        )
        return EXIT_OK
    if args.alias:
        raise InvalidName("give both ALIAS and a version (or --delete); omit both to list aliases")
    aliases = registry.aliases(args.model)
    if args.output == "json":
        _print_json({"model_name": args.model, "aliases": aliases})
    else:
        for name, version in sorted(aliases.items()):
            print(f"{name}\t{version}")
    return EXIT_OK


def _cmd_verify(registry: Registry, args: argparse.Namespace) -> int:
    with _explained(registry, args.model, args.ref):
        statuses = registry.verify(args.model, args.ref)
        if not statuses:
            raise NotFound(f"model {args.model!r} has no versions in {registry.uri}")
    if args.output == "json":
        _print_json({"model_name": args.model, "versions": [_status_json(s) for s in statuses]})
    else:
        for status in statuses:
            line = f"{status.model_name} {status.version}: "
            line += "ok" if status.ok else f"{status.state.upper()}: {status.problem}"
            print(line)
    return EXIT_OK if all(s.ok for s in statuses) else EXIT_VERIFY_FAILED


COMMANDS = {
    "list": _cmd_list,
    "show": _cmd_show,
    "compare": _cmd_compare,
    "alias": _cmd_alias,
    "verify": _cmd_verify,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        registry = Registry(args.registry_uri)
        return COMMANDS[args.command](registry, args)
    except InvalidName as error:
        print(f"model-registry: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except NotFound as error:
        print(f"model-registry: not found: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except RegistryError as error:
        print(f"model-registry: error: {error}", file=sys.stderr)
        return EXIT_REGISTRY_ERROR
    except BrokenPipeError:  # `model-registry show ... | head`: the reader has what it wanted
        # Python would report the pipe again while flushing stdout at exit: point it elsewhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
