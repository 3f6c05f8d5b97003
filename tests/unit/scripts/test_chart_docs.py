"""The chart README's values table generator and its staleness check."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.chart_docs import END, START, main, parse
from tests.k8s_manifests import CHART

VALUES = """\
# A header comment, not documentation.

# -- Image settings, documented as one object.
image:
  repository: server
  tag: ""
server:
  # -- Worker processes,
  # one per core.
  workers: 1
  # -- Extra labels.
  labels: {}
  probe:
    # -- Seconds between probes.
    periodSeconds: 5
"""


def test_rows_from_comments() -> None:
    rows, undocumented = parse(VALUES)
    assert undocumented == []
    assert [(r.key, r.type, r.default) for r in rows] == [
        ("image", "object", '{"repository": "server", "tag": ""}'),
        ("server.workers", "int", "1"),
        ("server.labels", "object", "{}"),
        ("server.probe.periodSeconds", "int", "5"),
    ]
    assert rows[1].description == "Worker processes, one per core."


def test_undocumented_values_are_named() -> None:
    _, undocumented = parse(VALUES + "  timeout: 30\nextra: []\n")
    assert undocumented == ["server.timeout", "extra"]


def chart(tmp_path: Path, values: str, table: str = "") -> Path:
    (tmp_path / "values.yaml").write_text(values)
    (tmp_path / "README.md").write_text(f"# chart\n\n{START}\n{table}{END}\n\nafter\n")
    return tmp_path


def test_check_fails_when_stale_and_passes_after_rewrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = chart(tmp_path, VALUES)
    assert main(["--check", str(path)]) == 1
    assert "stale" in capsys.readouterr().err
    assert main([str(path)]) == 0
    readme = (path / "README.md").read_text()
    assert "| server.workers | int | `1` | Worker processes, one per core. |" in readme
    assert readme.endswith("after\n")
    assert main(["--check", str(path)]) == 0
    # A changed default makes the table stale again.
    (path / "values.yaml").write_text(VALUES.replace("workers: 1", "workers: 2"))
    assert main(["--check", str(path)]) == 1


def test_undocumented_value_fails_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = chart(tmp_path, VALUES + "extra: []\n")
    assert main(["--check", str(path)]) == 1
    assert "without a '# --' comment: extra" in capsys.readouterr().err


def test_missing_markers_are_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text(VALUES)
    (tmp_path / "README.md").write_text("# no markers\n")
    assert main(["--check", str(tmp_path)]) == 2


def test_the_charts_readme_is_fresh_and_every_value_documented() -> None:
    rows, undocumented = parse((CHART / "values.yaml").read_text())
    assert undocumented == []
    assert len(rows) > 50
    assert main(["--check", str(CHART)]) == 0
