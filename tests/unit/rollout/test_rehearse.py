"""The canary rehearsal's verdict: ``--expect``, its default, and the exit code it makes."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import pytest

from rollout.output import (
    EXIT_ERROR,
    EXIT_HALTED,
    EXIT_PROMOTED,
    EXIT_ROLLED_BACK,
    EXIT_USAGE,
    Printer,
)
from rollout.rehearse import expected, faults_given, judge


def arguments(errors: float = 0.0, latency: float = 0.0, expect: str | None = None) -> Any:
    return argparse.Namespace(
        treatment_fault_error_ratio=errors, treatment_fault_latency_ms=latency, expect=expect
    )


def test_a_fault_is_expected_to_be_rolled_back_and_a_healthy_treatment_promoted() -> None:
    assert expected(arguments()) == "promote"
    assert expected(arguments(errors=0.3)) == "rollback"
    assert expected(arguments(latency=250)) == "rollback"
    assert expected(arguments(errors=0.3, expect="promote")) == "promote"
    assert faults_given(arguments()) == "the treatment was given no faults"
    assert faults_given(arguments(errors=0.3)) == "the treatment was given 30% errors"
    assert faults_given(arguments(errors=0.35, latency=250)) == (
        "the treatment was given 35% errors and 250 ms of added latency"
    )


@pytest.mark.parametrize(
    ("code", "expect", "exit_code", "says"),
    [
        (EXIT_ROLLED_BACK, "rollback", EXIT_PROMOTED, "rolled back, as intended: GIVEN"),
        (EXIT_PROMOTED, "promote", EXIT_PROMOTED, "promoted, as intended: GIVEN"),
        # A promotion where a rollback was expected must not pass for a success.
        (EXIT_PROMOTED, "rollback", EXIT_ERROR, "promoted, but a rollback was expected: GIVEN"),
        (EXIT_ROLLED_BACK, "promote", EXIT_ROLLED_BACK, "rolled back, but a promote was expected"),
        (EXIT_HALTED, "rollback", EXIT_HALTED, "halted, but a rollback was expected: GIVEN"),
        (EXIT_HALTED, "promote", EXIT_HALTED, "halted, but a promote was expected"),
    ],
)
def test_the_exit_code_says_whether_the_expected_outcome_came(
    code: int, expect: str, exit_code: int, says: str
) -> None:
    out = io.StringIO()
    given = "the treatment was given 30% errors"
    assert judge(code, expect, given, Printer("text", out)) == exit_code
    assert f"outcome: {says.replace('GIVEN', given)}" in out.getvalue()
    json_out = io.StringIO()
    judge(code, expect, given, Printer("json", json_out))
    line = json.loads(json_out.getvalue())
    assert (line["event"], line["expected"]) == ("outcome", expect)


def test_errors_are_not_judged() -> None:
    out = io.StringIO()
    for code in (EXIT_ERROR, EXIT_USAGE):
        assert judge(code, "rollback", "", Printer("text", out)) == code
    assert out.getvalue() == ""
