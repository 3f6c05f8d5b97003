"""``model-rollout``: kubectl-style canary rollouts of KServe InferenceServices, on evidence.

The entry point: it builds the argument parser (the settings as flags, the canary commands,
``rehearse`` and ``experiment``; each command's help lists its own flags and examples, then the
few settings it uses most, and ``--help-all`` every one), turns the arguments into settings,
and dispatches to the command's module (``rollout.canary``, ``rollout.experiment_cli``, or a
rehearsal), mapping Kubernetes and usage errors to exit codes. It does no work of its own, and
no module imports it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from rollout import canary, experiment_cli, experiment_rehearse, rehearse
from rollout.isvc import KubeError
from rollout.output import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_USAGE,
    REHEARSE_EXIT_CODES_HELP,
    Printer,
)
from rollout.settings import add_settings, settings_from
from serving_common.cli import format_validation_error

log = logging.getLogger("rollout")


CONNECTION = ("namespace", "context", "kubeconfig", "output")
"""The settings every command on a cluster lists in its own help."""
ISVC = "breast-cancer -n models"
COMMANDS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "start": (
        "patch in the new version at the first step, then run the analysis",
        (
            f"model-rollout start {ISVC} --version v2 --prometheus-url http://prometheus:9090",
            f"model-rollout start {ISVC} --version v2 --steps 5,20,50 --interval-seconds 300",
            f"model-rollout start {ISVC} --version v2 --dry-run   "
            "# reads the service, prints the patch",
        ),
        (*CONNECTION, "prometheus_url", "dry_run", "steps", "interval_seconds", "threshold"),
    ),
    "status": (
        "show the split, the revisions, the versions and the last decision",
        (f"model-rollout status {ISVC}", f"model-rollout status {ISVC} -o json"),
        (*CONNECTION, "prometheus_url"),
    ),
    "promote": (
        "send all traffic to the treatment now (remove canaryTrafficPercent)",
        (
            f"model-rollout promote {ISVC}",
            f"model-rollout promote {ISVC} --dry-run   # the patch and kubectl line; no cluster",
        ),
        (*CONNECTION, "dry_run"),
    ),
    "rollback": (
        "send all traffic back to control now (canaryTrafficPercent 0)",
        (
            f"model-rollout rollback {ISVC}",
            f"model-rollout rollback {ISVC} --dry-run   # the patch and kubectl line; no cluster",
        ),
        (*CONNECTION, "dry_run"),
    ),
    "pause": (
        "stop the analysis loop at the current split",
        (f"model-rollout pause {ISVC}", f"model-rollout resume {ISVC}   # continues it"),
        (*CONNECTION, "dry_run"),
    ),
    "resume": (
        "continue a paused or interrupted rollout from its saved state",
        (f"model-rollout resume {ISVC} --prometheus-url http://prometheus:9090",),
        (*CONNECTION, "prometheus_url", "dry_run"),
    ),
    "analyze": (
        "one analysis round: print the checks and the verdict, change nothing",
        (f"model-rollout analyze {ISVC} --prometheus-url http://prometheus:9090",),
        (*CONNECTION, "prometheus_url", "analysis_window"),
    ),
    "rehearse": (
        "run the analysis against local model servers, Prometheus and locust load",
        (
            "model-rollout rehearse --control v1 --treatment v2   # expects a promotion",
            "model-rollout rehearse --registry-uri ./registry --model churn --control v1 "
            "--treatment v2 \\\n      --treatment-fault-error-ratio 0.3   # expects a rollback",
        ),
        ("output", "steps", "interval_seconds", "analysis_window", "min_requests", "threshold"),
    ),
}
"""Each command's summary, examples and the settings its help lists."""


def examples(lines: tuple[str, ...], exit_codes: str) -> str:
    return "examples:\n" + "".join(f"  {line}\n" for line in lines) + "\n" + exit_codes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-rollout",
        allow_abbrev=False,  # --experiment is a flag of its own, not short for --experiment-*
        description=(
            "Canary rollouts of KServe InferenceServices, stepped on evidence from Prometheus: "
            "treatment (the latest revision) is compared with control (the previous rolled-out "
            "one) by the model_version label of the model server's metrics."
        ),
        epilog=examples(
            (
                f"model-rollout start {ISVC} --version v2",
                f"model-rollout status {ISVC}",
                "model-rollout rehearse --control v1 --treatment v2",
                "model-rollout COMMAND --help   # its own flags first, then the settings",
            ),
            EXIT_CODES_HELP,
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_settings(parser)
    made: dict[str, argparse.ArgumentParser] = {}
    for name, (summary, lines, _) in COMMANDS.items():
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary + ("\n\n" + rehearse.QUICK_HELP if name == "rehearse" else ""),
            epilog=examples(
                lines, REHEARSE_EXIT_CODES_HELP if name == "rehearse" else EXIT_CODES_HELP
            ),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        if name != "rehearse":
            sub.add_argument("name", metavar="NAME", help="InferenceService (model) name")
        made[name] = sub
    which = made["start"].add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="registry version to canary (vN), next to the current")
    which.add_argument("--storage-uri", help="full storage URI of the version to canary")
    rehearse.add_arguments(made["rehearse"])
    for name, sub in made.items():  # after each command's own flags, in its help too
        add_settings(sub, suppress=True, shown=COMMANDS[name][2])
    experiment_cli.add_parser(commands, experiment_rehearse.add_arguments)
    return parser


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
        return rehearse.rehearse(args, settings, printer)
    try:
        if args.command == "experiment":
            if args.experiment_command == "rehearse":
                return experiment_rehearse.rehearse(args, settings, printer)
            return experiment_cli.run(args, settings, printer)
        return canary.run(args, settings, printer)
    except KubeError as error:
        print(f"model-rollout: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as error:
        print(f"model-rollout: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
