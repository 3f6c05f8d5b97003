"""Model files: skops by default (no arbitrary code runs on load), joblib only when opted in.

This is all the registry knows of scikit-learn: turning a fitted object into bytes and back.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

from model_registry.errors import UntrustedArtifact
from model_registry.metadata import ArtifactFormat

TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        # skops asks about these although they are plain data; the trainer's estimators use them.
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)
"""Types beyond skops' defaults that a model file may contain and still be loaded."""


def dump_model(model: Any, fmt: ArtifactFormat = "skops") -> bytes:
    """Serialize a fitted model. ``joblib`` is pickle: only for estimators skops cannot save."""
    if fmt == "skops":
        import skops.io as sio  # imported on use: it pulls in scikit-learn

        return bytes(sio.dumps(model))
    import joblib

    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def untrusted_types(data: bytes) -> list[str]:
    """Types in a skops file that skops would not load without being told to trust them."""
    import skops.io as sio

    try:
        return sorted(sio.get_untrusted_types(data=data))
    except Exception as error:  # a corrupt zip or schema surfaces as many exception types
        raise UntrustedArtifact(f"not a readable skops file: {error}") from error


def load_model(
    data: bytes,
    fmt: ArtifactFormat,
    *,
    allow_pickle: bool = False,
    extra_trusted: Iterable[str] = (),
) -> Any:
    """Deserialize a model file, refusing types outside the trusted set.

    Raises ``UntrustedArtifact`` for a joblib file without ``allow_pickle`` (loading pickle runs
    arbitrary code), or for a skops file holding any type not in ``TRUSTED_TYPES`` or
    ``extra_trusted``.
    """
    if fmt == "joblib":
        if not allow_pickle:
            raise UntrustedArtifact(
                "refusing to load a joblib (pickle) model file: loading pickle runs arbitrary "
                "code; re-register the model as skops, or opt in explicitly to allow pickle"
            )
        import joblib

        return joblib.load(io.BytesIO(data))
    if fmt != "skops":
        raise UntrustedArtifact(f"unknown model file format {fmt!r}")
    found = untrusted_types(data)
    refused = sorted(set(found) - TRUSTED_TYPES - set(extra_trusted))
    if refused:
        raise UntrustedArtifact(
            "refusing to load model file: it contains untrusted types " + ", ".join(refused)
        )
    import skops.io as sio

    try:
        return sio.loads(data, trusted=found)
    except Exception as error:
        raise UntrustedArtifact(f"cannot load skops model file: {error}") from error
