"""The model repository extension (off unless ``--enable-model-repository``): index, load and
unload of the one version this server serves, the same over REST and gRPC.

Part of the service core: it knows the served version (``model_server.loading``) and answers
with ``Refused`` (404 while the extension is off or for another model, 503 when a load fails),
and nothing of transports.
"""

from __future__ import annotations

from typing import Literal

from model_server.errors import Refused
from model_server.loading import ModelVersion


def index(model: ModelVersion) -> list[dict[str, str]]:
    """The repository index: the served version and its state."""
    entry = {"name": model.name, "version": model.version}
    if model.ready:
        return [{**entry, "state": "READY", "reason": ""}]
    return [{**entry, "state": "UNAVAILABLE", "reason": model.load_error or ""}]


def check_enabled(model: ModelVersion) -> None:
    """404 unless the model repository extension is on."""
    if not model.settings.enable_model_repository:
        raise Refused(
            404,
            "the model repository extension is off on this server (it serves one version "
            "per revision; --enable-model-repository turns index/load/unload on)",
        )


def act(model: ModelVersion, model_name: str, action: Literal["load", "unload"]) -> str:
    """Load or unload the served model; raises Refused when the extension is off."""
    check_enabled(model)
    if model_name != model.name:
        raise Refused(404, f"model {model_name!r} is not in this server's repository")
    if action == "unload":
        model.unload()
        return f"model {model_name!r} unloaded"
    if not model.load():
        raise Refused(503, f"model {model_name!r} failed to load: {model.load_error}")
    return f"model {model_name!r} loaded"
