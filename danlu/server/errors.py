"""Errors a request is answered with, before any wire protocol shapes them.

`ApiError` carries a status, a message that says what to change, and OpenAI-style `type`/`param`/`code`;
each protocol renders it in its own body (OpenAI: `{"error": {"message", "type", "param", "code"}}`, Ollama:
`{"error": "message"}`). `api_error` maps an engine's DanluError to one: the caller's mistake (400), capacity
(503 + Retry-After), a remote's answer, or a fault inside danlu (500). `describe_validation` turns pydantic's
errors into one sentence naming each bad field.
"""

from __future__ import annotations

from danlu.backends.requests import EngineFault, Overloaded
from danlu.errors import DanluError

MAX_ERRORS_SHOWN = 3


class ApiError(Exception):
    """A request the server answers with an error status and a message that says what to change."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}
        self.type, self.param, self.code = type, param, code

    def openai_body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def ollama_body(self) -> dict:
        return {"error": self.message}

    def with_message(self, message: str) -> "ApiError":
        return ApiError(self.status, message, type=self.type, param=self.param, code=self.code, headers=self.headers)


def api_error(error: DanluError) -> ApiError:
    """An engine's error as an HTTP error: the caller's (400), capacity (503), a remote's, or a fault (500)."""
    from danlu.backends.remote import RemoteError

    if isinstance(error, ApiError):
        return error
    if isinstance(error, Overloaded):
        return ApiError(503, str(error), type="server_error", code="overloaded", headers={"Retry-After": "2"})
    if isinstance(error, EngineFault):
        return ApiError(500, str(error), type="server_error", code="engine_fault")
    if isinstance(error, RemoteError):
        status = {400: 400, 413: 400, 422: 400, 429: 429}.get(error.status or 0, 502)
        return ApiError(status, str(error), type="invalid_request_error" if status < 500 else "server_error",
                        code="remote_error")
    return ApiError(400, str(error), code="invalid_request")


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def unsupported(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="unsupported_parameter")


def describe_validation(errors: list[dict]) -> tuple[str, str | None]:
    """Pydantic's errors as one sentence naming each bad field, what it got and what it needs."""
    if not errors:
        return "请求无效 / invalid request", None
    if errors[0].get("type") == "json_invalid":
        detail = errors[0].get("ctx", {}).get("error", "")
        return f"请求体不是合法的 JSON / the request body is not valid JSON ({detail}): send a JSON object", None
    parts, first_param = [], None
    for error in errors[:MAX_ERRORS_SHOWN]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        first_param = first_param or where
        got = _shown(error.get("input")) if error.get("type") != "missing" else "nothing"
        parts.append(f"`{where}`: {error.get('msg')} (got {got})")
    more = f"; and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
    return f"请求参数有误 / invalid request: {'; '.join(parts)}{more}", first_param


def _shown(value) -> str:
    """A short, printable view of a bad input (a lone surrogate must not break the error itself)."""
    return repr(value)[:60].encode("utf-8", "backslashreplace").decode("utf-8")


def reject_lone_surrogates(value, where: str = "body") -> None:
    """A string with a lone UTF-16 surrogate (`"\\ud800"` in JSON) cannot be encoded for a tokenizer: say which
    field holds it instead of failing deep inside (a 500)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ApiError(400, f"`{where}` 含有不成对的 UTF-16 代理字符（位置 {exc.start}）/ `{where}` holds a lone UTF-16 "
                           f"surrogate at position {exc.start}: send valid Unicode text", param=where,
                           code="invalid_text") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            reject_lone_surrogates(key, where)
            reject_lone_surrogates(item, f"{where}.{key}" if where != "body" else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            reject_lone_surrogates(item, f"{where}.{index}")
