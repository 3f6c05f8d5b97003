"""Reading the prediction log: one request's trace, its version's lineage, live accuracy.

For notebooks and for ``model-trace``. Every function takes the log's URI (a path, ``gs://``
or ``s3://``; credentials and emulator endpoints come from the usual environment, as for the
registry) and reads Parquet with Arrow datasets over fsspec, never more than the hour folders
a question needs (``prediction_log.schema`` has the layout)::

    >>> from datetime import timedelta
    >>> from prediction_log import reader
    >>> log = "gs://my-bucket/prediction-log"
    >>> t = reader.trace("0190f3a4-5b6c-7d8e-9f01-23456789abcd", log_uri=log,
    ...                  registry_uri="gs://my-bucket/registry")
    >>> t.prediction["model_version"], t.lineage["git_sha"], len(t.outcomes)
    ('v3', '1f2e3d4', 1)
    >>> for row in reader.live_accuracy("breast-cancer", log_uri=log, since=timedelta(days=1)):
    ...     print(row.model_version, row.count, row.accuracy)
    v3 1200 0.9425

Where a lookup looks:

- A request id the server made is a UUIDv7 (``prediction_log.ids``): its first 48 bits are
  when the request arrived, which is the ``time`` its record is filed under. The lookup reads
  only the hour folders covering that time +-5 minutes.
- Any other id (a client's own ``x-request-id``), or a v7 id not found there, is searched in
  every hour folder of the window ``[now - since, now]``.

The hour folders to read are worked out from the window, and only the folders of the dates and
hours in it are listed (never the whole tree: listing a large bucket is slow). Within them,
the ``request_id`` column is read first, with a filter (row groups whose statistics cannot hold
the id are skipped); only then is the matching row read whole.

Records come back as dicts keyed by the schema's column names (``prediction_log.schema``),
``time`` as an aware UTC ``datetime``; a column a file lacks (an older schema version) is None.
Storage failures raise :class:`LogReadError`; nothing found is ``None`` or an empty list.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal, ParamSpec, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from model_registry.errors import InvalidName, RegistryError
from model_registry.registry import Registry, check_model_name
from model_registry.storage import Storage
from prediction_log.ids import time_of
from prediction_log.schema import SCHEMAS, Kind

DEFAULT_SINCE: Final = timedelta(days=7)
"""How far back a search goes by default: ``model-trace``'s ``--since 7d``."""
ID_MARGIN: Final = timedelta(minutes=5)
"""How far from a UUIDv7's own time its record is looked for (the id is made when the
request arrives; the record's time is that arrival, so this covers clock steps only)."""

P = ParamSpec("P")
R = TypeVar("R")


class LogReadError(Exception):
    """The log's storage failed (unreachable, permission denied, a file that is not Parquet).
    Finding nothing is not an error."""


def _read_errors(function: Callable[P, R]) -> Callable[P, R]:
    """Report storage and Arrow failures as ``LogReadError``, with what failed."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except LogReadError:
            raise
        except (OSError, pa.ArrowException, RegistryError) as error:  # before ValueError:
            raise LogReadError(  # ArrowInvalid (a file that is not Parquet) is one too
                f"cannot read the prediction log: {type(error).__name__}: {error}"
            ) from error
        except ValueError:  # the caller's: a bad model name, a window of no length
            raise
        except Exception as error:  # gcsfs, s3fs and aiohttp raise their own types
            if type(error).__module__.split(".")[0] not in _BACKEND_MODULES:
                raise
            raise LogReadError(
                f"cannot read the prediction log: {type(error).__name__}: {error}"
            ) from error

    return wrapper


_BACKEND_MODULES = ("gcsfs", "s3fs", "botocore", "aiobotocore", "aiohttp", "google", "fsspec")


# -- windows and hour folders -------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A span of UTC time searched, and why it was chosen."""

    start: datetime
    end: datetime
    reason: str
    """``"the id's time +-5 min"``, ``"since 7d"``, ..."""

    def hours(self) -> list[datetime]:
        """The hours (their starts) the window touches, oldest first."""
        hour = self.start.replace(minute=0, second=0, microsecond=0)
        hours = []
        while hour <= self.end:
            hours.append(hour)
            hour += timedelta(hours=1)
        return hours

    def __str__(self) -> str:
        return f"{_stamp(self.start)} .. {_stamp(self.end)} ({self.reason})"


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(when: datetime | None) -> datetime:
    if when is None:
        return datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError(f"a naive datetime is ambiguous: give a UTC one ({when!r})")
    return when.astimezone(UTC)


