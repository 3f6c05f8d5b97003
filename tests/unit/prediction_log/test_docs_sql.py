"""Every DuckDB block of docs/prediction-log.md, run in order on a log the real writer wrote,
answers as the hand counts (and the Python reader) say; the BigQuery tables match the layout.

Nothing is downloaded: DuckDB's extension autoloading and autoinstalling are off, so the
blocks use only what the wheel carries (Parquet, ICU, JSON).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from prediction_log import reader
from prediction_log.schema import KINDS, PARTITIONING
from tests.unit.prediction_log.logs import Scenario

DOC = Path(__file__).resolve().parents[3] / "docs" / "prediction-log.md"
FENCE = re.compile(r"^```sql (?P<engine>duckdb|bigquery)(?: (?P<name>[\w-]+))?\n(?P<sql>.*?)^```$",
                   re.MULTILINE | re.DOTALL)  # fmt: skip


def blocks(engine: str) -> list[tuple[str, str]]:
    """(name, SQL) of the page's ```sql ENGINE NAME blocks, in order."""
    return [
        (m["name"] or "", m["sql"])
        for m in FENCE.finditer(DOC.read_text())
        if m["engine"] == engine
    ]


def rows(connection: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    """Run a block (it may hold several statements; the last one answers)."""
    result = connection.execute(sql)
    names = [column[0] for column in result.description or []]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def test_the_page_has_the_blocks_this_test_checks() -> None:
    assert [name for name, _ in blocks("duckdb")] == ["setup", "request", "accuracy", "joined"]
    assert len(blocks("bigquery")) == 4


def test_every_duckdb_block_answers_as_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = Scenario(str(tmp_path / "prediction-log"), datetime.now(UTC))
    monkeypatch.chdir(tmp_path)  # the blocks read prediction-log/ from the current folder
    connection = duckdb.connect()
    connection.execute("SET autoinstall_known_extensions = false")
    connection.execute("SET autoload_known_extensions = false")
    answers: dict[str, list[dict[str, Any]]] = {}
    for name, sql in blocks("duckdb"):
        answers[name] = rows(connection, sql)
        if name == "setup":  # the page's example parameters, then this log's
            connection.execute("SET VARIABLE model = 'churn'")
            connection.execute("SET VARIABLE request_id = $id", {"id": scenario.p1})

    request = answers["request"]
    assert {(r["request_id"], r["model_version"], r["outcome"]) for r in request} == {
        (scenario.p1, "v1", "label"),
        (scenario.p1, "v1", "conversion"),
    }
    assert [r["correct"] for r in request if r["outcome"] == "label"] == [True]

    accuracy = [
        (r["model_version"], r["labels"], r["joined"], r["correct"], round(r["accuracy"], 9))
        for r in answers["accuracy"]
    ]
    assert accuracy == [(*row[:4], round(row[4], 9)) for row in Scenario.ACCURACY["churn"]]
    python = reader.live_accuracy("churn", log_uri=scenario.log_uri)
    assert accuracy == [
        (r.model_version, r.count, r.joined, r.correct, round(r.accuracy or 0, 9)) for r in python
    ]

    joined = answers["joined"]
    assert len(joined) == Scenario.JOINED_IN_WINDOW
    assert {r["request_id"] for r in joined} == {
        scenario.p1,
        scenario.p2,
        scenario.p3,
        scenario.p4,
    }
    assert all(r["label_delay_seconds"] > 0 for r in joined)

    # the same blocks for a client's own id, and for the regressor's MAE
    connection.execute("SET VARIABLE request_id = 'client-7'")
    (client,) = rows(connection, dict(blocks("duckdb"))["request"])
    assert (client["model_version"], client["correct"]) == ("v2", True)
    connection.execute("SET VARIABLE model = 'price'")
    (price,) = rows(connection, dict(blocks("duckdb"))["accuracy"])
    assert (price["model_version"], price["labels"], price["mae"]) == ("v1", 2, 2.0)


def test_bigquery_tables_match_the_layout() -> None:
    ddl = blocks("bigquery")[0][1]
    keys = ", ".join(PARTITIONING.names)
    for kind in KINDS:
        table = re.search(
            rf"CREATE EXTERNAL TABLE `[\w.-]+\.{kind}`\s*WITH PARTITION COLUMNS \((?P<cols>.*?)\)"
            r"\s*OPTIONS \((?P<options>.*?)\);",
            ddl,
            re.DOTALL,
        )
        assert table, kind
        columns = [line.split()[0] for line in table["cols"].split(",") if line.strip()]
        assert ", ".join(columns) == keys  # in the order of the path
        options = table["options"]
        assert "format = 'PARQUET'" in options
        prefix = re.search(r"hive_partition_uri_prefix = '([^']+)'", options)
        uris = re.search(r"uris = \['([^']+)'\]", options)
        assert prefix
        assert uris
        assert prefix[1].endswith(f"/prediction-log/{kind}")
        assert uris[1] == f"{prefix[1]}/*"
    for _, sql in blocks("bigquery")[1:]:
        assert "`my-project.mlops.predictions`" in sql
