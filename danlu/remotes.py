"""Remote OpenAI-compatible endpoints registered as models: `danlu remote add NAME --base-url URL`.

A remote is any server speaking the OpenAI API — vLLM or SGLang on a GPU cluster, Ollama, llama.cpp's
server, another `danlu serve`. Each is one JSON file, DANLU_HOME/remotes/NAME.json, in a folder only the
owner can read (it may hold an API key). That file is what `loader.resolve(NAME)` hands to the "remote"
backend as the model's "weights" (backends/remote.py reads it), so chat, serve, compare, arena and eval
load a remote exactly like a local model. Names follow the store's safe-name rule and may not shadow a
catalog id.

A base URL may carry credentials (`https://user:pass@host/v1`): the record keeps them (the client needs
them), and everything shown — listings, the model picker, error messages — shows `***@host` instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from danlu import catalog
from danlu.config import Settings, get_settings
from danlu.errors import DanluError
from danlu.private import private_dir
from danlu.store import atomic_write_bytes, safe_name

#: A remote's context in code points when the user gives none (the remote enforces its real limit).
DEFAULT_REMOTE_CTX = 32768


@dataclass(frozen=True)
class Remote:
    """One registered endpoint. `model` is the name the remote server knows the model by."""

    name: str
    base_url: str
    model: str
    api_key: str | None = None
    n_ctx: int = DEFAULT_REMOTE_CTX
    record_path: Path | None = field(default=None, compare=False)  # the JSON file it was read from

    def record(self) -> dict:
        return {"name": self.name, "base_url": self.base_url, "model": self.model, "api_key": self.api_key,
                "n_ctx": self.n_ctx}

    @property
    def shown_url(self) -> str:
        """The base URL as shown to anyone: credentials in it replaced by ***."""
        return redacted_url(self.base_url)

    def public(self) -> dict:
        """For listings: the key is never shown, only whether there is one; nor are credentials in the URL."""
        return {"name": self.name, "base_url": self.shown_url, "model": self.model, "api_key": bool(self.api_key),
                "n_ctx": self.n_ctx}


def redacted_url(url: str) -> str:
    """`url` with its `user:password@` part shown as `***@`."""
    parts = urlsplit(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"***@{host}")) if userinfo else url


def redact(text: str, url: str) -> str:
    """`text` (an error message, say) with `url`'s credentials replaced wherever it quotes them."""
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    if not userinfo:
        return text
    return text.replace(url, redacted_url(url)).replace(f"{userinfo}@", "***@")


def remotes_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).home / "remotes"


def add(name: str, base_url: str, *, model: str | None = None, api_key: str | None = None, n_ctx: int | None = None,
        settings: Settings | None = None) -> Remote:
    """Register (or replace) a remote; the name must be safe and not a catalog id."""
    safe_name(name)
    if any(spec.id == name for spec in catalog.all_models()):
        raise DanluError(f"{name} 是目录里的模型 id，请换个名字 / {name} is a catalog model id: pick another name")
    folder = remotes_dir(settings)
    remote = Remote(name, _checked_url(base_url), model or name, api_key or None, n_ctx or DEFAULT_REMOTE_CTX,
                    folder / f"{name}.json")
    private_dir(folder)  # the records may hold API keys: folder 0700, each record 0600
    atomic_write_bytes(remote.record_path, json.dumps(remote.record(), ensure_ascii=False, indent=2).encode(),
                       private=True)
    return remote


def _checked_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DanluError(f"base-url 需要是 http(s)://主机[:端口]/v1 / --base-url must look like http(s)://HOST[:PORT]/v1, "
                         f"got {url!r}")
    return url.strip().rstrip("/")


def find(name: str, settings: Settings | None = None) -> Remote | None:
    """The remote called `name`, or None; a name that is not a safe name is never a remote."""
    try:
        safe_name(name)
    except DanluError:
        return None
    path = remotes_dir(settings) / f"{name}.json"
    return read(path) if path.is_file() else None


def read(path: Path) -> Remote:
    """A remote from its record file (what the backend receives as the model path)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return Remote(**{k: data[k] for k in ("name", "base_url", "model")}, api_key=data.get("api_key"),
                      n_ctx=int(data.get("n_ctx") or DEFAULT_REMOTE_CTX), record_path=Path(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DanluError(f"远程模型记录损坏 / broken remote record {path}: {exc}; re-run `danlu remote add`") from exc


def list_remotes(settings: Settings | None = None) -> list[Remote]:
    folder = remotes_dir(settings)
    if not folder.is_dir():
        return []
    return [read(p) for p in sorted(folder.glob("*.json"))]


def remove(name: str, settings: Settings | None = None) -> None:
    remote = find(name, settings)
    if remote is None:
        raise DanluError(f"没有名为 {name} 的远程模型 / no remote called {name!r}: see `danlu remote list`")
    (remotes_dir(settings) / f"{name}.json").unlink()
