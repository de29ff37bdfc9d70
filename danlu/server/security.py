"""Who may call the server: the API key check on /v1 and /api, and the bind-address rule.

A server on a loopback address is reachable only from this machine. Anything else (0.0.0.0, a LAN
address) exposes the models to the network, so it needs an API key unless the operator says
`--insecure` on purpose. The key is compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from danlu.errors import DanluError
from danlu.server.protocol import ApiError

PROTECTED_PREFIXES = ("/v1", "/api")


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
