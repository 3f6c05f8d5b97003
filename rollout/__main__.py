"""``model-rollout``: kubectl-style canary rollouts of KServe InferenceServices, on evidence.

The entry point: it builds the argument parser (the settings as flags, the canary commands,
``rehearse`` and ``experiment``), turns the arguments into settings, and dispatches to the
command's module (``rollout.canary``, ``rollout.experiment_cli``, or a rehearsal), mapping
Kubernetes and usage errors to exit codes. It does no work of its own, and no module imports it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from rollout import canary, experiment_cli, experiment_rehearse, rehearse
from rollout.isvc import KubeError
from rollout.output import EXIT_CODES_HELP, EXIT_ERROR, EXIT_USAGE, Printer
from rollout.settings import add_settings, settings_from
from serving_common.cli import format_validation_error

log = logging.getLogger("rollout")


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
        add_settings(sub, suppress=True)
        return sub

    add_settings(parser)

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
    rehearsal = command(
        "rehearse", "run the analysis against local model servers, Prometheus and locust load"
    )
    rehearse.add_arguments(rehearsal)
    experiment_rehearse.add_arguments(experiment_cli.add_parser(commands))
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
