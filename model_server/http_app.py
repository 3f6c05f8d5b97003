"""The ASGI application: this project's HTTP routes in front of KServe's FastAPI app, the
middlewares every response goes through, and the fast path for inference POSTs.

``install`` puts the routes of ``http_routes`` first on KServe's app (KServe's own V1/V2 routes
behind them are shadowed), maps FastAPI's 404/405 to this project's error shape, and adds the
body limit, request ids and gzip. ``application`` (``APP_IMPORT_STRING``, what uvicorn serves in
every process) answers inference POSTs through ``InferenceRoutes`` before FastAPI's machinery.
Part of the HTTP transport: it knows nothing of gRPC, and nothing of processes or workers
(``model_server.server`` installs it in each).
"""

from __future__ import annotations

import asyncio
import gzip
import re
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware

from model_server import http_guard
from model_server.http_body import bounded_body
from model_server.http_routes import HttpRoutes, json_response
from model_server.service import ModelService
from prediction_log.ids import request_id_from

COMPRESS_MIN_BYTES = 64 * 1024
"""Responses at least this large are gzip-compressed for clients that accept it."""


class BodyLimitMiddleware:
    """Request bodies no larger than the routes' ``body_limit``, whatever the client sends.

    A Content-Length over the limit is a 413 before any of the body is read; a body that
    streams (chunked, or lying about its length) is counted as it arrives and cut at the limit
    with a 413. Either way the connection is closed (``connection: close``), so the rest of the
    body is never read, and memory holds at most the limit per request.
    """

    def __init__(self, app: Any, routes: HttpRoutes) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        routes = self.routes
        body = await bounded_body(scope, receive, routes.body_limit())
        if body is None:
            return
        if isinstance(body, str):
            request_id = scope.get("state", {}).get("request_id")
            headers, content = routes.too_large_answer(scope.get("path", ""), body, request_id)
            await Response(content, status_code=413, headers=headers)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class InferenceRoutes:
    """The inference POSTs (V1 ``:predict``, V2 ``infer``, versioned or not), answered in front
    of FastAPI (its telemetry check, the middleware stack with KServe's timing middleware that
    routes every request a second time, the router, dependency solving) by the same
    ``HttpRoutes.infer_http`` as their FastAPI routes, with the same guarantees: a request id
    (``x-request-id``), the body limit (413, connection closed), gzip for large answers the
    client accepts. Everything else goes on to the application. Measured on a 1-row request,
    that framework work cost more than validating and predicting.
    """

    PATH = re.compile(r"/v1/models/([^/]+):predict|/v2/models/([^/]+)/(?:versions/([^/]+)/)?infer")

    def __init__(self, app: Any, routes: HttpRoutes) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        match = (
            self.PATH.fullmatch(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        routes = self.routes
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = request_id_from(headers.get("x-request-id"))
        body = await bounded_body(scope, receive, routes.body_limit())
        if body is None:
            return
        if isinstance(body, str):
            status = 413
            response_headers, content = routes.too_large_answer(scope["path"], body, request_id)
        else:
            v1_name, v2_name, version = match.groups()
            status, response_headers, content = await routes.infer_http(
                model_name=v1_name or v2_name,
                version=version,
                protocol="v1" if v1_name else "v2",
                headers=headers,
                body=body,
                request_id=request_id,
                log_line=f"POST {scope['path']}",
            )
            if len(content) >= COMPRESS_MIN_BYTES and "gzip" in headers.get("accept-encoding", ""):
                content = await asyncio.to_thread(gzip.compress, content, 6)
                response_headers["content-encoding"] = "gzip"
                response_headers["vary"] = "Accept-Encoding"
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers.items()]
        raw.append((b"content-length", b"%d" % len(content)))
        raw.append((b"x-request-id", request_id.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content})


class RequestIdMiddleware:
    """Every HTTP response carries ``x-request-id``: the client's, or a new one.

    The id is also put in the request's state (``request.state.request_id``) for the routes'
    logs and provenance lines, so it is read or made in this one place for every route.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = request_id_from(given.decode("latin-1") if given else None)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def install(app: FastAPI, service: ModelService) -> HttpRoutes:
    """Put this project's routes for ``service`` in front of whatever ``app`` already has or
    gets later.

    Every V1 and V2 path is ours, so every answer has our error shape and version header:
    KServe's own routes behind them (explain, model repository) are shadowed, and FastAPI's
    404/405 come out as ``{"error": ...}`` too.
    """
    routes = HttpRoutes(service)
    router = APIRouter()
    table: list[tuple[str, Any, str]] = [
        ("/metrics", routes.metrics_endpoint, "GET"),
        ("/v2", routes.server_metadata, "GET"),
        ("/v2/health/live", routes.server_live, "GET"),
        ("/v2/health/ready", routes.server_ready, "GET"),
        ("/v1/models/{model_name}:predict", routes.v1_predict, "POST"),
        ("/v1/models/{model_name}:explain", routes.v1_explain, "POST"),
        ("/v1/models/{model_name}", routes.v1_model_ready, "GET"),
        ("/v1/models/{model_name}/feedback", routes.feedback, "POST"),
        ("/v2/models/{model_name}/feedback", routes.feedback, "POST"),
        ("/v2/models/{model_name}/infer", routes.v2_infer, "POST"),
        ("/v2/models/{model_name}/ready", routes.v2_model_ready, "GET"),
        ("/v2/models/{model_name}", routes.v2_model_metadata, "GET"),
        ("/v2/models/{model_name}/versions/{version}/infer", routes.v2_version_infer, "POST"),
        ("/v2/models/{model_name}/versions/{version}/ready", routes.v2_version_ready, "GET"),
        ("/v2/models/{model_name}/versions/{version}", routes.v2_version_metadata, "GET"),
        ("/v2/repository/index", routes.repository_index_endpoint, "POST"),
        ("/v2/repository/models/{model_name}/load", routes.repository_load, "POST"),
        ("/v2/repository/models/{model_name}/unload", routes.repository_unload, "POST"),
    ]
    for path, endpoint, method in table:
        router.add_api_route(path, endpoint, methods=[method])
    app.router.routes[0:0] = router.routes

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        message = {
            404: f"no such endpoint: {request.method} {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(error.status_code, str(error.detail))
        headers = {**routes.version_headers(), **(error.headers or {})}
        return json_response(error.status_code, {"error": message}, headers)

    app.add_exception_handler(HTTPException, http_error)
    app.router.on_startup.append(service.start_background)
    app.add_middleware(BodyLimitMiddleware, routes=routes)  # inside: its 413s get ids
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(GZipMiddleware, minimum_size=COMPRESS_MIN_BYTES, compresslevel=6)
    global _inference_routes  # noqa: PLW0603 (one app per process)
    _inference_routes = InferenceRoutes(app, routes)
    http_guard.set_shed_answer(routes.shed_answer)
    http_guard.set_body_limit(routes.body_limit)
    return routes


_inference_routes: InferenceRoutes | None = None
APP_IMPORT_STRING = "model_server.http_app:application"
"""What uvicorn serves, in the main process and in every worker."""


async def application(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI application: inference POSTs answered by ``InferenceRoutes`` before anything
    else (FastAPI's per-request telemetry check, its middleware and router), the rest by
    KServe's FastAPI app with this project's routes in front (``install``)."""
    routes = _inference_routes
    if routes is None:  # not installed (a failed start): KServe's app as it is
        import kserve.model_server

        await kserve.model_server.app(scope, receive, send)
        return
    await routes(scope, receive, send)
