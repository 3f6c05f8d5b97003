"""Generate a chart README's values table from ``# --`` comments in values.yaml.

    python -m scripts.chart_docs charts/model-serving           # rewrite README.md's table
    python -m scripts.chart_docs --check charts/model-serving   # exit 1 if stale or undocumented

The comment style is helm-docs': a ``# --`` comment (continued by further ``#`` lines) right
above a key documents it. A documented mapping is one row (its children need no comment);
every other value must carry its own comment. The table sits between the
``<!-- values:start -->`` and ``<!-- values:end -->`` markers of README.md.

Exit codes: 0 up to date (or rewritten), 1 stale or an undocumented value, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

START, END = "<!-- values:start -->", "<!-- values:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    description: str


class DocsError(Exception):
    """values.yaml or README.md cannot be documented as asked."""


def _lookup(values: Any, path: Sequence[str]) -> Any:
    for part in path:
        values = values[part]
    return values


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(value, kind):
            return name
    return "list" if isinstance(value, list) else "object"


def parse(values_text: str) -> tuple[list[Row], list[str]]:
    """The table rows, and the keys that lack a ``# --`` comment."""
    values = yaml.safe_load(values_text) or {}
    rows: list[Row] = []
    undocumented: list[str] = []
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    comment: list[str] | None = None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if comment is not None:
                comment.append(stripped[1:].strip())
            continue
        match = KEY.match(line)
        if match is None:
            if not stripped:
                comment = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [key for _, key, _ in stack] + [match["key"]]
        inherited = any(documented for _, _, documented in stack)
        value = _lookup(values, path)
        dotted = ".".join(path)
        if comment is not None:
            default = json.dumps(value, separators=(", ", ": "))
            rows.append(Row(dotted, _type_name(value), default, " ".join(comment).strip()))
        elif not inherited and not (isinstance(value, dict) and value):
            undocumented.append(dotted)
        stack.append((indent, match["key"], comment is not None))
        comment = None
    return rows, undocumented


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: Sequence[Row]) -> str:
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    lines += [
        f"| {r.key} | {r.type} | `{_cell(r.default)}` | {_cell(r.description)} |" for r in rows
    ]
    return "\n".join(lines)


def render(readme: str, rows: Sequence[Row]) -> str:
    if START not in readme or END not in readme:
        raise DocsError(f"README.md needs the markers {START} and {END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(rows)}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.chart_docs",
        description="Generate a chart README's values table from '# --' comments in values.yaml.",
        epilog="exit codes: 0 up to date or rewritten, 1 stale or undocumented value, 2 usage",
    )
    parser.add_argument("chart", type=Path, help="chart directory (holds values.yaml, README.md)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    values_path, readme_path = args.chart / "values.yaml", args.chart / "README.md"
    try:
        rows, undocumented = parse(values_path.read_text())
        readme = readme_path.read_text()
        fresh = render(readme, rows)
    except (OSError, yaml.YAMLError, DocsError) as error:
        print(f"chart_docs: {error}", file=sys.stderr)
        return 2
    if undocumented:
        print(
            f"{values_path}: values without a '# --' comment: {', '.join(undocumented)}",
            file=sys.stderr,
        )
        return 1
    if fresh == readme:
        print(f"{readme_path}: values table up to date ({len(rows)} values)")
        return 0
    if args.check:
        print(
            f"{readme_path}: values table is stale; run `make chart-docs` and commit it",
            file=sys.stderr,
        )
        return 1
    readme_path.write_text(fresh)
    print(f"{readme_path}: values table rewritten ({len(rows)} values)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
