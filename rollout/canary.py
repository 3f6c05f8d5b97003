"""The canary commands on a cluster: ``start``, ``status``, ``promote``, ``rollback``,
``pause``, ``resume`` and ``analyze`` of one InferenceService.

``run`` reads the InferenceService and its rollout ConfigMap once (the chart's rollout defaults
fill in the settings no flag or ``ROLLOUT_*`` gave), then runs the command: a patch, an Event and
the saved state, one analysis round, or the analysis loop (``rollout.controller``) on the
InferenceService's canary split. ``promote`` and ``rollback`` with ``--dry-run`` read nothing
(their patch is the same whatever the service says); every other dry run says why it needs the
cluster when there is none. It is given parsed arguments and knows nothing of how they are
parsed, of the experiment commands or of the rehearsals.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from typing import Any

from rollout.controller import RolloutState, analyze_once, run_loop
from rollout.decision import Action
from rollout.isvc import (
    INTERVAL_KEY,
    STEPS_KEY,
    KubeError,
    check_knative_mode,
    check_rolled_out,
    configmap_name,
    kubectl_line,
    parse_status,
    percent_patch,
    state_of,
    state_patch,
    storage_patch,
    treatment_uri,
    version_in,
)
from rollout.kube import InferenceServices, KubeTarget, api_client, send_patch
from rollout.output import EXIT_HALTED, EXIT_PROMOTED, Printer
from rollout.prometheus import Prometheus
from rollout.settings import RolloutSettings


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
        if self._prometheus is None:
            self._prometheus = Prometheus(self.settings.prometheus_url)
        return self._prometheus

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *_: object) -> None:
        if self._prometheus is not None:
            self._prometheus.close()

    def target(self) -> Any:
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


DRY_RUN_READS = {
    "start": "the patch sends the predictor's container list whole (a merge patch replaces "
    "lists) with only STORAGE_URI changed and the resourceVersion read, --version is placed "
    "next to the storage URI it serves now, and the control is the rolled-out revision",
    "pause": "what it writes is the saved rollout state (the NAME-rollout ConfigMap) with its "
    "phase changed",
    "resume": "it continues the saved rollout, reading the service, its state and Prometheus "
    "every round",
}
"""Why a command's ``--dry-run`` still reads the cluster (promote and rollback do not)."""


def run(args: argparse.Namespace, settings: RolloutSettings, printer: Printer) -> int:
    if settings.dry_run and args.command in {"promote", "rollback"}:
        # The patch is the same whatever the service says: print it, read nothing.
        percent = None if args.command == "promote" else 0
        patch = percent_patch(percent)
        send_patch(None, args.name, patch, f"{args.command} {args.name}", settings, printer)
        return EXIT_PROMOTED
    try:
        api = api_client(settings.kubeconfig, settings.context)
    except KubeError as error:
        if not settings.dry_run:
            raise
        why = DRY_RUN_READS.get(args.command, "it only reads: --dry-run changes nothing there")
        raise KubeError(
            f"{args.command} --dry-run needs the cluster: it reads inferenceservice "
            f"{settings.namespace}/{args.name} first, because {why}; {error}. Without a "
            "cluster, promote and rollback --dry-run print their patches"
        ) from error
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
    """Promote or roll back now (``run`` prints a dry run's patch without reading anything)."""
    percent = None if command == "promote" else 0
    ctx.send(percent_patch(percent), f"{command} {ctx.name}")
    if percent is None:
        ctx.state = promoted_state(ctx.name, ctx.isvc, ctx.state)
    elif ctx.state is not None:
        ctx.state.phase, ctx.state.percent = "rolled_back", percent
    if ctx.state is not None:
        ctx.isvcs.save_state(ctx.name, ctx.state.to_dict(), ctx.isvc)
    reason = "CanaryPromoted" if percent is None else "CanaryRolledBack"
    ctx.isvcs.record_event(ctx.name, reason, "by hand (model-rollout)", percent == 0)
    if percent is None and ctx.state is not None:
        ctx.printer.event("next", release_hint(ctx.name, ctx.state.treatment_version))
    return EXIT_PROMOTED


def promoted_state(
    name: str, isvc: dict[str, Any], state: RolloutState | None
) -> RolloutState | None:
    """What ``promote`` records: the saved rollout promoted when the spec serves its treatment;
    else (a canary by ``kubectl``, a pinned version after a rollback) the spec's version as
    served from now on, so the next ``start`` does not take a stale record for the control."""
    uri = parse_status(isvc).storage_uri
    version = version_in(uri)
    if state is not None and (version is None or version == state.treatment_version):
        state.phase, state.percent = "promoted", None
        return state
    if version is None:
        return None
    control = state.served if state is not None else ("unknown", None)
    return RolloutState.serving(name, version, uri, control, "promote (by hand)")


def _pause(ctx: Context) -> int:
    # A halted rollout may be paused, to resume it once what halted it is fixed; a finished one
    # (promoted, or rolled back: the treatment was rejected) has nothing left to pause.
    if ctx.state is None or ctx.state.phase in {"promoted", "rolled_back"}:
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
    now. When that revision is the latest created one, the live spec is what serves, whatever
    was saved before (``experiment stop --ship``, a ``helm upgrade`` or ``kubectl`` may have
    changed it since): the control is the spec's version. Otherwise (after a rollback the spec
    still names the rejected treatment) it comes from the saved rollout.
    """
    status = parse_status(isvc)
    revision = status.latest_rolled_out or status.latest_ready
    rolled_out = status.latest_rolled_out
    live = rolled_out is not None and rolled_out == status.latest_created
    if state is not None and not live:
        # Rolled back, halted or not yet rolled out: the saved state says what serves.
        version, uri = state.served
        if not re.fullmatch(r"v[1-9][0-9]*", version):
            raise ValueError(
                f"the saved rollout does not know which version serves outside the canary "
                f"({version!r}: it was promoted by hand before model-rollout kept a record); "
                "promote or roll back what is in progress, then start again"
            )
        return version, uri, revision
    if not live and rolled_out is not None and status.canary_percent is not None:
        raise ValueError(
            f"a canary not started by model-rollout is in progress ({status.latest_created} at "
            f"{status.canary_percent}% against {status.latest_rolled_out}): promote or roll it "
            "back first"
        )
    served = version_in(status.storage_uri)
    if served is None:
        raise ValueError("the current storage URI does not end in a registry vN")
    return served, status.storage_uri, revision


def _start(ctx: Context, args: argparse.Namespace) -> int:
    isvc = ctx.isvc
    check_knative_mode(isvc)
    check_rolled_out(isvc)
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
