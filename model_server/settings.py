"""Model server settings: ``MODEL_SERVER_*`` environment variables or ``--kebab-case`` flags.

Built once in ``__main__`` and passed down; the bottom layer, it knows nothing of the
modules that read it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving_common.experiment import NAME
from serving_common.logging import LogFormat


class ModelServerSettings(BaseSettings):
    """Serve one registered scikit-learn model version over KServe's V1 and V2 HTTP APIs."""

    model_config = SettingsConfigDict(
        env_prefix="MODEL_SERVER_",
        use_attribute_docstrings=True,
        extra="ignore",
        validate_default=True,
    )

    model_dir: str | None = None
    """Directory of one model version (metadata.json and the artifact), e.g. /mnt/models where
    KServe's storage initializer puts storageUri. A path, gs:// or s3:// URI."""
    registry_uri: str | None = None
    """Load from this registry instead of --model-dir (with --model-name and --model-version)."""
    model_name: str | None = None
    """Name served on /v1/models/NAME and /v2/models/NAME, and the registry model to load.
    Defaults to the name in the version's metadata."""
    model_version: str = "production"
    """Registry version to serve: v3, 3, latest or an alias such as production."""
    allow_pickle: bool = False
    """Allow loading joblib (pickle) model files, which run code on load."""
    host: str = "0.0.0.0"  # noqa: S104 (a server in a pod listens on all interfaces)
    """Address to listen on."""
    http_port: int = Field(default=8080, ge=0, le=65535)
    """HTTP port."""
    workers: int = Field(default=1, ge=1, le=64)
    """Worker processes. Metrics stay complete across workers (Prometheus multiprocess mode)."""
    engine: Literal["auto", "onnx", "sklearn"] = "auto"
    """What computes predictions. auto: ONNX Runtime when the version has a checked model.onnx
    that agrees with the pipeline on probe rows at load, else the pipeline (reason logged).
    onnx: ONNX Runtime or not ready. sklearn: always the pipeline."""
    engine_threads: int = Field(default=1, ge=1, le=64)
    """ONNX Runtime intra-op threads per worker (1: a worker uses one core, as --workers
    assumes)."""
    max_batch_rows: int = Field(default=1000, ge=1)
    """Largest batch (rows per request) accepted; larger ones are a 400."""
    grace_period_seconds: int = Field(default=30, ge=0)
    """On SIGTERM, how long in-flight requests may take to finish."""
    timeout_keep_alive: int = Field(default=65, ge=1)
    """Keep-alive timeout in seconds: an idle connection is closed after it. Keep it above the
    proxy's idle timeout (Knative's queue-proxy reuses connections)."""
    header_timeout: float = Field(default=10.0, gt=0, le=600)
    """Seconds a request's line and headers may take to arrive; then 408 and the connection
    closes. A real client sends its head in one packet; only a broken or hostile one is slower."""
    body_timeout: float = Field(default=15.0, gt=0, le=600)
    """Seconds a request body may stall (no bytes at all); then 408 and the connection closes."""
    max_connections: int = Field(default=4096, ge=1)
    """Open connections per worker; past it new connections are closed at once. Knative's
    queue-proxy holds a few per pod; the cap is for floods that bypass it."""
    max_concurrency: int = Field(default=32, ge=0)
    """Inference requests in progress per worker (queued in its event loop or running); past it a
    POST is answered 503 with Retry-After at once, before its body is read. A worker computes one
    request at a time, so this bounds the queueing delay an admitted request can see (32 x a
    1-row request's few milliseconds stays far inside the 500 ms p99 SLO). 0: no limit. The
    chart derives it from containerConcurrency when that is set."""
    retry_after_seconds: int = Field(default=1, ge=0, le=3600)
    """Retry-After on a shed request's 503."""
    load_wait_seconds: float = Field(default=10.0, ge=0)
    """How long startup waits for the first model load before it starts serving anyway (not
    ready, the load still going), so storage that is slow at start cannot keep the server
    from answering liveness probes."""
    load_retry_initial_seconds: float = Field(default=1.0, gt=0, le=300)
    """After a failed load (storage down, version missing), the first retry's delay; it doubles
    on each failure (with jitter) up to --load-retry-max-seconds. The server stays up and not
    ready meanwhile, and becomes ready when a load succeeds."""
    load_retry_max_seconds: float = Field(default=30.0, gt=0, le=3600)
    """Longest delay between load retries."""
    revision: str | None = None
    """Knative revision serving this process; defaults to K_REVISION, which Knative sets."""
    enable_grpc: bool = False
    """Also serve the Open Inference Protocol over gRPC (same model, checks and metrics)."""
    grpc_port: int = Field(default=8081, ge=0, le=65535)
    """gRPC port (with --enable-grpc), on --host."""
    grpc_max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest gRPC message received or sent, in bytes."""
    enable_model_repository: bool = False
    """Turn on the V2 model repository extension (index, load, unload). Off: anyone who can
    reach the server could otherwise unload the model and leave the pod unready for good.
    Only with --workers 1 (each worker holds its own copy of the model)."""
    max_request_bytes: int | None = Field(default=None, ge=1024)
    """Largest request body in bytes, also after gzip/deflate decompression; larger is a 413,
    refused from Content-Length before the body is read, or cut off as a chunked body passes
    it. Default: room for the largest batch the model takes as JSON (--max-batch-rows x
    features x 128 bytes, plus 64 KiB; at least 1 MiB)."""
    drift: bool = True
    """Compute feature and prediction drift (PSI against the training reference) off the
    request path, exported as model_server_feature_drift_score."""
    drift_window_rows: int = Field(default=1000, ge=10)
    """Most recent rows the drift window keeps (per worker)."""
    drift_window_seconds: float = Field(default=3600.0, gt=0)
    """Rows older than this leave the drift window."""
    drift_min_rows: int = Field(default=200, ge=1)
    """No drift score is published until the window holds this many rows."""
    drift_interval_seconds: float = Field(default=15.0, gt=0)
    """How often drift is recomputed."""
    prediction_log_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of inference requests that write a JSON provenance line to stdout (request id,
    model, version, revision, data sha, git sha, image digest, status, latency). 0 turns it off."""
    prediction_log_payloads: bool = False
    """Also record inputs and outputs: in the prediction log's records and in provenance
    lines. They may hold personal data: opt in."""
    prediction_log: bool = True
    """Record every inference request and every accepted outcome in the prediction log:
    Parquet files under --prediction-log-uri, written off the request path (model-trace reads
    them). Off: no records (the provenance lines on stdout are separate)."""
    prediction_log_uri: str | None = None
    """Where the prediction log goes: a path, gs:// or s3:// URI. Default: the folder
    prediction-log beside --registry-uri (gs://b/registry -> gs://b/prediction-log); with
    --model-dir and no URI the log is off (said at start)."""
    prediction_log_flush_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    """Records that make a worker write its buffered records at once (one Parquet file per
    hour they fall in); with payloads a record counts once per row, as for the buffer."""
    prediction_log_flush_seconds: float = Field(default=10.0, gt=0, le=3600)
    """Longest a record waits in memory before it is written. A hard kill (SIGKILL) loses at
    most this much of a worker's records; a graceful stop (SIGTERM) writes them all first."""
    prediction_log_max_buffered: int = Field(default=50_000, ge=1)
    """Records a worker holds in memory at most (waiting, or held while the sink fails; with
    payloads a record counts once per row). Past it new records are dropped and counted in
    model_server_prediction_log_dropped_total: a slow or dead sink never blocks a request."""
    fault_error_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    """Fault injection, for rehearsals only: share of inference requests answered with a 500."""
    fault_latency_ms: float = Field(default=0.0, ge=0.0, le=60_000.0)
    """Fault injection, for rehearsals only: latency added to every inference request."""
    experiment: str | None = Field(default=None, pattern=f"^{NAME.pattern}$")
    """A/B experiment name (lowercase letters, digits, hyphens). Turns experiment mode on:
    the version of --model-dir/--model-version is the control, --experiment-treatment the
    treatment, and each user stays in one of them for the whole experiment (SHA-1 of the
    user key salted with this name; a new name reshuffles users)."""
    experiment_treatment: str | None = None
    """The treatment version: a registry version (v4) with --registry-uri, or a version's
    directory (a path, gs:// or s3:// URI) with --model-dir. Verified as the control is."""
    experiment_percent: float = Field(default=50.0, ge=0, le=100)
    """Share of users (not requests) assigned to the treatment, in percent (0.01 steps)."""
    experiment_user_header: str = Field(default="x-user-id", pattern=r"^[A-Za-z0-9-]+$")
    """Request header that carries the user key."""
    experiment_user_parameter: str = Field(default="user_id", min_length=1)
    """Request parameter that carries the user key when the header is absent: V2
    "parameters": {"user_id": ...}, or the same top-level "parameters" object in V1."""
    experiment_require_user: bool = False
    """Refuse (400) inference requests without a user key. Off: they are answered by the
    control, counted in model_server_experiment_unassigned_total, and kept out of the
    analysis."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level."""
    log_format: LogFormat = "text"
    """text for terminals, json for log collectors (one JSON object per line)."""
    access_log: bool = False
    """Log one line per inference request (model, version, request id, status, latency)."""

    @model_validator(mode="after")
    def _check_source(self) -> ModelServerSettings:
        if (self.model_dir is None) == (self.registry_uri is None):
            raise ValueError("give exactly one of --model-dir or --registry-uri")
        if self.registry_uri is not None and not self.model_name:
            raise ValueError("--model-name is required with --registry-uri")
        if self.enable_model_repository and self.workers > 1:
            raise ValueError(
                "--enable-model-repository needs --workers 1: a load or unload reaches only "
                "the worker that receives it"
            )
        if self.experiment is not None and not self.experiment_treatment:
            raise ValueError("--experiment needs --experiment-treatment (the treatment version)")
        if self.experiment_treatment is not None and self.experiment is None:
            raise ValueError("--experiment-treatment needs --experiment (the experiment's name)")
        treatment = self.experiment_treatment
        if treatment is not None and self.registry_uri is not None and "/" in treatment:
            raise ValueError(
                "--experiment-treatment must be a registry version (e.g. v4) with --registry-uri"
            )
        if self.experiment is not None and self.enable_model_repository:
            raise ValueError(
                "--experiment and --enable-model-repository do not mix: loading or unloading "
                "one version would end the experiment on one worker only"
            )
        if self.prediction_log_max_buffered < self.prediction_log_flush_rows:
            raise ValueError(
                "--prediction-log-max-buffered must be at least --prediction-log-flush-rows"
            )
        if self.enable_grpc and self.grpc_port == self.http_port:
            raise ValueError("--grpc-port must differ from --http-port")
        return self