def since_window(since: timedelta, now: datetime | None = None) -> Window:
    """``[now - since, now]``: the window a search by time covers."""
    if since <= timedelta(0):
        raise ValueError(f"since must be positive, not {since}")
    end = _utc(now)
    return Window(end - since, end, f"since {format_since(since)}")


def format_since(since: timedelta) -> str:
    """``7d``, ``6h``, ``30m`` (the largest whole unit), else seconds."""
    seconds = int(since.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{since.total_seconds():g}s"


class _Log:
    """One log URI: the hour folders that exist for a window, and Arrow datasets over them."""

    def __init__(self, log_uri: str) -> None:
        try:
            self.storage = Storage(log_uri)
        except RegistryError as error:
            raise LogReadError(f"cannot open the prediction log {log_uri!r}: {error}") from error
        self.uri = self.storage.uri
        self.fs = self.storage.fs
        self.arrow_fs: pafs.FileSystem = (
            pafs.LocalFileSystem()
            if self.storage.is_local
            else pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))
        )

    def _ls(self, rel: str) -> dict[str, str]:
        """Entries directly under ``rel``: base name -> ``file`` or ``directory``; {} when
        there is no such folder."""
        path = self.storage.path(rel)
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        found = {}
        for entry in entries:
            full = str(entry["name"]).rstrip("/")
            if full == path.rstrip("/"):  # object stores list a file as itself
                continue
            name = full.rsplit("/", 1)[-1]
            found[name] = "directory" if entry.get("type") == "directory" else "file"
        return found

    def models(self, kind: Kind, model: str | None) -> list[str]:
        """``[model]``, or every ``model=*`` folder under ``kind`` (one listing)."""
        if model is not None:
            try:
                return [check_model_name(model)]
            except InvalidName as error:
                raise ValueError(str(error)) from error
        return sorted(
            name.removeprefix("model=")
            for name, entry in self._ls(kind).items()
            if entry == "directory" and name.startswith("model=")
        )

    def hour_folders(
        self, kind: Kind, models: Sequence[str], hours: Iterable[datetime]
    ) -> list[str]:
        """The folders (relative to the log) of ``hours`` that exist, for each model: one
        listing per date folder, never one of a whole model or of the log."""
        by_date: dict[date, set[int]] = {}
        for hour in hours:
            by_date.setdefault(hour.date(), set()).add(hour.hour)
        folders: list[str] = []
        for model in models:
            for day in sorted(by_date):
                rel = f"{kind}/model={model}/date={day:%Y-%m-%d}"
                present = {name for name, entry in self._ls(rel).items() if entry == "directory"}
                folders.extend(
                    f"{rel}/hour={hour:02d}"
                    for hour in sorted(by_date[day])
                    if f"hour={hour:02d}" in present
                )
        return folders

    def files(self, folders: Iterable[str]) -> list[str]:
        """The Parquet files in ``folders`` (anything else, such as a temporary file, is
        skipped), as paths the Arrow filesystem opens."""
        found = []
        for rel in folders:
            for name, entry in sorted(self._ls(rel).items()):
                if entry == "file" and name.endswith(".parquet"):
                    found.append(self.storage.path(f"{rel}/{name}"))
        return found

    def dataset(self, kind: Kind, files: Sequence[str]) -> ds.Dataset:
        """The files as one dataset with the current schema: a column an older file lacks
        reads as null."""
        return ds.dataset(
            list(files), schema=SCHEMAS[kind], format="parquet", filesystem=self.arrow_fs
        )


