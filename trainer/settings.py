"""Trainer settings: ``TRAINER_*`` environment variables or ``--kebab-case`` flags."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model_registry.metadata import ArtifactFormat
from serving_common.logging import LogFormat

Sample = Literal["breast-cancer", "diabetes"]
TaskChoice = Literal["auto", "classification", "regression"]
Estimator = Literal["auto", "logistic", "linear", "ridge", "random-forest", "gradient-boosting"]
DataFormat = Literal["auto", "csv", "parquet"]
Columns = Annotated[list[str], NoDecode]
"""Column names: a flag repeated or comma-separated, an environment variable comma-separated
(or a JSON array, for names with commas)."""


def column_names(value: Any) -> Any:
    """``"a, b"``, ``'["a", "b"]'`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (each name once,
    blanks left out). pydantic-settings hands a list setting's repeated flags over joined with
    commas."""
    if value is None:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = [text]
            if not isinstance(value, list):
                return value
            parts = [str(v).strip() for v in value]
        else:
            parts = [part.strip() for part in text.split(",")]
    elif isinstance(value, list | tuple):
        parts = [part.strip() for item in value for part in str(item).split(",")]
    else:
        return value
    return list(dict.fromkeys(part for part in parts if part))


class TrainerSettings(BaseSettings):
    """Train a scikit-learn model, evaluate it, gate it against production, and register it."""

    model_config = SettingsConfigDict(
        env_prefix="TRAINER_",
        use_attribute_docstrings=True,
        extra="ignore",
        validate_default=True,
    )

    registry_uri: str = "./registry"
    """Registry root: a path, gs://bucket/prefix or s3://bucket/prefix."""
    model_name: str | None = None
    """Registered model name (lowercase, digits, hyphens). Defaults to the sample's name."""
    data_uri: str | None = None
    """Training data: a CSV or Parquet file at a path, gs:// or s3:// URI."""
    sample: Sample | None = None
    """Train on a sample bundled with scikit-learn instead of --data-uri (no download)."""
    data_format: DataFormat = "auto"
    """File format of --data-uri; auto picks it from the file extension."""
    target: str | None = None
    """Target column in the data (required with --data-uri)."""
    task: TaskChoice = "auto"
    """classification or regression; auto decides from the target column."""
    estimator: Estimator = "auto"
    """auto (logistic for classification, ridge for regression), logistic, linear, ridge,
    random-forest or gradient-boosting (histogram-based)."""
    param: dict[str, str] = Field(default_factory=dict)
    """Estimator parameter override, repeatable: --param max_depth=6 (values parsed as JSON)."""
    drop: Columns = Field(default_factory=list)
    """Leave a column out of the features (an id, a free-text note), repeatable or
    comma-separated: --drop customer_id --drop signup_note. Not with --features."""
    features: Annotated[list[str] | None, NoDecode] = None
    """Only these columns are features, comma-separated or repeated: --features age,plan; every
    other column but the target is left out. Not with --drop."""
    test_size: float = Field(default=0.2, gt=0.0, lt=0.9)
    """Share of rows held out for evaluation."""
    seed: int = 42
    """Random seed for the split and the estimator."""
    min_rows: int = Field(default=50, ge=10)
    """Refuse data with fewer rows than this."""
    max_missing_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Largest share of missing values allowed in a feature column (they are imputed);
    0 refuses any missing value."""
    max_categories: int = Field(default=100, ge=2)
    """Most distinct values a text column may have to be one-hot encoded."""
    reference_bins: int = Field(default=10, ge=2, le=100)
    """Bins per numeric feature in the drift reference distribution."""
    primary_metric: str | None = None
    """Metric the champion gate compares: roc_auc (binary) or f1 (multiclass) for classifiers,
    rmse for regressors by default."""
    tolerance: float = Field(default=0.0, ge=0.0)
    """How much worse than production (in the primary metric's units) a model may be and still
    be registered."""
    force: bool = False
    """Register even when the champion gate rejects the model."""
    promote: bool = False
    """Point the production alias at the new version after registering it."""
    artifact_format: ArtifactFormat = "skops"
    """Model file format. joblib is pickle (runs code on load): needs --allow-pickle."""
    allow_pickle: bool = False
    """Allow the joblib format for saving and loading models."""
    pushgateway_url: str | None = None
    """Push trainer metrics to this Prometheus Pushgateway (e.g. http://pushgateway:9091)."""
    pushgateway_job: str = "model-trainer"
    """Job label of the pushed metrics."""
    git_sha: str | None = None
    """Commit the trainer image was built from (recorded as provenance); else read from git."""
    image_digest: str | None = None
    """Digest of the trainer image (recorded as provenance), e.g. set from the pod spec."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level."""
    log_format: LogFormat = "text"
    """text for terminals, json for log collectors (one JSON object per line)."""
    output: Literal["text", "json"] = "text"
    """Result on stdout: text, or one JSON document for scripts."""

    @field_validator("drop", "features", mode="before")
    @classmethod
    def _split_columns(cls, value: Any) -> Any:
        return column_names(value)

    @field_validator("features", mode="after")
    @classmethod
    def _no_empty_selection(cls, value: list[str] | None) -> list[str] | None:
        return value or None  # TRAINER_FEATURES="" selects nothing: every column is a feature

    @model_validator(mode="after")
    def _check_source(self) -> TrainerSettings:
        if (self.data_uri is None) == (self.sample is None):
            raise ValueError("give exactly one of --data-uri or --sample")
        if self.data_uri is not None and not self.target:
            raise ValueError("--target is required with --data-uri")
        if self.drop and self.features:
            raise ValueError(
                "give --features or --drop, not both (--features already leaves out every "
                "column it does not name)"
            )
        for flag, names in (("--drop", self.drop), ("--features", self.features or [])):
            if self.target and self.target in names:
                raise ValueError(
                    f"{flag} names the target {self.target!r}, which is never a feature"
                )
        if self.artifact_format == "joblib" and not self.allow_pickle:
            raise ValueError(
                "--artifact-format joblib needs --allow-pickle (pickle runs code on load)"
            )
        return self

    @property
    def resolved_model_name(self) -> str:
        """--model-name, or the sample's name."""
        name = self.model_name or self.sample
        if not name:
            raise ValueError("--model-name is required with --data-uri")
        return name
