"""`create_app(settings) -> FastAPI`: the server as a value, for `danlu serve`, tests and embedding.

Every failure leaves in the error body of the API it was asked through (Ollama's `{"error": "…"}` on its
routes, OpenAI's everywhere else) with a message that says what to change: bad JSON and wrong types (400,
naming the field), unknown routes (404), too large a body (413), and anything unexpected (500, logged; a
bug). Bodies over `max_body_bytes` are refused before they are read whole. Without an API key only loopback
Host names are served (security.py: DNS rebinding); CORS answers only the origins given with --cors-origin.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager, contextmanager
from typing import Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from danlu import __version__
from danlu.errors import DanluError
from danlu.server import ServerSettings
from danlu.server.errors import ApiError, describe_validation
from danlu.server.generation import ClientGone
from danlu.server.scheduler import ModelScheduler
from danlu.server.security import HostCheck, install_cors, protect_docs
from danlu.server.service import Service
from danlu.web import install as install_web

log = logging.getLogger(__name__)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """A FastAPI app serving `settings.models` (loaded at start) and any pulled or remote model on demand."""
    settings = settings or ServerSettings()
    scheduler = ModelScheduler(settings)
    for name in settings.models:
        scheduler.add_alias(name)  # an unknown --model fails here, before the server starts
    app = FastAPI(title="danlu", version=__version__, lifespan=_lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, description="丹炉 danlu：OpenAI 与 Ollama 兼容接口 / OpenAI- and "
                  "Ollama-compatible APIs for local Chinese LLMs")
    app.state.settings, app.state.scheduler, app.state.service = settings, scheduler, Service(scheduler)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    install_cors(app, settings)
    app.add_middleware(HostCheck, settings=settings)  # outermost: a rebound Host gets nothing, not even CORS
    _install_error_handlers(app)
    _install_routes(app)
    return app


def _install_routes(app: FastAPI) -> None:
    from danlu.server.ollama.routes import router as ollama_router
    from danlu.server.openai.routes import router as openai_router
    from danlu.server.status import router as status_router

    app.include_router(status_router)
    app.include_router(openai_router)
    app.include_router(ollama_router)
    protect_docs(app)  # /docs and /openapi.json, behind the API key when there is one
    install_web(app)  # the browser page at / and its /api routes (danlu/web)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    scheduler: ModelScheduler = app.state.scheduler
    scheduler.start()
    await scheduler.preload()
    try:
        yield
    finally:
        await scheduler.close()


# ---------------------------------------------------------------- errors


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(DanluError, _danlu_error)
    app.add_exception_handler(ClientGone, _client_gone)
    app.add_exception_handler(Exception, _unexpected)


def error_response(error: ApiError, request: Request | None = None) -> JSONResponse:
    """The error in the body of the API the request used."""
    body = error.ollama_body() if request is not None and is_ollama_path(request.url.path) else error.openai_body()
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def is_ollama_path(path: str) -> bool:
    from danlu.server.ollama.routes import OLLAMA_PATHS

    return path in OLLAMA_PATHS


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc, request)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    message, param = describe_validation(exc.errors())
    return error_response(ApiError(400, message, param=param, code="invalid_request"), request)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    messages = {404: f"没有这个接口 / no such endpoint: {request.method} {request.url.path}",
                405: f"{request.url.path} 不接受 {request.method} / {request.url.path} does not accept {request.method}"}
    message = messages.get(exc.status_code, str(exc.detail))
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return error_response(ApiError(exc.status_code, message, type=kind, headers=dict(exc.headers or {})), request)


async def _danlu_error(request: Request, exc: DanluError) -> JSONResponse:
    return error_response(ApiError(400, str(exc)), request)


async def _client_gone(request: Request, exc: ClientGone) -> Response:
    return Response(status_code=499)  # nobody is listening; nginx's code for "client closed request"


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(ApiError(500, f"服务器内部错误（这是 danlu 的缺陷，请报告）/ internal error (a danlu bug, please "
                                   f"report it): {type(exc).__name__}", type="server_error"), request)


# ---------------------------------------------------------------- body size


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"请求体超过 {limit >> 20} MiB / the request body is over {limit >> 20} MiB: send less")


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` by Content-Length, or while they stream in."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            response = error_response(ApiError(413, BodyTooLarge(self.max_bytes).detail), Request(scope))
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


# ---------------------------------------------------------------- embedding


@contextmanager
def background_server(settings: ServerSettings, log_level: str = "warning", app: FastAPI | None = None) -> Iterator[str]:
    """Serve `settings` (or an `app` made from them) with uvicorn in a thread of this process (tests,
    benchmarks); yields the base URL. Port 0 picks a free port on the loopback address in `settings.host`."""
    import socket
    import threading
    import time

    import uvicorn

    if settings.port == 0:
        with socket.socket() as sock:
            sock.bind((settings.host, 0))
            settings.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app or create_app(settings), host=settings.host, port=settings.port,
                                           log_level=log_level, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, name="danlu-uvicorn", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise DanluError("服务器没能启动 / the server did not start (see the log above)")
        time.sleep(0.02)
    try:
        yield f"http://{settings.host}:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
