"""``model-registry``: list, show, alias and verify registered model versions."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from model_registry.errors import InvalidName, NotFound, RegistryError
from model_registry.metadata import ModelMetadata
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
  model-registry alias breast-cancer production v3
  model-registry verify breast-cancer
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
    for command in (ls, show, alias, verify):
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
    if args.output == "json":
        rows = [{**_status_json(s), "aliases": by_version.get(s.version, [])} for s in shown]
        _print_json({"model_name": args.model, "versions": rows, "aliases": aliases})
        return EXIT_OK
    if not statuses:
        with _explained(registry, args.model):
            raise NotFound(f"model {args.model!r} has no versions in {registry.uri}")
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


COMMANDS = {"list": _cmd_list, "show": _cmd_show, "alias": _cmd_alias, "verify": _cmd_verify}


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


if __name__ == "__main__":
    sys.exit(main())
