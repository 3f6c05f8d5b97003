"""``model-trainer``: train, evaluate, gate and register one model version."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson

from model_registry import InvalidName, RegistryError
from serving_common.cli import parse_settings
from serving_common.logging import bind_context, configure_logging
from trainer.errors import ConfigError, DataError
from trainer.settings import TrainerSettings

if TYPE_CHECKING:
    from trainer.train import RunResult

log = logging.getLogger("trainer")

EXIT_REGISTERED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_REJECTED = 4
EXIT_REGISTRY = 5

EPILOG = f"""\
exit codes:
  {EXIT_REGISTERED}  a new version was registered (and promoted with --promote)
  {EXIT_FAILED}  unexpected failure (the log has the traceback)
  {EXIT_USAGE}  bad flags or settings (unknown estimator parameter, missing --target, ...)
  {EXIT_DATA}  the data failed validation (or --drop/--features name a column it does not have);
     nothing was registered
  {EXIT_REJECTED}  the champion gate rejected the model (worse than production by more than
     --tolerance); nothing was registered; --force registers anyway
  {EXIT_REGISTRY}  the registry failed (unreachable storage, permissions, version conflict)

examples:
  model-trainer --sample breast-cancer --promote
  model-trainer --data-uri gs://bucket/churn.parquet --target churned --model-name churn \\
      --registry-uri gs://bucket/registry --estimator gradient-boosting --param max_depth=6 \\
      --drop customer_id
  TRAINER_DATA_URI=s3://b/houses.csv TRAINER_TARGET=price TRAINER_MODEL_NAME=houses model-trainer
"""


def _report(result: RunResult, output: str) -> None:
    if output == "json":
        sys.stdout.write(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    scores = "  ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items()))
    if result.outcome == "rejected":
        gate = result.gate
        print(f"REJECTED {result.model_name}: {gate.reason}; nothing registered. {gate.remedy}")
        print(f"  metrics: {scores}")
        _notes(result)
        return
    promoted = " (production)" if result.promoted else ""
    print(f"registered {result.model_name} {result.version}{promoted} at {result.uri}")
    print(f"  metrics: {scores}")
    print(f"  gate:    {result.gate.reason}" + ("  [forced]" if result.gate.forced else ""))
    onnx = result.metadata.onnx if result.metadata else None
    if onnx is not None and onnx.file is not None:
        check = (onnx.model_extra or {}).get("check") or {}
        from model_registry.onnx_runtime import checked_on  # numpy: only with a result

        print(f"  onnx:    {onnx.file} {checked_on(check)}")
    elif onnx is not None:
        print(f"  onnx:    none ({onnx.reason}); the server will use the pipeline")
    _notes(result)


def _notes(result: RunResult) -> None:
    if result.dropped:
        print(f"  dropped: {', '.join(result.dropped)}")
    for warning in result.warnings:
        print(f"  warning: {warning}")


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(
        TrainerSettings,
        argv,
        prog="model-trainer",
        description=TrainerSettings.__doc__ or "",
        epilog=EPILOG,
    )
    configure_logging(settings.log_level, settings.log_format)
    try:
        model_name = settings.resolved_model_name
    except ValueError as error:
        print(f"model-trainer: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    bind_context(model_name=model_name)

    outcome, code = "failed", EXIT_FAILED
    result: RunResult | None = None
    try:
        from trainer.train import run  # scikit-learn loads only when there is work to do

        result = run(settings)
        outcome = result.outcome
        code = EXIT_REGISTERED if outcome == "registered" else EXIT_REJECTED
        _report(result, settings.output)
    except (ConfigError, InvalidName) as error:
        log.error("%s", error)
        code = EXIT_USAGE
    except DataError as error:
        for problem in error.problems:
            log.error("invalid data: %s", problem)
        code = EXIT_DATA
    except RegistryError as error:
        log.error("registry error: %s", error)
        code = EXIT_REGISTRY
    except Exception:
        log.exception("training failed")
        code = EXIT_FAILED
    if settings.pushgateway_url:
        from trainer.metrics import push_trainer_metrics

        push_trainer_metrics(
            settings.pushgateway_url,
            job=settings.pushgateway_job,
            model_name=model_name,
            outcome=outcome,
            version=result.version if result else None,
            scores=result.metrics if result and outcome == "registered" else None,
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
