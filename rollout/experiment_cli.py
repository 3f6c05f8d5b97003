"""``model-rollout experiment start|status|stop``: A/B experiments on an InferenceService.

An experiment is configuration of the predictor (``MODEL_SERVER_EXPERIMENT_*`` variables of its
container, as the chart's ``experiment`` values set them): ``start`` and ``stop`` patch them,
so each change rolls out through KServe as a new revision like any spec change, and ``--dry-run``
prints the patch and the equivalent ``kubectl patch`` instead. ``status`` reads the counts from
Prometheus and prints the analysis and the decision (``rollout.experiment``). It knows nothing
of the canary commands or the rehearsals: ``experiment rehearse`` is parsed and run by
``rollout.__main__`` with ``rollout.experiment_rehearse``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from rollout.controller import RolloutState
from rollout.experiment import EXIT_FOR, NoExperiment, read_counts, report_for, show
from rollout.isvc import (
    STORAGE_URI,
    VERSION_IN_URI,
    KubeError,
    check_knative_mode,
    env_patch,
    experiment_env,
    parse_status,
    treatment_uri,
    version_in,
)
from rollout.kube import InferenceServices, api_client, send_patch
from rollout.output import EXIT_ERROR, EXIT_PROMOTED, Printer
from rollout.prometheus import Prometheus, PrometheusError
from rollout.settings import RolloutSettings, add_settings
from serving_common.experiment import NAME

EXIT_CODES = """\
exit codes:
  start, stop: 0 patched (or printed with --dry-run), 1 Kubernetes error, 2 usage
  status, rehearse: 0 ship, 3 rollback, 4 keep-running (the decision), 1 error (Prometheus,
  Kubernetes, no experiment running), 2 usage
"""
VARIABLES = {
    "experiment": "MODEL_SERVER_EXPERIMENT",
    "treatment": "MODEL_SERVER_EXPERIMENT_TREATMENT",
    "percent": "MODEL_SERVER_EXPERIMENT_PERCENT",
    "user_header": "MODEL_SERVER_EXPERIMENT_USER_HEADER",
    "user_parameter": "MODEL_SERVER_EXPERIMENT_USER_PARAMETER",
    "require_user": "MODEL_SERVER_EXPERIMENT_REQUIRE_USER",
}
"""The predictor's experiment settings (``model_server.settings``), by what they say."""


CONNECTION = ("namespace", "context", "kubeconfig", "output")
ISVC = "breast-cancer -n models"
EXAMPLES = {
    "start": (
        f"model-rollout experiment start {ISVC} --experiment checkout-2026-11 --treatment v2 "
        "--percent 30",
        f"model-rollout experiment start {ISVC} --experiment checkout-2026-11 --treatment v2 "
        "--dry-run",
    ),
    "status": (
        f"model-rollout experiment status {ISVC} --prometheus-url http://prometheus:9090",
        f"model-rollout experiment status {ISVC} -o json",
    ),
    "stop": (
        f"model-rollout experiment stop {ISVC} --ship   # or --rollback",
        f"model-rollout experiment stop {ISVC} --rollback --dry-run",
    ),
    "rehearse": (
        "model-rollout experiment rehearse --control v1 --treatment v2 --lift 0.3   # ships",
        "model-rollout experiment rehearse --registry-uri ./registry --model churn "
        "--control v1 --treatment v2 --lift 0   # A/A: keeps running",
    ),
}
SHOWN = {
    "start": (*CONNECTION, "dry_run"),
    "status": (*CONNECTION, "prometheus_url", "experiment_window", "experiment_alpha"),
    "stop": (*CONNECTION, "dry_run"),
    "rehearse": ("output", "experiment_alpha", "experiment_min_outcomes", "experiment_metric"),
}
"""The settings each experiment command's help lists (every other one is accepted too)."""


