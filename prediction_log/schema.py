"""The prediction log's layout and record schema (version 1), shared by writer and readers.

Layout under a log URI (a path, ``gs://`` or ``s3://``), Hive-style so that pyarrow, DuckDB and
BigQuery read the partition keys from the path::

    {log_uri}/predictions/model={model}/date={YYYY-MM-DD}/hour={HH}/{file}.parquet
    {log_uri}/outcomes/model={model}/date={YYYY-MM-DD}/hour={HH}/{file}.parquet

``date`` and ``hour`` are UTC and are those of the record's ``time``: when the request arrived
(predictions) or when the report was received (outcomes). A file is written whole, once, and
never changed (its name is unique: time, process id and a random part); readers skip anything
that does not end in ``.parquet``.

Every record carries ``schema_version``. A new column is a new version and old files keep
theirs: readers ask for the columns they need and treat a missing one as null. A column is
never renamed or given another meaning within the same name.

Lineage (artifact sha256, training data, git sha, image digest, metrics) is not copied into
records: it is the registry's metadata of ``model_version``, joined when read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import pyarrow as pa

SCHEMA_VERSION: Final = 1

Kind = Literal["predictions", "outcomes"]
KINDS: Final[tuple[Kind, Kind]] = ("predictions", "outcomes")

PARTITIONING: Final = pa.schema(
    [("model", pa.string()), ("date", pa.string()), ("hour", pa.int32())]
)
"""The partition keys in the path, as readers type them."""

TIME = pa.timestamp("us", tz="UTC")

PREDICTIONS: Final = pa.schema(
    [
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("time", TIME, nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("revision", pa.string()),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("status", pa.int16(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("rows", pa.int32()),
        pa.field("experiment", pa.string()),
        pa.field("variant", pa.string()),
        pa.field("user_hash", pa.string()),
        pa.field("inputs_sha256", pa.string()),
        pa.field("inputs", pa.string()),
        pa.field("outputs", pa.string()),
    ],
    metadata={"schema": "prediction_log.predictions", "schema_version": str(SCHEMA_VERSION)},
)
"""One record per inference request, answered or refused.

- ``request_id``: the response's ``x-request-id``: the client's own, or a UUIDv7 the server made.
- ``time``: when the request arrived (UTC, microseconds); ``latency_ms`` until it was answered.
- ``model_version``: the version that answered (in an experiment, the side's); ``revision`` the
  Knative revision (``K_REVISION``), null outside Knative.
- ``protocol``: ``v1``, ``v2`` (REST) or ``grpc`` (V2 over gRPC). ``status``: the HTTP
  status, or for gRPC the HTTP status its code stands for (200, 400, 404, 500, 503).
- ``rows``: rows in the request, null when it could not be decoded.
- ``experiment``, ``variant`` (control/treatment) and ``user_hash`` in experiment mode:
  ``user_hash`` is ``serving_common.experiment.hashed_user`` of the user key, null when the
  request was not assigned by a user key (no key, or a path that named the version). Raw user
  keys are never written.
- ``inputs_sha256``: SHA-256 of the decoded rows (see ``model_server.schema.inputs_digest``),
  null when the request could not be decoded.
- ``inputs`` and ``outputs``: JSON text, only when payloads are opted in
  (``--prediction-log-payloads``); else null. ``inputs`` is a list of rows (lists in feature
  order, or objects for models with categorical features); ``outputs`` is the response body.
"""

OUTCOMES: Final = pa.schema(
    [
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("time", TIME, nullable=False),
        pa.field("report_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string()),
        pa.field("experiment", pa.string()),
        pa.field("variant", pa.string()),
        pa.field("user_hash", pa.string()),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("prediction", pa.string()),
        pa.field("target", pa.string()),
        pa.field("correct", pa.bool_()),
        pa.field("abs_error", pa.float64()),
        pa.field("converted", pa.bool_()),
        pa.field("value", pa.float64()),
    ],
    metadata={"schema": "prediction_log.outcomes", "schema_version": str(SCHEMA_VERSION)},
)
"""One record per outcome the feedback endpoint accepted (one per row of a report).

- ``report_id``: the feedback request's own ``x-request-id`` (rows of one report share it).
- ``request_id``: the prediction's request id, when the report named it: join on it.
- ``model_version``: the version the outcome was counted for; ``experiment``, ``variant`` and
  ``user_hash`` for an experiment's outcomes (``user_hash`` when the report gave a user key).
- ``outcome``: ``label`` (a true label, or a true value for a regressor), ``conversion`` or
  ``value``.
- ``label``: ``prediction`` and ``target`` as JSON text, with ``correct`` (classifiers) or
  ``abs_error`` (regressors). ``conversion``: ``converted``. ``value``: ``value``.
"""

SCHEMAS: Final[dict[Kind, pa.Schema]] = {"predictions": PREDICTIONS, "outcomes": OUTCOMES}


def partition(kind: Kind, model: str, when: datetime) -> str:
    """The folder (relative to the log URI) of a ``kind`` record of ``model`` at ``when`` (UTC)."""
    return f"{kind}/model={model}/date={when:%Y-%m-%d}/hour={when:%H}"


def default_log_uri(registry_uri: str) -> str | None:
    """Where the log goes by default: the folder ``prediction-log`` beside the registry
    (``gs://bucket/registry`` -> ``gs://bucket/prediction-log``, ``./registry`` ->
    ``./prediction-log``). None when the registry is a bucket's root: there is no "beside", and
    the log must not be mixed into the registry's models."""
    uri = registry_uri.rstrip("/")
    scheme, sep, rest = uri.rpartition("://")
    path = rest if sep else uri
    parent, slash, _ = path.rpartition("/")
    if sep and not slash:  # gs://bucket: the registry is the bucket
        return None
    if not slash:  # a relative folder such as "registry"
        return "prediction-log" if not sep else None
    if not parent and not sep:  # "/registry": beside it is "/prediction-log"
        return "/prediction-log"
    return f"{scheme}{sep}{parent}/prediction-log"
