"""Who may call the server: the API key, the bind-address rule, the Host check, CORS.

A server on a loopback address is reachable only from this machine. Anything else (0.0.0.0, a LAN
address) exposes the models to the network, so it needs an API key unless the operator says
`--insecure` on purpose. The key is compared in constant time, and guards /v1, /api, /docs and
/openapi.json.

Loopback is not enough by itself: a web page the user visits can point its own name at 127.0.0.1
(DNS rebinding) and read every saved chat. So without a key only requests whose `Host` names this
machine are served — `localhost`, a loopback address, the bound address (and, for a wildcard bind, an
address literal or this machine's own name) — and anything else gets 421, as Ollama does. Browser apps
on other origins (LobeChat, NextChat) are allowed only by name (`--cors-origin`); `*` needs an API key.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket

from fastapi import Request

from danlu.errors import DanluError
from danlu.server.errors import ApiError

PROTECTED_PREFIXES = ("/v1", "/api", "/docs", "/openapi.json")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`; a name that is not an address counts as exposed."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse a non-loopback bind without an API key unless `--insecure`."""
    if is_loopback(host) or api_key or insecure:
        return
    raise DanluError(
        f"拒绝在 {host} 上无密钥开放服务：加 --api-key KEY（或确需如此时加 --insecure）/ refusing to serve on {host} "
        "without an API key: anyone on the network could use it. Pass --api-key KEY (or --insecure if you mean it)"
    )


def needs_key(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PROTECTED_PREFIXES)


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: `Authorization: Bearer KEY` when the server has a key."""
    expected = request.app.state.settings.api_key
    if not expected or not needs_key(request.url.path):
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise ApiError(401, "缺少或错误的 API 密钥：请求头需要 Authorization: Bearer KEY / missing or wrong API key: "
                       "send the header `Authorization: Bearer KEY`", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})


# ---------------------------------------------------------------- Host check (DNS rebinding)


def host_name(header: str) -> str:
    """The host part of a Host header: `[::1]:8000` → `::1`, `Example.COM.:80` → `example.com`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return name.rstrip(".")


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def allowed_host(name: str, bound: str) -> bool:
    """Whether a keyless server may answer a request for `Host: name` while bound to `bound`."""
    if is_loopback(name) or name.endswith(".localhost") or name == host_name(bound):
        return True
    if bound.strip("[]") in WILDCARD_BINDS:  # an --insecure LAN bind: addresses and this machine's own names
        own = socket.gethostname().lower()
        return is_address(name) or name in (own, f"{own}.local")
    return False


class HostCheck:
    """ASGI middleware: without an API key, 421 for a Host that does not name this machine."""

    def __init__(self, app, settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.settings.api_key:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        name = host_name(headers.get(b"host", b"").decode("latin-1"))
        if not name or allowed_host(name, self.settings.host):
            return await self.app(scope, receive, send)
        from danlu.server.app import error_response

        error = ApiError(421, f"不接受 Host: {name}：没有 API 密钥时只服务本机地址（防 DNS 重绑定）/ refusing Host {name!r}: "
                         "without an API key this server answers only requests for localhost or its own address "
                         "(DNS rebinding protection); use http://127.0.0.1, or start it with --api-key",
                         type="permission_error", code="misdirected_request")
        await error_response(error, Request(scope))(scope, receive, send)


# ---------------------------------------------------------------- CORS and the API docs


def check_cors(origins: list[str], api_key: str | None) -> None:
    if "*" in origins and not api_key:
        raise DanluError("--cors-origin '*' 需要同时设置 --api-key：否则任何网页都能调用本机模型 / --cors-origin '*' needs "
                         "--api-key: otherwise any web page could use your models; name the origins instead")


def install_cors(app, settings) -> None:
    """CORS headers and preflight answers for the named origins only (none by default)."""
    if not settings.cors_origins:
        return
    from starlette.middleware.cors import CORSMiddleware

    check_cors(settings.cors_origins, settings.api_key)
    app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                       allow_headers=["*"], max_age=600)


def protect_docs(app) -> None:
    """/openapi.json and /docs as FastAPI serves them, behind the same key as the API."""
    from fastapi import Depends
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import JSONResponse

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_api_key)])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_api_key)])
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="danlu API")
