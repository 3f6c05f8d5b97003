"""How a failed request is answered: the refusals this server makes, and the one mapping from
any exception to an HTTP-equivalent status and a JSON error body.

A client's mistake is ``kserve.errors.InvalidInput`` (400, raised by the codec and the service
core); ``Refused`` carries its own status (404 unknown model or version, 405, 413, 415, 501,
503 not ready); anything else is a bug: a 500 whose body names only the request id, with the
traceback in the log. HTTP sends the status as is, gRPC maps it to its status codes. This
module knows nothing of HTTP frameworks, gRPC, models or settings.
"""

from __future__ import annotations

import logging

from kserve.errors import InvalidInput

errors_log = logging.getLogger("model_server")


class Refused(Exception):
    """A request answered with ``status`` and ``message`` (404, 405, 413, 415, 501, 503)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class InjectedFault(Exception):
    """A failure the operator asked for (``--fault-error-ratio``): a 500."""


class BadOutput(Exception):
    """The model computed NaN or infinity from inputs the codec accepted: a 500 (a defect of
    the model, not of the request), logged with the request id, never a label."""


def failure(error: Exception, request_id: str) -> tuple[int, dict[str, str]]:
    """The HTTP status and error body for a request that failed with ``error``."""
    if isinstance(error, InvalidInput):
        return 400, {"error": str(error)}
    if isinstance(error, BadOutput):
        errors_log.error("%s (request id %s)", error, request_id, extra={"request_id": request_id})
        return 500, {
            "error": "the model computed an output that is not a finite number for this input, "
            f"and it is not answered; the server log has the details (request id {request_id})"
        }
    if isinstance(error, Refused):
        return error.status, {"error": str(error)}
    if isinstance(error, InjectedFault):
        return 500, {"error": "injected fault (the server runs with fault injection on)"}
    errors_log.exception(
        "inference failed (request id %s)", request_id, extra={"request_id": request_id}
    )
    return 500, {
        "error": f"internal error; the server log has the details (request id {request_id})"
    }
