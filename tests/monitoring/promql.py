"""PromQL helpers for the tests: an alert's condition turned into a signal that always answers."""

from __future__ import annotations

import re

_COMPARISON = re.compile(r"(>=|<=|==|!=|>|<)")


def as_signal(expr: str) -> str:
    """``expr`` with every comparison made a ``bool`` comparison.

    ``x > 0.5`` keeps only the series over the threshold, so a healthy system returns nothing
    and a typo in a metric name looks the same. ``x > bool 0.5`` returns every series with 0 or
    1: it answers whenever the metrics and labels the alert needs exist. Comparisons inside
    label matchers (``{code!="200"}``) and strings are left alone.
    """
    out: list[str] = []
    depth_braces = 0
    quote: str | None = None
    i = 0
    while i < len(expr):
        char = expr[i]
        if quote is not None:
            out.append(char)
            if char == "\\" and i + 1 < len(expr):
                out.append(expr[i + 1])
                i += 1
            elif char == quote:
                quote = None
            i += 1
            continue
        if char in "\"'`":
            quote = char
        elif char == "{":
            depth_braces += 1
        elif char == "}":
            depth_braces -= 1
        elif depth_braces == 0 and (match := _COMPARISON.match(expr, i)):
            operator = match.group(1)
            rest = expr[i + len(operator) :]
            if operator in {"<", ">"} and rest.startswith("="):
                operator += "="
                rest = rest[1:]
            out.append(operator)
            i += len(operator)
            if not rest.lstrip().startswith("bool"):
                out.append(" bool")
            continue
        out.append(char)
        i += 1
    return "".join(out)
