"""Write a generated file, or with ``--check`` report that it is stale (exit 1)."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(output: Path, fresh: str, *, check: bool, root: Path, regenerate: str) -> int:
    """Exit status: 0 up to date or written, 1 stale under ``check``."""
    name = output.relative_to(root)
    current = output.read_text() if output.exists() else ""
    if fresh == current:
        print(f"{name}: up to date")
        return 0
    if check:
        print(f"{name} is stale: run `{regenerate}` and commit it", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(fresh)
    print(f"{name}: written")
    return 0