def _within(kind: Kind, window: Window) -> pc.Expression:
    """Records whose ``time`` is in ``window`` (an hour folder holds the whole hour)."""
    kind_of_time = SCHEMAS[kind].field("time").type
    start = pa.scalar(window.start, kind_of_time)
    end = pa.scalar(window.end, kind_of_time)
    return (pc.field("time") >= start) & (pc.field("time") <= end)


# -- one request --------------------------------------------------------------------------


@dataclass(frozen=True)
class Lookup:
    """What a search for one request id found, and where it looked."""

    request_id: str
    record: dict[str, Any] | None
    """The prediction record (the earliest, when a client's id was used more than once)."""
    matches: int
    """Prediction records with this id (more than one: a client reused its own id)."""
    windows: tuple[Window, ...]
    """The windows searched, in order."""
    folders: tuple[str, ...]
    """The hour folders read (relative to the log URI)."""
    files: tuple[str, ...]
    """The Parquet files opened."""
    models: tuple[str, ...]
    """The models whose folders were searched."""

    @property
    def found(self) -> bool:
        return self.record is not None


@_read_errors
def search_prediction(
    request_id: str,
    *,
    log_uri: str,
    model: str | None = None,
    since: timedelta = DEFAULT_SINCE,
    now: datetime | None = None,
) -> Lookup:
    """Look up one request's prediction record and say where it looked (``Lookup``).

    A UUIDv7 id is looked for in the hours of its own time +-5 minutes first; any other id,
    or a v7 id not found there, in every hour of ``[now - since, now]`` (the hours already
    read are not read again). ``model`` limits the search to that model's folders; by
    default every ``model=*`` folder under ``predictions/`` is searched.

    >>> found = search_prediction(rid, log_uri="./prediction-log")
    >>> found.record["status"] if found.found else [str(w) for w in found.windows]
    """
    log = _Log(log_uri)
    models = log.models("predictions", model)
    end = _utc(now)
    windows: list[Window] = []
    made = time_of(request_id)
    if made is not None:
        windows.append(Window(made - ID_MARGIN, made + ID_MARGIN, "the id's time +-5 min"))
    windows.append(since_window(since, end))
    read_hours: set[datetime] = set()
    all_folders: list[str] = []
    all_files: list[str] = []
    for window in windows:
        hours = [hour for hour in window.hours() if hour not in read_hours]
        read_hours.update(hours)
        folders = log.hour_folders("predictions", models, hours)
        files = log.files(folders)
        all_folders.extend(folders)
        all_files.extend(files)
        rows = _find_rows(log, "predictions", files, request_id)
        if rows:
            rows.sort(key=lambda row: row["time"])
            return Lookup(
                request_id,
                rows[0],
                len(rows),
                tuple(windows[: windows.index(window) + 1]),
                tuple(all_folders),
                tuple(all_files),
                tuple(models),
            )
    return Lookup(
        request_id, None, 0, tuple(windows), tuple(all_folders), tuple(all_files), tuple(models)
    )


