"""``model-rollout``: kubectl-style canary rollouts of KServe InferenceServices, on evidence."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_origin

from pydantic import ValidationError

from rollout.controller import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_HALTED,
    EXIT_PROMOTED,
    EXIT_USAGE,
    Printer,
    RolloutState,
    analyze_once,
    run_loop,
)
from rollout.decision import Action
from rollout.settings import RolloutSettings
from serving_common.cli import format_validation_error

log = logging.getLogger("rollout")
VERSION_IN_URI = re.compile(r"/(v[1-9][0-9]*)/?$")


def _add_settings(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """Every RolloutSettings field as a --kebab-case flag (default: environment, then default).

    They are accepted before and after the command, as kubectl's are (``model-rollout -n models
    status NAME``); on a command's parser they default to SUPPRESS so that a flag given before
    the command is not reset to None by the command's parser."""
    group = parser.add_argument_group("settings (each also ROLLOUT_<NAME>)")
    unset = argparse.SUPPRESS if suppress else None
    for name, info in RolloutSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        helptext = (info.description or "").replace("%", "%%")
        default = info.get_default(call_default_factory=True)
        helptext += f" (default: {default})" if default not in (None, []) else ""
        if info.annotation is bool:
            group.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=unset,
                help=helptext,
            )
        elif get_origin(info.annotation) is list and name == "custom_query":
            group.add_argument(
                flag, dest=name, action="append", metavar="CHECK", default=unset, help=helptext
            )
        else:
            group.add_argument(flag, dest=name, metavar=name.upper(), default=unset, help=helptext)
    group.add_argument("-n", dest="namespace", default=unset, help="same as --namespace")
    group.add_argument(
        "-o", dest="output", choices=["text", "json"], default=unset, help="same as --output"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-rollout",
        allow_abbrev=False,  # --experiment is a flag of its own, not short for --experiment-*
        description=(
            "Canary rollouts of KServe InferenceServices, stepped on evidence from Prometheus: "
            "treatment (the latest revision) is compared with control (the previous rolled-out "
            "one) by the model_version label of the model server's metrics."
        ),
        epilog=EXIT_CODES_HELP,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=EXIT_CODES_HELP,
            allow_abbrev=False,
        )
        if name != "rehearse":
            sub.add_argument("name", metavar="NAME", help="InferenceService (model) name")
        _add_settings(sub, suppress=True)
        return sub

    _add_settings(parser)

    start = command("start", "patch in the new version at the first step, then run the analysis")
    which = start.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="registry version to canary (vN), next to the current")
    which.add_argument("--storage-uri", help="full storage URI of the version to canary")
    command("status", "show the split, the revisions, the versions and the last decision")
    command("promote", "send all traffic to the treatment now (remove canaryTrafficPercent)")
    command("rollback", "send all traffic back to control now (canaryTrafficPercent 0)")
    command("pause", "stop the analysis loop at the current split")
    command("resume", "continue a paused or interrupted rollout from its saved state")
    command("analyze", "one analysis round: print the checks and the verdict, change nothing")
    rehearse = command(
        "rehearse", "run the analysis against local model servers, Prometheus and locust load"
    )
    from rollout.rehearse import add_arguments

    add_arguments(rehearse)
    from rollout.experiment_cli import add_parser

    add_parser(commands, _add_settings)
    return parser


