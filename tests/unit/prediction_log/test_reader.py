"""The reader on logs written by the real writer: where a lookup looks (only the hour of a
server-made id; the stated window for a client's id), outcomes, lineage, traces and live
accuracy against hand counts.

Which files a lookup opens is checked without timing: the lookup says what it read, and in a
copy of the log every other hour's files are replaced by garbage that Arrow refuses to read.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model_registry import Registry
from prediction_log import reader
from prediction_log.ids import new_request_id
from prediction_log.schema import PREDICTIONS
from tests.conftest import metadata_body
from tests.unit.prediction_log.logs import Scenario, label, log_writer, ns, predict

NOW = datetime(2025, 6, 10, tzinfo=UTC)
HOURS = 200
PER_HOUR = 1000
"""200k records of model churn, one hour after another up to NOW."""
EVERY_CLIENT_ID = 50
"""Every 50th request carries a client's own id instead of a server-made UUIDv7."""


def hour_start(index: int) -> datetime:
    return NOW - timedelta(hours=HOURS - index)


def when(hour: int, position: int) -> datetime:
    """The time of record ``position`` (0..999) of hour ``hour``: 3.6 s apart."""
    return hour_start(hour) + timedelta(seconds=position * 3600 / PER_HOUR)


def folder(model: str, at: datetime) -> str:
    return f"predictions/model={model}/date={at:%Y-%m-%d}/hour={at:%H}"


class BigLog:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)
        self.ids: dict[tuple[int, int], str] = {}
        with log_writer(self.uri, "churn") as writer:
            for hour in range(HOURS):
                for position in range(PER_HOUR):
                    i = hour * PER_HOUR + position
                    rid = f"client-{i}" if i % EVERY_CLIENT_ID == 0 else None
                    self.ids[hour, position] = predict(
                        writer, when(hour, position), request_id=rid, version=f"v{1 + hour % 3}"
                    )
                if hour % 20 == 19:
                    writer.flush()  # a file per hour, written as the server would
        with log_writer(self.uri, "other") as writer:  # another model, in the oldest hours
            for hour in range(3):
                predict(writer, when(hour, 500), version="v9")

    def files(self) -> list[Path]:
        return sorted((self.root / "predictions").rglob("*.parquet"))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> BigLog:
    return BigLog(tmp_path_factory.mktemp("big") / "prediction-log")


def test_the_big_log_is_what_the_tests_think(big: BigLog) -> None:
    assert sum(pq.read_metadata(p).num_rows for p in big.files()) == HOURS * PER_HOUR + 3
    hours = {p.parent for p in big.files() if "model=churn" in str(p)}
    assert len(hours) == HOURS


def test_a_server_made_id_is_read_from_its_own_hour_only(big: BigLog) -> None:
    rid = big.ids[120, 501]  # half past the hour: +-5 minutes stays in it
    found = reader.search_prediction(rid, log_uri=big.uri, now=NOW)
    assert found.record is not None
    assert found.record["request_id"] == rid
    assert found.record["time"] == when(120, 501)
    assert found.record["model_version"] == "v1"  # 1 + 120 % 3
    assert found.folders == (folder("churn", hour_start(120)),)
    assert found.files
    assert all(f"/{folder('churn', hour_start(120))}/" in path for path in found.files)
    assert [w.reason for w in found.windows] == ["the id's time +-5 min"]
    assert found.models == ("churn", "other")
    assert reader.find_prediction(rid, log_uri=big.uri, now=NOW) == found.record


def test_the_lookup_opens_no_other_hour(big: BigLog, tmp_path: Path) -> None:
    """Every other hour's files replaced by bytes that are not Parquet: a reader that opened
    one would fail."""
    copy = tmp_path / "prediction-log"
    shutil.copytree(big.root, copy)
    target = copy / folder("churn", hour_start(77))
    spoiled = 0
    for path in (copy / "predictions").rglob("*.parquet"):
        if path.parent != target:
            path.write_bytes(b"not parquet")
            spoiled += 1
    assert spoiled > 190
    rid = big.ids[77, 401]
    record = reader.find_prediction(rid, log_uri=str(copy), now=NOW)
    assert record is not None
    assert record["request_id"] == rid
    with pytest.raises(reader.LogReadError, match="cannot read the prediction log"):
        reader.find_prediction(big.ids[77, 0], log_uri=str(copy), now=NOW)  # a client id


def test_near_the_hour_both_hours_are_read(big: BigLog) -> None:
    rid = big.ids[150, 11]  # 40 s past the hour: 5 minutes before is the hour before
    found = reader.search_prediction(rid, log_uri=big.uri, now=NOW)
    assert found.record is not None
    assert found.folders == (folder("churn", hour_start(149)), folder("churn", hour_start(150)))


