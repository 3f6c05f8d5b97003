"""``model-trace``: one request's prediction, lineage and outcomes; live accuracy per version.

The entry point: it parses the arguments into ``TraceSettings`` (``MODEL_TRACE_*`` environment
variables or ``--kebab-case`` flags), asks ``prediction_log.reader`` and prints the answer for
people (text) or scripts (JSON, YAML), ending with one of the exit codes below. The reading
itself is the reader's; nothing imports this module.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args, get_origin

import orjson
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from prediction_log import reader
from prediction_log.ids import time_of
from prediction_log.schema import default_log_uri
from serving_common.cli import format_validation_error

PROG = "model-trace"
ENV_PREFIX = "MODEL_TRACE_"

EXIT_OK = 0
"""Found (a trace) or reported (accuracy)."""
EXIT_ERROR = 1
"""The log could not be read: storage unreachable, permission denied, a file not Parquet."""
EXIT_USAGE = 2
"""Bad arguments or settings (argparse's status)."""
EXIT_NOT_FOUND = 3
"""No prediction with that id where it was searched; no label outcomes in the window."""

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}  found (trace), or accuracy reported
  {EXIT_ERROR}  storage error: the log could not be read (unreachable, permission, not Parquet)
  {EXIT_USAGE}  bad arguments or settings (a --since that is not 30m, 6h or 7d, ...)
  {EXIT_NOT_FOUND}  not found: no prediction with that id in the hours searched (they are
     printed), or no label outcomes for the model in the window"""

SINCE_RE = re.compile(r"^([1-9][0-9]*)([mhd])$")
MAX_SINCE = timedelta(days=3660)
"""Ten years: any window past that is a typo (and past what dates can hold)."""
SINCE_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
TEXT_PAYLOAD_CHARS = 300
"""Longest inputs or outputs shown in text output (-o json shows all of it)."""


def parse_since(value: str) -> timedelta:
    """``30m``, ``6h``, ``7d`` -> a timedelta; ``ValueError`` for anything else."""
    match = SINCE_RE.match(value.strip())
    if not match:
        raise ValueError(
            "use a whole number and a unit: m (minutes), h (hours) or d (days), e.g. 30m, 6h or 7d"
        )
    since = int(match.group(1)) * SINCE_UNITS[match.group(2)]
    if since > MAX_SINCE:
        raise ValueError(f"{value.strip()} is more than {MAX_SINCE.days} days back")
    return since


class TraceSettings(BaseSettings):
    """Where model-trace reads, how far back, and how it prints."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, use_attribute_docstrings=True, extra="ignore"
    )

    log_uri: str | None = None
    """The prediction log: a path, gs:// or s3:// URI (default: the folder prediction-log
    beside --registry-uri, as the server writes it)."""
    registry_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "registry_uri", f"{ENV_PREFIX}REGISTRY_URI", "MODEL_REGISTRY_URI"
        ),
    )
    """The model registry the lineage is read from (also $MODEL_REGISTRY_URI; default:
    ./registry unless --log-uri is given)."""
    model: str | None = None
    """Search only this model's folders of the log (default: every model's)."""
    since: str = "7d"
    """How far back to search: 30m, 6h, 7d. A request id the server made (a UUIDv7) is
    found by its own time whatever this is; a client's own x-request-id only within it.
    Outcomes are looked for up to this long after the prediction."""
    until: datetime | None = None
    """The end of the window, UTC ISO-8601 such as 2025-06-01T12:00:00Z (default: now)."""
    output: Literal["text", "json", "yaml"] = "text"
    """text for people, json or yaml for scripts."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "ERROR"
    """Messages of the storage libraries (gcsfs, s3fs) shown on stderr; their tracebacks
    only at DEBUG."""

    @field_validator("since")
    @classmethod
    def _check_since(cls, value: str) -> str:
        parse_since(value)
        return value.strip()

    @field_validator("until")
    @classmethod
    def _utc_until(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # a time without a zone is taken as UTC
        return value

    @property
    def window(self) -> timedelta:
        return parse_since(self.since)

    def uris(self) -> tuple[str, str | None]:
        """The log URI, and the registry URI lineage is read from (None: not read)."""
        if self.log_uri is not None:
            return self.log_uri, self.registry_uri
        registry = self.registry_uri or "./registry"
        log_uri = default_log_uri(registry)
        if log_uri is None:
            raise ValueError(
                f"--registry-uri {registry} is a bucket's root: there is no default log beside "
                "it, give --log-uri"
            )
        return log_uri, registry


SHORT = {"output": ("-o",)}

TRACE_EXAMPLES = """\
examples:
  model-trace 0190f3a4-5b6c-7d8e-9f01-23456789abcd
  model-trace 0190f3a4-5b6c-7d8e-9f01-23456789abcd -o json | jq .lineage.git_sha
  model-trace my-client-id-42 --model breast-cancer --since 30d   # a client's own id
  model-trace REQUEST_ID --registry-uri gs://bucket/registry      # log: gs://bucket/prediction-log
  model-trace REQUEST_ID --log-uri s3://bucket/logs/prediction-log --registry-uri s3://bucket/registry