def _find_rows(
    log: _Log, kind: Kind, files: Sequence[str], request_id: str
) -> list[dict[str, Any]]:
    """Rows of ``files`` whose ``request_id`` is ``request_id``: the id column is scanned
    first (with row-group statistics skipping what cannot hold it), then only the files that
    hold it are read whole."""
    if not files:
        return []
    wanted = pc.field("request_id") == request_id
    scanner = log.dataset(kind, files).scanner(columns=["request_id"], filter=wanted)
    holding = []
    for batch in scanner.scan_batches():
        if batch.record_batch.num_rows and batch.fragment.path not in holding:
            holding.append(batch.fragment.path)
    if not holding:
        return []
    table = log.dataset(kind, holding).to_table(filter=wanted)
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def find_prediction(
    request_id: str,
    *,
    log_uri: str,
    model: str | None = None,
    since: timedelta = DEFAULT_SINCE,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """One request's prediction record, or None when it is not in the log where searched.

    A request id the server made (a UUIDv7) is found by reading the hour of its own time
    (+-5 minutes); a client-supplied ``x-request-id`` is found by searching the stated window
    ``[now - since, now]``. ``search_prediction`` also tells where it looked.

    >>> record = find_prediction("0190f3a4-5b6c-7d8e-9f01-23456789abcd",
    ...                          log_uri="gs://my-bucket/prediction-log")
    >>> record["model_version"], record["status"], record["latency_ms"]
    ('v3', 200, 2.7)
    >>> find_prediction("my-client-id-42", log_uri="./prediction-log", since=timedelta(days=30))
    """
    return search_prediction(request_id, log_uri=log_uri, model=model, since=since, now=now).record


@_read_errors
def outcomes_for(
    request_id: str,
    *,
    log_uri: str,
    model: str | None = None,
    since: timedelta = DEFAULT_SINCE,
    after: datetime | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The outcome records that name ``request_id`` (labels, conversions, values), oldest
    first.

    Outcomes come after the prediction, so they are looked for from ``after`` (the
    prediction's time; by default a UUIDv7's own time) to now, at most ``since`` after it:
    ``[after - 5 min, min(now, after + since)]``. Without either (a client's id and no
    prediction time), in ``[now - since, now]``. ``model``: that model's folders only.

    >>> [(o["outcome"], o["target"], o["correct"]) for o in outcomes_for(rid, log_uri=log)]
    [('label', '1', True)]
    """
    log = _Log(log_uri)
    window = outcomes_window(request_id, since=since, after=after, now=now)
    models = log.models("outcomes", model)
    files = log.files(log.hour_folders("outcomes", models, window.hours()))
    if not files:
        return []
    table = log.dataset("outcomes", files).to_table(
        filter=(pc.field("request_id") == request_id) & _within("outcomes", window)
    )
    rows: list[dict[str, Any]] = table.to_pylist()
    rows.sort(key=lambda row: (row["time"], row["report_id"]))
    return rows


def outcomes_window(
    request_id: str,
    *,
    since: timedelta = DEFAULT_SINCE,
    after: datetime | None = None,
    now: datetime | None = None,
) -> Window:
    """The window ``outcomes_for`` searches (see there)."""
    end = _utc(now)
    start = _utc(after) if after is not None else time_of(request_id)
    if start is None:
        return since_window(since, end)
    stop = min(end, start + since)
    return Window(
        start - ID_MARGIN, max(stop, start), f"after the prediction, at most {format_since(since)}"
    )


# -- lineage ------------------------------------------------------------------------------


def lineage(model: str, version: str, *, registry_uri: str) -> dict[str, Any]:
    """What made ``model`` ``version``, from its ``metadata.json`` in the registry.

    Keys: ``model_name``, ``version``, ``registry_uri``, ``found`` (False with ``problem``
    when the registry, model or version is missing or unreadable: reported, not raised),
    ``created_at`` (ISO-8601), ``task``, ``artifact_file``, ``artifact_sha256``,
    ``data_uri``, ``data_sha256``, ``training_rows``, ``git_sha``, ``image_digest``,
    ``metrics`` and ``primary_metric``.

    >>> lineage("breast-cancer", "v3", registry_uri="gs://my-bucket/registry")["data_sha256"]
    '9c1f...'
    """
    found: dict[str, Any] = {
        "model_name": model,
        "version": version,
        "registry_uri": registry_uri,
        "found": False,
        "problem": None,
        "created_at": None,
        "task": None,
        "artifact_file": None,
        "artifact_sha256": None,
        "data_uri": None,
        "data_sha256": None,
        "training_rows": None,
        "git_sha": None,
        "image_digest": None,
        "metrics": None,
        "primary_metric": None,
    }
    if not version:
        return {**found, "problem": "the record names no model version"}
    try:
        meta = Registry(registry_uri).get(model, version)
    except RegistryError as error:
        return {**found, "problem": str(error)}
    return {
        **found,
        "found": True,
        "created_at": meta.created_at.isoformat(),
        "task": meta.task,
        "artifact_file": meta.artifact.file,
        "artifact_sha256": meta.artifact.sha256,
        "data_uri": meta.training.data_uri,
        "data_sha256": meta.training.data_sha256,
        "training_rows": meta.training.rows,
        "git_sha": meta.provenance.git_sha,
        "image_digest": meta.provenance.image_digest,
        "metrics": dict(meta.metrics),
        "primary_metric": meta.primary_metric,
    }


# -- the whole trace ----------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """One request: its prediction record, its version's lineage, the outcomes reported."""

    request_id: str
    prediction: dict[str, Any]
    lineage: dict[str, Any] | None
    """None when no registry was given."""
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON- and YAML-ready: times as ISO-8601 text."""
        plain: dict[str, Any] = _plain(asdict(self))
        return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def trace(
    request_id: str,
    *,
    log_uri: str,
    registry_uri: str | None = None,
    model: str | None = None,
    since: timedelta = DEFAULT_SINCE,
    now: datetime | None = None,
) -> Trace | None:
    """The prediction of ``request_id``, its version's lineage (when ``registry_uri`` is
    given) and the outcomes reported for it; None when the prediction is not found (see
    ``find_prediction`` for where it looks, ``outcomes_for`` for the outcomes' window).

    >>> t = trace(rid, log_uri="./prediction-log", registry_uri="./registry")
    >>> t.as_dict()["lineage"]["artifact_sha256"]
    """
    found = search_prediction(request_id, log_uri=log_uri, model=model, since=since, now=now)
    if found.record is None:
        return None
    return trace_of(found, log_uri=log_uri, registry_uri=registry_uri, since=since, now=now)


def trace_of(
    found: Lookup,
    *,
    log_uri: str,
    registry_uri: str | None,
    since: timedelta = DEFAULT_SINCE,
    now: datetime | None = None,
) -> Trace:
    """The trace of a prediction ``search_prediction`` found."""
    record = found.record
    if record is None:
        raise ValueError(f"no prediction was found for {found.request_id!r}")
    outcomes = outcomes_for(
        found.request_id,
        log_uri=log_uri,
        model=record["model_name"],
        since=since,
        after=record["time"],
        now=now,
    )
    origin = (
        lineage(record["model_name"], record["model_version"] or "", registry_uri=registry_uri)
        if registry_uri is not None
        else None
    )
    return Trace(found.request_id, record, origin, outcomes)


# -- live accuracy ------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionAccuracy:
    """Label outcomes of one model version received in a window."""

    model_version: str
    """The version of the prediction the label's ``request_id`` names, when the log has that
    prediction; else the version the outcome record itself names; ``unknown`` if neither."""
    task: Literal["classification", "regression"] | None
    """``classification`` when the labels carry ``correct``, ``regression`` when they carry
    ``abs_error`` (None: neither, e.g. a target that could not be compared)."""
    count: int
    """Label outcomes."""
    joined: int
    """Of them, those whose ``request_id`` found a prediction record."""
    correct: int | None
    """Classifiers: labels equal to the prediction."""
    accuracy: float | None
    """Classifiers: ``correct`` over the labels that carry ``correct``."""
    mae: float | None
    """Regressors: mean ``abs_error``."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_UNKNOWN = "unknown"


@_read_errors
def live_accuracy(
    model: str,
    *,
    log_uri: str,
    since: timedelta = DEFAULT_SINCE,
    now: datetime | None = None,
) -> list[VersionAccuracy]:
    """Accuracy (classifiers) or mean absolute error (regressors) per model version, from the
    label outcomes received in ``[now - since, now]``, ordered by version.

    Each label counts for the version that made the prediction: the ``model_version`` of the
    prediction record its ``request_id`` names (found in the hours of a UUIDv7 id's own time
    +-5 minutes, which may be before the window, or else in the window); when the log has no
    such prediction (no id in the report, a prediction older than the window, one never
    logged), the version the outcome record itself names. ``joined`` counts the labels
    attributed by a prediction record.

    >>> for row in live_accuracy("breast-cancer", log_uri=log, since=timedelta(hours=6)):
    ...     print(row.model_version, row.count, row.joined, row.accuracy)
    v3 400 398 0.9425
    v4 41 41 0.9512
    """
    log = _Log(log_uri)
    window = since_window(since, now)
    models = log.models("outcomes", model)
    files = log.files(log.hour_folders("outcomes", models, window.hours()))
    if not files:
        return []
    labels = log.dataset("outcomes", files).to_table(
        columns=["request_id", "model_version", "correct", "abs_error"],
        filter=(pc.field("outcome") == "label") & _within("outcomes", window),
    )
    if labels.num_rows == 0:
        return []
    predicted = _versions_of(log, model, labels["request_id"], window)
    joined = labels.join(predicted, "request_id", join_type="left outer")
    version = pc.coalesce(joined["predicted_version"], joined["model_version"], pa.scalar(_UNKNOWN))
    table = pa.table(
        {
            "version": version,
            "joined": pc.cast(pc.is_valid(joined["predicted_version"]), pa.int64()),
            "has_correct": pc.cast(pc.is_valid(joined["correct"]), pa.int64()),
            "correct": pc.cast(joined["correct"], pa.int64()),
            "abs_error": joined["abs_error"],
        }
    )
    grouped = table.group_by("version").aggregate(
        [
            ([], "count_all"),
            ("joined", "sum"),
            ("has_correct", "sum"),
            ("correct", "sum"),
            ("abs_error", "mean"),
            ("abs_error", "count"),
        ]
    )
    rows = []
    for row in grouped.to_pylist():
        judged = int(row["has_correct_sum"] or 0)
        errors = int(row["abs_error_count"] or 0)
        correct = int(row["correct_sum"] or 0) if judged else None
        task: Literal["classification", "regression"] | None = None
        if judged or errors:
            task = "classification" if judged >= errors else "regression"
        rows.append(
            VersionAccuracy(
                model_version=row["version"],
                task=task,
                count=int(row["count_all"]),
                joined=int(row["joined_sum"] or 0),
                correct=correct,
                accuracy=(correct / judged) if correct is not None and judged else None,
                mae=float(row["abs_error_mean"]) if errors else None,
            )
        )
    rows.sort(key=lambda r: _version_key(r.model_version))
    return rows


def _version_key(version: str) -> tuple[int, str]:
    digits = version.removeprefix("v")
    return (int(digits), "") if version.startswith("v") and digits.isdigit() else (1 << 62, version)


def _versions_of(log: _Log, model: str, ids: pa.ChunkedArray, window: Window) -> pa.Table:
    """``request_id`` -> ``predicted_version`` for the ids the log has predictions of: a
    UUIDv7's hours +-5 minutes, every other id's in ``window``. One row per id (the
    earliest prediction, when a client's id was used twice)."""
    unique = [i for i in pc.unique(pc.drop_null(ids)).to_pylist() if i]
    hours: set[datetime] = set()
    in_window = False
    for request_id in unique:
        made = time_of(request_id)
        if made is None:
            in_window = True
        else:
            hours.update(Window(made - ID_MARGIN, made + ID_MARGIN, "").hours())
    if in_window:
        hours.update(window.hours())
    empty = pa.table(
        {"request_id": pa.array([], pa.string()), "predicted_version": pa.array([], pa.string())}
    )
    files = log.files(log.hour_folders("predictions", [model], sorted(hours)))
    if not files:
        return empty
    found = log.dataset("predictions", files).to_table(
        columns=["request_id", "model_version", "time"],
        filter=pc.field("request_id").isin(pa.array(unique, pa.string())),
    )
    if found.num_rows == 0:
        return empty
    found = found.sort_by([("request_id", "ascending"), ("time", "ascending")])
    first = found.group_by("request_id", use_threads=False).aggregate([("model_version", "first")])
    return pa.table(
        {
            "request_id": first["request_id"],
            "predicted_version": first["model_version_first"],
        }
    )