def add_parser(
    commands: Any, rehearsal: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """``experiment`` and its commands on the main parser's subcommands; ``rehearsal`` adds
    ``experiment rehearse``'s own arguments (``rollout.__main__`` passes the rehearsal's)."""
    summary = "A/B experiments: sticky per-user variants, analysed with an always-valid test"
    parser: argparse.ArgumentParser = commands.add_parser(
        "experiment",
        help=summary,
        description=summary + ".",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="experiment_command", required=True, metavar="COMMAND")
    made: dict[str, argparse.ArgumentParser] = {}

    def command(name: str, text: str, *, isvc: bool = True) -> argparse.ArgumentParser:
        lines = "".join(f"  {line}\n" for line in EXAMPLES[name])
        made[name] = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=f"examples:\n{lines}\n{EXIT_CODES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        if isvc:
            made[name].add_argument("name", metavar="NAME", help="InferenceService (model) name")
        return made[name]

    start = command(
        "start", "serve control and treatment in the predictor, each user sticky to one"
    )
    group = start.add_argument_group("experiment")
    group.add_argument("--experiment", required=True, help="experiment name (a DNS label)")
    which = group.add_mutually_exclusive_group(required=True)
    which.add_argument("--treatment", help="registry version of the treatment (vN)")
    which.add_argument("--treatment-uri", help="full storage URI of the treatment version")
    group.add_argument(
        "--percent", type=float, default=50.0, help="share of users in the treatment (50)"
    )
    group.add_argument("--user-header", help="header with the user key (server default)")
    group.add_argument("--user-parameter", help="request parameter with the user key")
    group.add_argument(
        "--require-user", action="store_true", help="refuse requests without a user key"
    )
    command("status", "per-variant counts and rates, lift, p-values, sample ratio, decision")
    stop = command("stop", "end the experiment by serving one version")
    ending = stop.add_mutually_exclusive_group(required=True)
    ending.add_argument("--ship", action="store_true", help="serve the treatment from now on")
    ending.add_argument("--rollback", action="store_true", help="serve the control only")
    rehearse = command(
        "rehearse",
        "a real server with both versions, Prometheus and a locust population with a planted "
        "lift, analysed until a decision",
        isvc=False,
    )
    rehearsal(rehearse)
    for name, made_parser in made.items():  # after each command's own flags, in its help too
        add_settings(made_parser, suppress=True, shown=SHOWN[name])
    return rehearse


def run(args: argparse.Namespace, settings: RolloutSettings, printer: Printer) -> int:
    """One ``experiment`` command on a cluster: start, stop or status (``model-rollout``'s main
    runs ``experiment rehearse`` itself, and maps Kubernetes and usage errors)."""
    try:
        api = api_client(settings.kubeconfig, settings.context)
    except KubeError as error:
        if not settings.dry_run:
            raise
        raise KubeError(
            f"experiment {args.experiment_command} --dry-run needs the cluster: it reads "
            f"inferenceservice {settings.namespace}/{args.name} first, because the patch sends "
            "the predictor's container list whole (a merge patch replaces lists) with only its "
            f"experiment variables changed; {error}"
        ) from error
    try:
        isvcs = InferenceServices(api, settings.namespace)
        isvc = isvcs.get(args.name)
        if args.experiment_command == "start":
            return _start(isvcs, isvc, args, settings, printer)
        if args.experiment_command == "stop":
            return _stop(isvcs, isvc, args, settings, printer)
        return _status(isvc, args, settings, printer)
    finally:
        api.close()  # type: ignore[no-untyped-call]


def running(isvc: dict[str, Any]) -> str | None:
    """The name of the experiment the InferenceService's predictor runs, or None."""
    return experiment_env(isvc).get(VARIABLES["experiment"]) or None


def _start(
    isvcs: Any,
    isvc: dict[str, Any],
    args: argparse.Namespace,
    settings: RolloutSettings,
    printer: Printer,
) -> int:
    if not NAME.fullmatch(args.experiment):
        raise ValueError(
            f"--experiment {args.experiment!r} must be a DNS label: lowercase letters, digits "
            "and hyphens, at most 63"
        )
    if not 0 < args.percent < 100:
        raise ValueError(f"--percent must be above 0 and below 100, got {args.percent}")
    check_knative_mode(isvc)
    status = parse_status(isvc)
    current = running(isvc)
    if current is not None:
        raise ValueError(
            f"{args.name} already runs experiment {current!r}: stop it first "
            "(model-rollout experiment stop --ship|--rollback)"
        )
    if status.canary_percent is not None:
        raise ValueError(
            f"{args.name} has canaryTrafficPercent {status.canary_percent} (a canary in progress "
            "or rolled back): promote it or roll the release back to the control first, so the "
            "experiment's revision takes all traffic"
        )
    uri, version = treatment_uri(
        status.storage_uri, args.treatment, args.treatment_uri, ("--treatment", "--treatment-uri")
    )
    control = VERSION_IN_URI.search(status.storage_uri or "")
    if control is not None and control.group(1) == version:
        raise ValueError(f"{args.name} already serves {version}: the treatment must differ")
    changes: dict[str, str | None] = {
        VARIABLES["experiment"]: args.experiment,
        VARIABLES["treatment"]: uri,
        VARIABLES["percent"]: f"{args.percent:g}",
        VARIABLES["user_header"]: args.user_header,
        VARIABLES["user_parameter"]: args.user_parameter,
        VARIABLES["require_user"]: "true" if args.require_user else None,
    }
    control_version = control.group(1) if control else "the current version"
    send_patch(
        isvcs,
        args.name,
        env_patch(isvc, changes),
        f"start experiment {args.experiment}: {version} (treatment, {args.percent:g}% of users) "
        f"against {control_version} (control)",
        settings,
        printer,
    )
    if not settings.dry_run:
        isvcs.record_event(
            args.name,
            "ExperimentStarted",
            f"{args.experiment}: {version} for {args.percent:g}% of users against "
            f"{control_version}",
        )
    return EXIT_PROMOTED


def _stop(
    isvcs: Any,
    isvc: dict[str, Any],
    args: argparse.Namespace,
    settings: RolloutSettings,
    printer: Printer,
) -> int:
    current = running(isvc)
    if current is None:
        raise ValueError(f"{args.name} runs no experiment (no {VARIABLES['experiment']})")
    env = experiment_env(isvc)
    changes: dict[str, str | None] = dict.fromkeys(env)
    treatment = env.get(VARIABLES["treatment"], "")
    if args.ship:
        if "://" not in treatment:
            raise ValueError(
                f"the treatment {treatment!r} is not a storage URI: set the release's version"
            )
        changes[STORAGE_URI] = treatment
        what = f"end experiment {current}: serve the treatment {treatment} only"
    else:
        what = f"end experiment {current}: serve the control only"
    send_patch(isvcs, args.name, env_patch(isvc, changes), what, settings, printer)
    if not settings.dry_run:
        reason = "ExperimentShipped" if args.ship else "ExperimentRolledBack"
        isvcs.record_event(args.name, reason, what)
        if args.ship:
            record_shipped(isvcs, isvc, args.name, treatment, current)
            printer.event(
                "next",
                "name the treatment's version in the release (helm upgrade ... --set "
                "model.version=vN --set experiment.enabled=false), or its next upgrade "
                "undoes this",
            )
    return EXIT_PROMOTED


def record_shipped(
    isvcs: Any, isvc: dict[str, Any], name: str, treatment: str, experiment: str
) -> None:
    """Record the shipped treatment as the served version in the rollout ConfigMap, where
    ``model-rollout start`` looks for its control (as ``promote`` does): a rollout saved
    before the experiment would otherwise still name the version it replaced."""
    version = version_in(treatment)
    if version is None:
        return
    served = parse_status(isvc).storage_uri
    control = (version_in(served) or "unknown", served)
    state = RolloutState.serving(name, version, treatment, control, f"ship experiment {experiment}")
    isvcs.save_state(name, state.to_dict(), isvc)


def _status(
    isvc: dict[str, Any], args: argparse.Namespace, settings: RolloutSettings, printer: Printer
) -> int:
    experiment = running(isvc)
    if experiment is None:
        print(
            f"model-rollout: error: {args.name} runs no experiment (its predictor has no "
            f"{VARIABLES['experiment']}); start one with model-rollout experiment start",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        with Prometheus(settings.prometheus_url) as prometheus:
            counts = read_counts(
                prometheus,
                args.name,
                experiment,
                window=settings.experiment_window,
                namespace=settings.namespace,
            )
    except (NoExperiment, PrometheusError) as error:
        print(f"model-rollout: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    report = report_for(counts, settings)
    show(report, printer)
    return EXIT_FOR[report["decision"]]
