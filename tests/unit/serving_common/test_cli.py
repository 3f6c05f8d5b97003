"""Settings-driven CLIs: flags, environment, precedence and clear usage errors."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving_common.cli import EXIT_USAGE, parse_settings


class DemoSettings(BaseSettings):
    """A demo process."""

    model_config = SettingsConfigDict(env_prefix="DEMO_", use_attribute_docstrings=True)

    registry_uri: str = "./registry"
    """Where models live."""
    workers: int = Field(default=1, ge=1)
    """Worker processes."""
    mode: Literal["fast", "safe"] = "safe"
    """Mode."""
    verbose: bool = False
    """Say more."""


def parse(argv: list[str]) -> DemoSettings:
    return parse_settings(DemoSettings, argv, prog="demo", description="demo", epilog="exit codes:")


def test_defaults_env_and_flag_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse([]).workers == 1
    monkeypatch.setenv("DEMO_WORKERS", "3")
    monkeypatch.setenv("DEMO_REGISTRY_URI", "gs://env")
    settings = parse(["--registry-uri", "gs://flag", "--verbose"])
    assert (settings.workers, settings.registry_uri, settings.verbose) == (3, "gs://flag", True)


def test_help_documents_fields_env_and_epilog(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--registry-uri" in out
    assert "Worker processes." in out
    assert "DEMO_" in out
    assert "exit codes:" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "invalid --workers / DEMO_WORKERS: Input should be greater than"),
        (["--mode", "turbo"], "invalid --mode / DEMO_MODE"),
    ],
)
def test_invalid_values_exit_2_naming_flag_and_env(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(["--no-such-flag"])
    assert exit_info.value.code == EXIT_USAGE
    assert "--no-such-flag" in capsys.readouterr().err


def test_list_flags_show_what_they_take(capsys: pytest.CaptureFixture[str]) -> None:
    class ListSettings(BaseSettings):
        """Columns."""

        model_config = SettingsConfigDict(env_prefix="DEMO_", use_attribute_docstrings=True)

        drop: list[str] = Field(default_factory=list)
        """Columns to leave out."""
        only: list[str] | None = None
        """Only these."""

    with pytest.raises(SystemExit):
        parse_settings(ListSettings, ["--help"], prog="demo", description="demo")
    text = capsys.readouterr().out
    assert "--drop NAME[,NAME...]" in text
    assert "--only NAME[,NAME...]" in text
    assert "list[str]" not in text
    assert "(default: None)" not in text