"""

ACCURACY_LINES = """\
  model-trace accuracy breast-cancer
  model-trace accuracy breast-cancer --since 6h -o json
  model-trace accuracy diabetes --since 1d --until 2025-06-01T00:00:00Z   # MAE for a regressor
"""

ACCURACY_EXAMPLES = f"examples:\n{ACCURACY_LINES}"

DESCRIPTION = """\
Read the prediction log the model server writes (Parquet under a log URI: a path, gs:// or
s3://): one request's prediction, the lineage of the version that answered it (from the
registry: artifact sha256, training data, git sha, image digest, metrics) and the outcomes
reported for it; or live accuracy (MAE for regressors) per model version from the label
outcomes received in a window.

  model-trace REQUEST_ID [flags]      the same as: model-trace trace REQUEST_ID
  model-trace accuracy MODEL [flags]"""

TRACE_DESCRIPTION = """\
Print one request's prediction record, its version's lineage from the registry and the
outcomes reported for it.

A request id the server made (a UUIDv7) says when it was made: only the log's hour folders
around that time (+-5 min) are read. A client's own x-request-id is searched in every hour of
the last --since (default 7d). Outcomes are looked for from the prediction's time, at most
--since after it."""

ACCURACY_DESCRIPTION = """\
Live accuracy (classifiers: labels, correct, accuracy; regressors: labels and mean absolute
error) per model version, from the label outcomes received in the last --since.

