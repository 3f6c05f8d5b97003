"""The schema of ``metadata.json``: the contract between trainer, registry, server and rollout.

Unknown fields are kept (``extra="allow"``) so that newer writers do not break older readers.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ArtifactFormat = Literal["skops", "joblib"]
Task = Literal["classification", "regression"]
Label = bool | int | float | str

MODEL_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")
ARTIFACT_FILES: dict[str, str] = {"skops": "model.skops", "joblib": "model.joblib"}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ArtifactInfo(_Open):
    """The serialized model next to ``metadata.json``."""

    file: str
    format: ArtifactFormat
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class OnnxInfo(_Open):
    """The same pipeline compiled for ONNX Runtime (``model.onnx``), or why there is none.

    With a file: its sha256 and size, the opsets, the converter and runtime versions, and the
    check against the pipeline at training time. Without (``file`` is None): ``reason``.
    """

    file: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    size_bytes: int | None = Field(default=None, ge=0)
    reason: str | None = None


class FeatureSpec(_Open):
    """One input column, in the order the model expects."""

    name: str
    dtype: str
    """pandas dtype the training data had: float64, int64, bool or object (categorical)."""
    kind: Literal["numeric", "categorical"]
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    nullable: bool = False
    """True when training data had missing values (the pipeline imputes them)."""


class TargetSpec(_Open):
    """The column the model predicts."""

    name: str
    dtype: str
    classes: list[Label] | None = None
    """Class labels in the order of ``predict_proba`` columns (classifiers only)."""


class TrainingInfo(_Open):
    """How the version was fitted."""

    rows: int
    data_uri: str
    data_sha256: str
    params: dict[str, Any]
    duration_seconds: float
    estimator: str | None = None
    test_rows: int | None = None
    test_size: float | None = None
    seed: int | None = None


class Provenance(_Open):
    """What made the version: code, image and library versions."""

    git_sha: str | None
    image_digest: str | None
    python: str
    sklearn: str
    package_version: str


class BinnedDistribution(_Open):
    """A reference distribution: numeric values cut at ``edges`` or categories, with fractions.

    Numeric: bin ``i`` holds values in ``(edges[i-1], edges[i]]``; the first and last bins are
    open-ended, so values outside the training range are counted, not dropped. Categorical: one
    fraction per category plus a last one for anything else.
    """

    kind: Literal["numeric", "categorical"]
    edges: list[float] | None = None
    categories: list[Label] | None = None
    fractions: list[float]


class Reference(_Open):
    """Per-feature binned distribution of the training data, used to measure drift."""

    rows: int
    bins: int
    features: dict[str, BinnedDistribution]
    prediction: BinnedDistribution | None = None
    """Distribution of the training target: class shares, or binned values for regressors."""


class ModelMetadata(_Open):
    """Everything known about one registered version."""

    schema_version: int = 1
    model_name: str = Field(pattern=MODEL_NAME_RE.pattern)
    version: str = Field(pattern=VERSION_RE.pattern)
    created_at: datetime
    artifact: ArtifactInfo
    task: Task
    features: list[FeatureSpec] = Field(min_length=1)
    target: TargetSpec
    metrics: dict[str, float]
    primary_metric: str | None = None
    training: TrainingInfo
    provenance: Provenance
    reference: Reference
    onnx: OnnxInfo | None = None
    """Absent in versions registered before ONNX export existed."""

    @property
    def number(self) -> int:
        """The version as an integer (``v3`` is 3)."""
        return version_number(self.version)

    @property
    def feature_names(self) -> list[str]:
        """Feature names in model order."""
        return [feature.name for feature in self.features]


def version_number(version: str) -> int:
    """``"v3"`` -> 3; raises ``ValueError`` for anything that is not a version."""
    match = VERSION_RE.match(version)
    if not match:
        raise ValueError(f"not a version: {version!r} (expected v1, v2, ...)")
    return int(match.group(1))
