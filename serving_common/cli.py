"""Settings-driven command lines.

Every setting of a process is a pydantic-settings field; each field is also a
``--kebab-case`` flag, documented by the field's docstring. Precedence is
flag > environment variable (``PREFIX_NAME``) > default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, CliApp, CliSettingsSource

S = TypeVar("S", bound=BaseSettings)

EXIT_USAGE = 2
"""Exit status for bad flags or settings, as argparse uses."""


def usage_error(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` to stderr and exit with the usage status."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def format_validation_error(error: ValidationError, env_prefix: str) -> str:
    """One line per invalid setting, naming it as both flag and environment variable."""
    lines = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        field = ".".join(str(part) for part in item["loc"])
        if not field:
            lines.append(message)
            continue
        flag = "--" + field.replace("_", "-")
        env = env_prefix + field.upper()
        value = item.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
        lines.append(f"invalid {flag} / {env}: {message}{shown}")
    return "\n".join(lines)


def _tidy_help(parser: argparse.ArgumentParser) -> None:
    """Readable metavars for mapping and list flags, and no internal default-factory notes."""
    for action in parser._actions:
        if isinstance(action.metavar, str) and action.metavar.startswith("dict["):
            action.metavar = "KEY=VALUE"
        if isinstance(action.metavar, str) and action.metavar.startswith("list[str]"):
            action.metavar = "NAME[,NAME...]"
        if action.help and "(default factory:" in action.help:
            action.help = action.help.split(" (default factory:")[0] + " (default: none)"
        if action.help and action.help.endswith("(default: None)"):
            action.help = action.help.removesuffix("(default: None)") + "(default: none)"


def parse_settings(
    settings_cls: type[S],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    epilog: str = "",
) -> S:
    """Build ``settings_cls`` from flags and environment, or exit 2 with a clear message."""
    env_prefix = str(settings_cls.model_config.get("env_prefix", ""))
    env_note = (
        "Every flag can also be set as an environment variable, "
        f"{env_prefix}<FLAG_IN_UPPER_SNAKE_CASE>\n(for example --log-level is "
        f"{env_prefix}LOG_LEVEL). Flags win over the environment."
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"{env_note}\n\n{epilog}".rstrip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source: CliSettingsSource[S] = CliSettingsSource(
        settings_cls,
        root_parser=parser,
        cli_prog_name=prog,
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_avoid_json=True,
        cli_hide_none_type=True,
        cli_exit_on_error=True,
    )
    _tidy_help(parser)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return CliApp.run(settings_cls, cli_args=args, cli_settings_source=source)
    except ValidationError as error:
        usage_error(prog, format_validation_error(error, env_prefix))