Each label counts for the version of the prediction its request id names, when the log has
that prediction (JOINED counts those); else for the version the outcome record names."""

ENV_HELP = f"""\
environment:
  every flag is also {ENV_PREFIX}<FLAG_IN_UPPER_SNAKE_CASE> (--since is {ENV_PREFIX}SINCE);
  the registry also MODEL_REGISTRY_URI. Flags win over the environment.
  GCS: Workload Identity or GOOGLE_APPLICATION_CREDENTIALS; S3: the usual AWS_* variables."""


def add_settings(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """Every ``TraceSettings`` field as a ``--kebab-case`` flag. They default to SUPPRESS, so
    a flag given before the command is not reset by the command's parser, and what is not
    given comes from the environment, then the default."""
    group = parser.add_argument_group(f"settings (each also {ENV_PREFIX}<NAME>)")
    for name, info in TraceSettings.model_fields.items():
        if name in skip:
            continue
        flags = [*SHORT.get(name, ()), "--" + name.replace("_", "-")]
        choices = get_args(info.annotation) if get_origin(info.annotation) is Literal else None
        default = info.get_default()
        helptext = (info.description or "").replace("%", "%%")
        helptext += f" (default: {default})" if default is not None else ""
        group.add_argument(
            *flags,
            dest=name,
            metavar=None if choices else name.upper(),
            choices=choices,
            default=argparse.SUPPRESS,
            help=helptext,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=f"{TRACE_EXAMPLES}{ACCURACY_LINES}\n{ENV_HELP}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_settings(parser)
    trace = commands.add_parser(
        "trace",
        help="a request's prediction, lineage and outcomes (the default: model-trace ID)",
        description=TRACE_DESCRIPTION,
        epilog=f"{TRACE_EXAMPLES}\n{ENV_HELP}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    trace.add_argument("request_id", metavar="REQUEST_ID", help="the x-request-id to trace")
    accuracy = commands.add_parser(
        "accuracy",
        help="live accuracy (or MAE) per model version from the label outcomes",
        description=ACCURACY_DESCRIPTION,
        epilog=f"{ACCURACY_EXAMPLES}\n{ENV_HELP}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    accuracy.add_argument("model_name", metavar="MODEL", help="the model's name")
    add_settings(trace)
    add_settings(accuracy, skip=("model",))  # MODEL is its argument
    return parser


COMMANDS = ("trace", "accuracy")
_VALUE_FLAGS = {
    flag for name in TraceSettings.model_fields for flag in ("--" + name.replace("_", "-"),)
} | {flag for flags in SHORT.values() for flag in flags}


def with_command(argv: Sequence[str]) -> list[str]:
    """``model-trace ID ...`` is ``model-trace trace ID ...``: insert ``trace`` before the
    first positional argument when it is not a command (and not help)."""
    args = list(argv)
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "--":
            return [*args[:index], "trace", *args[index:]]
        if arg.startswith("-"):
            skip = arg in _VALUE_FLAGS  # --flag VALUE; --flag=VALUE is one argument
            continue
        return args if arg in COMMANDS else [*args[:index], "trace", *args[index:]]
    return args


def settings_from(args: argparse.Namespace) -> TraceSettings:
    given = {
        name: getattr(args, name) for name in TraceSettings.model_fields if hasattr(args, name)
    }
    return TraceSettings(**given)


# -- output ---------------------------------------------------------------------------------


def _dump(document: Any, output: str) -> None:
    if output == "json":
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    return "-" if value is None else str(value)


def _short(text: str | None) -> str:
    if text is None:
        return "-"
    if len(text) <= TEXT_PAYLOAD_CHARS:
        return text
    return f"{text[:TEXT_PAYLOAD_CHARS]}... ({len(text)} characters; -o json shows all)"


def _trace_lines(found: reader.Lookup, trace: reader.Trace, log_uri: str) -> list[str]:
    p = trace.prediction
    made = time_of(trace.request_id)
    origin = f"UUIDv7 made {_when(made)}" if made else "not a UUIDv7: a client's own id"
    lines = [
        f"request:     {trace.request_id}  ({origin})",
        f"log:         {log_uri}",
        f"time:        {_when(p['time'])}",
        f"model:       {p['model_name']} {p['model_version']}"
        + (f"  (revision {p['revision']})" if p.get("revision") else ""),
        f"answer:      status {p['status']}, protocol {p['protocol']}, "
        f"{p['latency_ms']:.2f} ms, rows {p['rows'] if p['rows'] is not None else '-'}",
    ]
    if found.matches > 1:
        lines.append(
            f"note:        {found.matches} predictions carry this id (a client reused it); "
            "this is the earliest"
        )
    if p.get("experiment"):
        lines.append(
            f"experiment:  {p['experiment']}, variant {p['variant'] or '-'}, "
            f"user hash {p['user_hash'] or '-'}"
        )
    lines.append(f"inputs:      sha256 {p['inputs_sha256'] or '-'}")
    if p.get("inputs") is not None:
        lines.append(f"             {_short(p['inputs'])}")
    if p.get("outputs") is not None:
        lines.append(f"outputs:     {_short(p['outputs'])}")
    lines.extend(_lineage_lines(trace.lineage))
    lines.append(f"outcomes:    {len(trace.outcomes) or 'none reported'}")
    for o in trace.outcomes:
        lines.append(f"  {_when(o['time'])}  {o['outcome']:<10} {_outcome_text(o)}")
    return lines


def _lineage_lines(origin: dict[str, Any] | None) -> list[str]:
    if origin is None:
        return ["lineage:     not read (no --registry-uri)"]
    where = f"{origin['model_name']} {origin['version']} in {origin['registry_uri']}"
    if not origin["found"]:
        return [f"lineage:     not available for {where}: {origin['problem']}"]
    metrics = "  ".join(f"{k}={v:.4f}" for k, v in sorted((origin["metrics"] or {}).items()))
    return [
        f"lineage:     {where}",
        f"  created:   {origin['created_at']}  ({origin['task']})",
        f"  artifact:  {origin['artifact_file']} sha256 {origin['artifact_sha256']}",
        f"  data:      {origin['data_uri']} sha256 {origin['data_sha256']} "
        f"({origin['training_rows']} rows)",
        f"  git sha:   {origin['git_sha'] or 'unknown'}",
        f"  image:     {origin['image_digest'] or 'unknown'}",
        f"  metrics:   {metrics or 'none'}",
    ]


def _outcome_text(o: dict[str, Any]) -> str:
    if o["outcome"] == "label":
        verdict = ""
        if o.get("correct") is not None:
            verdict = "  correct" if o["correct"] else "  incorrect"
        elif o.get("abs_error") is not None:
            verdict = f"  abs error {o['abs_error']:g}"
        text = f"prediction {o['prediction']}, target {o['target']}{verdict}"
    elif o["outcome"] == "conversion":
        text = f"converted {o['converted']}"
    else:
        text = f"value {o['value']}"
    side = f"  ({o['model_version']})" if o.get("model_version") else ""
    return f"{text}{side}  report {o['report_id']}"


def _not_found(found: reader.Lookup, log_uri: str) -> str:
    where = (
        f"models {', '.join(found.models)}"
        if found.models
        else "no models (the log has no predictions/model=* folder)"
    )
    lines = [
        f"{PROG}: request {found.request_id!r} not found in the prediction log {log_uri}",
        f"  searched: {where}; {len(found.folders)} hour folder(s), {len(found.files)} file(s)",
    ]
    lines.extend(f"  window:   {window}" for window in found.windows)
    if time_of(found.request_id) is None:
        lines.append(
            "  not a UUIDv7, so not the server's own id: a client's x-request-id is found only "
            "within --since (widen it, e.g. --since 30d)"
        )
    return "\n".join(lines)


def _run_trace(request_id: str, settings: TraceSettings) -> int:
    log_uri, registry_uri = settings.uris()
    found = reader.search_prediction(
        request_id,
        log_uri=log_uri,
        model=settings.model,
        since=settings.window,
        now=settings.until,
    )
    if found.record is None:
        print(_not_found(found, log_uri), file=sys.stderr)
        return EXIT_NOT_FOUND
    trace = reader.trace_of(
        found,
        log_uri=log_uri,
        registry_uri=registry_uri,
        since=settings.window,
        now=settings.until,
    )
    if settings.output == "text":
        print("\n".join(_trace_lines(found, trace, log_uri)))
    else:
        document = trace.as_dict()
        document["log_uri"] = log_uri
        document["searched"] = [str(window) for window in found.windows]
        _dump(document, settings.output)
    return EXIT_OK


ATTRIBUTION = (
    "each label counts for the version of the prediction its request id names (JOINED), "
    "else for the version the outcome record names"
)


def _run_accuracy(model: str, settings: TraceSettings) -> int:
    log_uri, _ = settings.uris()
    window = reader.since_window(settings.window, settings.until)
    rows = reader.live_accuracy(model, log_uri=log_uri, since=settings.window, now=window.end)
    if not rows:
        print(
            f"{PROG}: no label outcomes for model {model!r} in {log_uri} received {window}",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    if settings.output != "text":
        _dump(
            {
                "model_name": model,
                "log_uri": log_uri,
                "window": {
                    "start": window.start.isoformat(),
                    "end": window.end.isoformat(),
                    "since": settings.since,
                },
                "attribution": ATTRIBUTION,
                "versions": [row.as_dict() for row in rows],
            },
            settings.output,
        )
        return EXIT_OK
    print(f"model {model}: label outcomes received {window}")
    print(f"{'VERSION':<10} {'LABELS':>8} {'JOINED':>8} {'CORRECT':>8} {'ACCURACY':>9} {'MAE':>12}")
    for row in rows:
        correct = "-" if row.correct is None else str(row.correct)
        accuracy = "-" if row.accuracy is None else f"{row.accuracy:.4f}"
        mae = "-" if row.mae is None else f"{row.mae:.6g}"
        print(
            f"{row.model_version:<10} {row.count:>8} {row.joined:>8} {correct:>8} "
            f"{accuracy:>9} {mae:>12}"
        )
    print(f"({ATTRIBUTION})")
    return EXIT_OK


class _NoTracebacks(logging.Filter):
    """Storage libraries log their retries with tracebacks: one line each is enough here."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def log_handler(level: str) -> logging.Handler:
    """stderr, one line per message: ``model-trace: LEVEL logger: message``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s %(name)s: %(message)s"))
    if level != "DEBUG":
        handler.addFilter(_NoTracebacks())
    return handler


def _configure_logging(level: str) -> None:
    """Once per process, as basicConfig does (a caller that configured logging keeps it)."""
    logging.basicConfig(level=level, handlers=[log_handler(level)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(with_command(sys.argv[1:] if argv is None else argv))
    try:
        settings = settings_from(args)
        settings.uris()
    except ValidationError as error:
        print(format_validation_error(error, ENV_PREFIX), file=sys.stderr)
        return EXIT_USAGE
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(settings.log_level)
    try:
        if args.command == "accuracy":
            return _run_accuracy(args.model_name, settings)
        return _run_trace(args.request_id, settings)
    except reader.LogReadError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as error:  # a model name that cannot be one
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