def test_a_client_id_is_searched_in_the_stated_window(big: BigLog) -> None:
    rid = big.ids[180, 0]
    assert rid == f"client-{180 * PER_HOUR}"
    found = reader.search_prediction(rid, log_uri=big.uri, now=NOW)
    assert found.record is not None
    assert found.record["time"] == hour_start(180)
    assert [str(w) for w in found.windows] == [
        "2025-06-03T00:00:00Z .. 2025-06-10T00:00:00Z (since 7d)"
    ]
    assert len(found.folders) == 7 * 24  # every hour of the window that has a folder
    assert all("model=churn" in f for f in found.folders)  # other's hours are older


def test_a_client_id_older_than_the_window_needs_a_wider_one(big: BigLog) -> None:
    rid = big.ids[10, 0]  # 190 hours ago
    assert reader.find_prediction(rid, log_uri=big.uri, now=NOW) is None
    wider = reader.search_prediction(rid, log_uri=big.uri, now=NOW, since=timedelta(days=9))
    assert wider.record is not None
    assert wider.record["request_id"] == rid


def test_a_server_made_id_is_found_whatever_the_window(big: BigLog) -> None:
    rid = big.ids[5, 701]  # 195 hours ago, far outside 7 days
    found = reader.search_prediction(rid, log_uri=big.uri, now=NOW, since=timedelta(hours=1))
    assert found.record is not None
    assert found.folders == (folder("churn", hour_start(5)),)


def test_a_missing_server_id_is_then_searched_in_the_window(big: BigLog) -> None:
    rid = new_request_id(ns(when(160, 500)))  # made then, never logged
    found = reader.search_prediction(rid, log_uri=big.uri, now=NOW)
    assert found.record is None
    assert found.matches == 0
    assert [w.reason for w in found.windows] == ["the id's time +-5 min", "since 7d"]
    assert found.folders[0] == folder("churn", hour_start(160))
    assert len(found.folders) == 7 * 24  # the id's hour is not read twice
    assert len(set(found.folders)) == len(found.folders)


def test_model_limits_the_folders_searched(big: BigLog) -> None:
    rid = big.ids[1, 501]
    assert reader.find_prediction(rid, log_uri=big.uri, model="other", now=NOW) is None
    found = reader.search_prediction(rid, log_uri=big.uri, model="churn", now=NOW)
    assert found.record is not None
    assert found.models == ("churn",)
    with pytest.raises(ValueError, match="invalid model name"):
        reader.find_prediction(rid, log_uri=big.uri, model="Not_A_Name", now=NOW)


# -- small logs -----------------------------------------------------------------------------


