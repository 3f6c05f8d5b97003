"""The test helper that turns alert conditions into signals."""

from __future__ import annotations

import pytest

from tests.monitoring.promql import as_signal


@pytest.mark.parametrize(
    ("expr", "signal"),
    [
        ("x > 0.5", "x > bool 0.5"),
        ("x >= 2", "x >= bool 2"),
        ('rate(a{code!="200", b=~"5.."}[5m]) == 0', 'rate(a{code!="200", b=~"5.."}[5m]) == bool 0'),
        ("a > on (m) group_left () (2 * b)", "a > bool on (m) group_left () (2 * b)"),
        ("a > bool 1", "a > bool 1"),
        ("count(a > 0.05) >= 2", "count(a > bool 0.05) >= bool 2"),
        ('a{x="<>"} < 3', 'a{x="<>"} < bool 3'),
        ("a unless on (p) b", "a unless on (p) b"),
    ],
)
def test_as_signal(expr: str, signal: str) -> None:
    assert as_signal(expr) == signal