def settings_from(args: argparse.Namespace) -> RolloutSettings:
    overrides = {
        name: getattr(args, name)
        for name in RolloutSettings.model_fields
        if getattr(args, name, None) is not None
    }
    return RolloutSettings(**overrides)


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
        settings.policy()
    except ValidationError as error:
        print(format_validation_error(error, "ROLLOUT_"), file=sys.stderr)
        return EXIT_USAGE
    except ValueError as error:
        print(f"model-rollout: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    printer = Printer(settings.output)
    if args.command == "rehearse":
        from rollout.rehearse import rehearse

        return rehearse(args, settings, printer)
    from rollout.kube import KubeError

    try:
        if args.command == "experiment":
            from rollout.experiment_cli import run

            return run(args, settings, printer)
        return _kube_command(args, settings, printer)
    except KubeError as error:
        print(f"model-rollout: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as error:
        print(f"model-rollout: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def send_patch(  # noqa: PLR0917 (a patch and where it goes)
    isvcs: Any,
    name: str,
    patch: dict[str, Any],
    what: str,
    settings: RolloutSettings,
    printer: Printer,
) -> None:
    """Patch InferenceService ``name``, or with --dry-run print the patch and its kubectl line."""
    from rollout.kube import kubectl_line

    if settings.dry_run:
        printer.event("dry-run", f"would {what}", patch=patch)
        print(kubectl_line(name, settings.namespace, patch), flush=True)
    else:
        isvcs.patch(name, patch)
        printer.event("patched", what)


@dataclass
class Context:
    """What every Kubernetes command works with."""

    isvcs: Any
    name: str
    settings: RolloutSettings
    printer: Printer
    state: RolloutState | None
    isvc: dict[str, Any]
    """The InferenceService as read once at the start of the command."""

    def send(self, patch: dict[str, Any], what: str) -> None:
        send_patch(self.isvcs, self.name, patch, what, self.settings, self.printer)

    _prometheus: Any = None

    def prometheus(self) -> Any:
        """One Prometheus client per command, closed when the command ends."""
        from rollout.prometheus import Prometheus

        if self._prometheus is None:
            self._prometheus = Prometheus(self.settings.prometheus_url)
        return self._prometheus

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *_: object) -> None:
        if self._prometheus is not None:
            self._prometheus.close()

    def target(self) -> Any:
        from rollout.kube import KubeTarget

        target = KubeTarget(self.isvcs, self.name, dry_run=self.settings.dry_run)
        target.control_revision = self.state.control_revision if self.state else None
        return target

    def loop(self, state: RolloutState) -> int:
        self.state = state
        code = run_loop(
            self.target(),
            self.prometheus(),
            self.settings,
            state,
            self.printer,
            namespace=self.settings.namespace,
        )
        if state.phase == "promoted":
            self.printer.event("next", release_hint(self.name, state.treatment_version))
        return code


def release_hint(name: str, version: str) -> str:
    """What to do once a version is promoted, so the next upgrade does not undo it."""
    return (
        f"{name} now serves {version}: name it in the release, or its next upgrade undoes "
        f"the rollout (Helm 3) or is refused with a conflict with model-rollout (Helm 4): "
        f"helm upgrade RELEASE charts/model-serving --reuse-values --set model.version={version}"
        " (add --force-conflicts with Helm 4 if that upgrade also changes the predictor "
        "container, e.g. a new image); with kustomize, set STORAGE_URI in the base"
    )


def release_defaults(settings: RolloutSettings, data: dict[str, str]) -> RolloutSettings:
    """The chart's rollout values (the ``steps`` and ``intervalSeconds`` keys of the rollout
    ConfigMap) where neither a flag nor ROLLOUT_* set them."""
    from rollout.kube import INTERVAL_KEY, STEPS_KEY

    updates: dict[str, Any] = {}
    given = settings.model_fields_set
    try:
        if "steps" not in given and data.get(STEPS_KEY):
            updates["steps"] = [int(p) for p in data[STEPS_KEY].split(",")]
        if "interval_seconds" not in given and data.get(INTERVAL_KEY):
            updates["interval_seconds"] = float(data[INTERVAL_KEY])
    except ValueError as error:
        raise ValueError(f"bad rollout default in the rollout ConfigMap: {error}") from error
    if not updates:
        return settings
    merged = RolloutSettings.model_validate({**settings.model_dump(), **updates})
    merged.policy()
    return merged


def _kube_command(args: argparse.Namespace, settings: RolloutSettings, printer: Printer) -> int:
    from rollout.kube import InferenceServices, api_client, state_of

    api = api_client(settings.kubeconfig, settings.context)
    try:
        isvcs = InferenceServices(api, settings.namespace)
        isvc = isvcs.get(args.name)
        configmap = isvcs.rollout_configmap(args.name)
        settings = release_defaults(settings, (configmap or {}).get("data") or {})
        saved = state_of(configmap)
        state = RolloutState.from_dict(saved) if saved else None
        with Context(isvcs, args.name, settings, printer, state, isvc) as ctx:
            if args.command == "status":
                return _status(ctx)
            if args.command in {"promote", "rollback"}:
                return _manual(ctx, args.command)
            if args.command == "pause":
                return _pause(ctx)
            if args.command == "analyze":
                return _analyze(ctx)
            if args.command == "resume":
                return _resume(ctx)
            return _start(ctx, args)
    finally:
        api.close()  # type: ignore[no-untyped-call]


def _manual(ctx: Context, command: str) -> int:
    from rollout.kube import percent_patch

    percent = None if command == "promote" else 0
    ctx.send(percent_patch(percent), f"{command} {ctx.name}")
    if not ctx.settings.dry_run:
        if ctx.state is not None:
            ctx.state.phase = "promoted" if percent is None else "rolled_back"
            ctx.state.percent = percent
            ctx.isvcs.save_state(ctx.name, ctx.state.to_dict(), ctx.isvc)
        reason = "CanaryPromoted" if percent is None else "CanaryRolledBack"
        ctx.isvcs.record_event(ctx.name, reason, "by hand (model-rollout)", percent == 0)
        if percent is None and ctx.state is not None:
            ctx.printer.event("next", release_hint(ctx.name, ctx.state.treatment_version))
    return EXIT_PROMOTED


def _pause(ctx: Context) -> int:
    from rollout.kube import configmap_name, kubectl_line, state_patch

    if ctx.state is None:
        raise ValueError(f"{ctx.name} has no rollout to pause")
    ctx.state.phase = "paused"
    patch = state_patch(ctx.state.to_dict())
    if ctx.settings.dry_run:
        ctx.printer.event("dry-run", f"would pause the rollout of {ctx.name}", patch=patch)
        print(kubectl_line(configmap_name(ctx.name), ctx.settings.namespace, patch, "configmap"))
    else:
        ctx.isvcs.save_state(ctx.name, ctx.state.to_dict(), ctx.isvc)
        ctx.isvcs.record_event(ctx.name, "CanaryPaused", "by hand (model-rollout)")
        ctx.printer.event("paused", f"{ctx.name} stays at {ctx.state.percent}%")
    return EXIT_PROMOTED


def _analyze(ctx: Context) -> int:
    from rollout.kube import parse_status

    if ctx.state is None:
        raise ValueError(f"{ctx.name} has no rollout to analyse: start one first")
    status = parse_status(ctx.isvc)
    decision = analyze_once(
        ctx.state,
        ctx.prometheus(),
        ctx.settings,
        treatment_ready=status.latest_is_ready,
        namespace=ctx.settings.namespace,
    )
    ctx.printer.decision(ctx.state, decision)
    return EXIT_HALTED if decision.action is Action.HALT else EXIT_PROMOTED


def _resume(ctx: Context) -> int:
    state = ctx.state
    if state is None or state.phase not in {"progressing", "paused"}:
        raise ValueError(f"{ctx.name} has no rollout in progress to resume")
    state.phase = "progressing"
    if not ctx.settings.dry_run:
        ctx.isvcs.save_state(ctx.name, state.to_dict(), ctx.isvc)
    ctx.printer.event("resumed", f"{ctx.name} at {state.percent}% (round {state.rounds})")
    return ctx.loop(state)


def control_of(
    isvc: dict[str, Any], state: RolloutState | None
) -> tuple[str, str | None, str | None]:
    """(version, storage URI, revision) of the control: what KServe serves outside the canary.

    KServe sends the non-canary share to ``status.components.predictor.latestRolledoutRevision``
    (``createKnativeService`` in KServe's ``ksvc_reconciler.go``), not to whatever the spec names
    now: after a rollback the spec still names the rejected treatment. So the control comes from
    the saved rollout, and the spec's URI is trusted only when it is what is rolled out.
    """
    from rollout.kube import parse_status

    status = parse_status(isvc)
    revision = status.latest_rolled_out or status.latest_ready
    if state is not None:
        if state.phase == "promoted":
            return state.treatment_version, state.treatment_uri, revision
        # Rolled back or halted: the previous rolled-out revision still serves the control.
        return state.control_version, state.control_uri, revision
    rolled_out_is_spec = status.latest_rolled_out in (None, status.latest_created)
    if not rolled_out_is_spec and status.canary_percent is not None:
        raise ValueError(
            f"a canary not started by model-rollout is in progress ({status.latest_created} at "
            f"{status.canary_percent}% against {status.latest_rolled_out}): promote or roll it "
            "back first"
        )
    match = VERSION_IN_URI.search(status.storage_uri or "")
    if match is None:
        raise ValueError("the current storage URI does not end in a registry vN")
    return match.group(1), status.storage_uri, revision


def _start(ctx: Context, args: argparse.Namespace) -> int:
    from rollout.kube import check_knative_mode, parse_status, storage_patch

    isvc = ctx.isvc
    check_knative_mode(isvc)
    current = parse_status(isvc)
    state = ctx.state
    control_version, control_uri, control_revision = control_of(isvc, state)
    uri, version = treatment_uri(control_uri or current.storage_uri, args.version, args.storage_uri)
    if state is not None and state.phase in {"progressing", "paused"}:
        if state.treatment_version != version:
            raise ValueError(
                f"{ctx.name} is already rolling out {state.treatment_version}: "
                "promote, roll back or resume it first"
            )
        ctx.printer.event("resuming", f"{ctx.name}: {version} at {state.percent}% (saved state)")
        state.phase = "progressing"
        return ctx.loop(state)
    if control_version == version:
        raise ValueError(f"{ctx.name} already serves {version} (the control)")
    first = ctx.settings.steps[0]
    ctx.send(
        storage_patch(isvc, uri, first),
        f"serve {version} as the latest revision with {first}% of the traffic",
    )
    if ctx.settings.dry_run:
        return EXIT_PROMOTED
    state = RolloutState(
        model=ctx.name,
        control_version=control_version,
        treatment_version=version,
        percent=first,
        control_revision=control_revision,
        control_uri=control_uri,
        treatment_uri=uri,
    )
    ctx.isvcs.save_state(ctx.name, state.to_dict(), isvc)
    ctx.isvcs.record_event(
        ctx.name, "CanaryStarted", f"{version} at {first}% against {state.control_version}"
    )
    return ctx.loop(state)


def _status(ctx: Context) -> int:
    from rollout.kube import parse_status

    name, state, settings, printer = ctx.name, ctx.state, ctx.settings, ctx.printer
    status = parse_status(ctx.isvc)
    report: dict[str, Any] = {
        "name": name,
        "namespace": settings.namespace,
        "ready": status.ready,
        "canary_percent": status.canary_percent,
        "storage_uri": status.storage_uri,
        "revisions": {
            "latest_created": status.latest_created,
            "latest_ready": status.latest_ready,
            "latest_rolled_out": status.latest_rolled_out,
            "previous_rolled_out": status.previous_rolled_out,
        },
        "traffic": [
            {"revision": t.revision, "percent": t.percent, "latest": t.latest, "tag": t.tag}
            for t in status.traffic
        ],
        "rollout": state.to_dict() if state else None,
    }
    if state is not None:
        decision = analyze_once(
            state,
            ctx.prometheus(),
            settings,
            treatment_ready=status.latest_is_ready,
            namespace=settings.namespace,
        )
        report["live"] = {
            "verdict": decision.action.value,
            "reasons": list(decision.reasons),
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail} for c in decision.checks
            ],
        }
    if settings.output == "json":
        import json

        print(json.dumps(report, default=str))
        return EXIT_PROMOTED
    print(
        f"{settings.namespace}/{name}: ready={status.ready} "
        f"canaryTrafficPercent={status.canary_percent}"
    )
    print(f"  storage: {status.storage_uri}")
    for key, value in report["revisions"].items():
        print(f"  {key.replace('_', ' ')}: {value}")
    for t in status.traffic:
        tag = f" ({t.tag})" if t.tag else ""
        print(f"  traffic: {t.revision} {t.percent}%{' latest' if t.latest else ''}{tag}")
    if state is None:
        print("  no rollout recorded")
        return EXIT_PROMOTED
    print(
        f"  rollout: {state.treatment_version} (treatment) vs {state.control_version} (control), "
        f"{state.phase}, step {state.percent}%, {state.failed_rounds} failed round(s), "
        f"last: {state.last_action} ({'; '.join(state.last_reasons)})"
    )
    printer.decision(state, decision)
    return EXIT_PROMOTED


if __name__ == "__main__":
    sys.exit(main())