def test_a_reused_client_id_gives_the_earliest_and_says_how_many(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    now = datetime.now(UTC)
    with log_writer(log, "churn") as writer:
        predict(writer, now - timedelta(hours=1), request_id="same", version="v2")
        predict(writer, now - timedelta(hours=5), request_id="same", version="v1")
    found = reader.search_prediction("same", log_uri=log)
    assert found.matches == 2
    assert found.record is not None
    assert found.record["model_version"] == "v1"


def test_an_older_file_without_some_columns_reads_them_as_null(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    hour = tmp_path / "log" / folder("churn", now)
    hour.mkdir(parents=True)
    kept = [f for f in PREDICTIONS if f.name not in {"inputs", "outputs", "user_hash"}]
    old = pa.table(
        {
            f.name: pa.array([value], f.type)
            for f, value in zip(
                kept,
                [1, "old-1", now, "churn", "v1", None, "v1", 200, 1.0, 1, None, None, None],
                strict=True,
            )
        }
    )
    pq.write_table(old, hour / "old.parquet")
    (hour / "partial.parquet.tmp").write_bytes(b"a write in progress, not a file yet")
    record = reader.find_prediction("old-1", log_uri=str(tmp_path / "log"))
    assert record is not None
    assert (record["model_version"], record["status"]) == ("v1", 200)
    assert (record["inputs"], record["outputs"], record["user_hash"]) == (None, None, None)


def test_a_file_that_is_not_parquet_is_a_read_error(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    now = datetime.now(UTC)
    with log_writer(log, "churn") as writer:
        predict(writer, now, request_id="fine")
    (tmp_path / "log" / folder("churn", now) / "broken.parquet").write_bytes(b"garbage")
    with pytest.raises(reader.LogReadError, match=r"broken\.parquet"):
        reader.find_prediction("fine", log_uri=log)


def test_an_empty_or_missing_log_finds_nothing(tmp_path: Path) -> None:
    found = reader.search_prediction("anything", log_uri=str(tmp_path / "nowhere"))
    assert (found.record, found.models, found.folders) == (None, (), ())
    assert reader.outcomes_for("anything", log_uri=str(tmp_path / "nowhere")) == []
    assert reader.live_accuracy("churn", log_uri=str(tmp_path / "nowhere")) == []


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return Scenario(str(tmp_path / "prediction-log"), datetime.now(UTC))


def test_outcomes_are_looked_for_after_the_prediction_within_since(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    now = datetime.now(UTC)
    made = now - timedelta(days=20)
    with log_writer(log, "churn") as writer:
        rid = predict(writer, made)
        label(writer, made + timedelta(hours=1), rid, correct=True)
        label(writer, made + timedelta(days=6), rid, correct=False)
        label(writer, made + timedelta(days=8), rid, correct=True)  # more than 7d after
        label(writer, made - timedelta(hours=1), rid, correct=True)  # before it: not its
        label(writer, made + timedelta(hours=2), "another", correct=True)
    outcomes = reader.outcomes_for(rid, log_uri=log, after=made)
    assert [(o["time"], o["correct"]) for o in outcomes] == [
        (made + timedelta(hours=1), True),
        (made + timedelta(days=6), False),
    ]
    assert reader.outcomes_for(rid, log_uri=log) == outcomes  # a v7 id gives the time itself
    wider = reader.outcomes_for(rid, log_uri=log, after=made, since=timedelta(days=9))
    assert len(wider) == 3


def test_lineage_from_the_registry(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "registry"))
    body = metadata_body(
        metrics={"accuracy": 0.95},
        provenance={
            "git_sha": "1f2e3d4",
            "image_digest": "sha256:" + "c" * 64,
            "python": "3.11",
            "sklearn": "1.9",
            "package_version": "0.1.0",
        },
    )
    meta = registry.publish("churn", b"model bytes", body)
    origin = reader.lineage("churn", "v1", registry_uri=registry.uri)
    assert origin["found"] is True
    assert origin["artifact_sha256"] == meta.artifact.sha256
    assert (origin["data_uri"], origin["data_sha256"]) == ("file:///data.csv", "0" * 64)
    assert (origin["git_sha"], origin["image_digest"]) == ("1f2e3d4", "sha256:" + "c" * 64)
    assert origin["metrics"] == {"accuracy": 0.95}
    assert origin["created_at"] == meta.created_at.isoformat()
    missing = reader.lineage("churn", "v7", registry_uri=registry.uri)
    assert missing["found"] is False
    assert "v7" in missing["problem"]
    nowhere = reader.lineage("churn", "v1", registry_uri=str(tmp_path / "no-registry"))
    assert nowhere["found"] is False
    assert nowhere["problem"]


def test_trace_joins_prediction_lineage_and_outcomes(scenario: Scenario, tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "registry"))
    registry.publish("churn", b"v1 bytes", metadata_body())
    trace = reader.trace(scenario.p1, log_uri=scenario.log_uri, registry_uri=registry.uri)
    assert trace is not None
    assert trace.prediction["request_id"] == scenario.p1
    assert trace.lineage is not None
    assert trace.lineage["found"] is True
    assert sorted(o["outcome"] for o in trace.outcomes) == ["conversion", "label"]
    document = orjson.loads(orjson.dumps(trace.as_dict()))
    assert document["prediction"]["time"] == trace.prediction["time"].isoformat()
    assert {o["outcome"]: o["correct"] for o in document["outcomes"]}["label"] is True
    v2 = reader.trace(scenario.p3, log_uri=scenario.log_uri, registry_uri=registry.uri)
    assert v2 is not None
    assert v2.lineage is not None
    assert v2.lineage["found"] is False  # the registry has no v2: said, not raised
    without = reader.trace(scenario.p2, log_uri=scenario.log_uri)
    assert without is not None
    assert without.lineage is None
    assert reader.trace("no-such-id", log_uri=scenario.log_uri) is None


def test_live_accuracy_per_version_against_hand_counts(scenario: Scenario) -> None:
    rows = reader.live_accuracy("churn", log_uri=scenario.log_uri, now=scenario.now)
    assert [(r.model_version, r.count, r.joined, r.correct, r.accuracy, r.task) for r in rows] == [
        (*expected, "classification") for expected in Scenario.ACCURACY["churn"]
    ]
    assert all(r.mae is None for r in rows)
    price = reader.live_accuracy("price", log_uri=scenario.log_uri, now=scenario.now)
    assert [(r.model_version, r.count, r.joined, r.mae, r.correct, r.task) for r in price] == [
        ("v1", 2, 2, 2.0, None, "regression")
    ]
    recent = reader.live_accuracy(
        "churn", log_uri=scenario.log_uri, now=scenario.now, since=timedelta(minutes=90)
    )  # only the labels of the last 90 minutes: P3 and the unlogged id's
    assert [(r.model_version, r.count, r.joined, r.correct) for r in recent] == [
        ("v1", 1, 0, 1),
        ("v2", 1, 1, 1),
    ]


def test_windows_refuse_what_cannot_be_one() -> None:
    with pytest.raises(ValueError, match="positive"):
        reader.since_window(timedelta(0))
    with pytest.raises(ValueError, match="naive"):
        reader.since_window(timedelta(days=1), datetime(2025, 1, 1))
    assert reader.format_since(timedelta(days=7)) == "7d"
    assert reader.format_since(timedelta(minutes=90)) == "90m"
