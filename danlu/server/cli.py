"""`danlu serve` and `danlu remote add|list|rm`: typer command functions that danlu/cli/commands.py registers.

They raise DanluError for the CLI's `friendly` wrapper to print; no logic beyond turning flags into
ServerSettings / remotes calls.
"""

from __future__ import annotations

import json
import re
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from danlu import remotes
from danlu.config import get_settings
from danlu.errors import DanluError
from danlu.i18n import t
from danlu.terminal import plain

console = Console()
_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)([smh]?)$")


def parse_duration(text: str) -> float:
    """'5m' → 300, '30s' / '30' → 30, '1h' → 3600, '0' → unload when idle, '-1' → never unload."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise DanluError(f"无法理解时长 {text!r}（例如 30s、5m、1h、0、-1）/ cannot read duration {text!r} "
                         "(e.g. 30s, 5m, 1h, 0, -1)")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return -1.0 if value < 0 else value * {"s": 1, "m": 60, "h": 3600}[unit]


def parse_thinking(values: list[str]) -> dict[str, bool]:
    """`on`, `off`, `MODEL=on` … → {"*": True, "MODEL": True}."""
    words = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
    out: dict[str, bool] = {}
    for value in values:
        name, _, word = value.rpartition("=")
        if word.strip().lower() not in words:
            raise DanluError(f"--thinking 只接受 on/off 或 MODEL=on|off，不是 {value!r} / --thinking takes on, off or "
                             f"MODEL=on|off, not {value!r}")
        out[name.strip() or "*"] = words[word.strip().lower()]
    return out


def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="监听地址 / address to bind (non-loopback needs --api-key)"),
    port: int = typer.Option(8000, "--port", help="端口 / port"),
    model: Optional[List[str]] = typer.Option(None, "--model", help="启动时加载，可重复 / load at start (repeatable)"),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="DANLU_API_KEY",
                                          help="要求 Authorization: Bearer KEY / require this bearer key on /v1"),
    max_loaded: int = typer.Option(2, "--max-loaded", help="最多同时加载的模型数 / most models loaded at once"),
    keep_alive: str = typer.Option("5m", "--keep-alive", help="空闲多久后卸载（-1 永不）/ idle time before unload"),
    insecure: bool = typer.Option(False, "--insecure", help="允许无密钥对外开放 / allow a public bind without a key"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="允许加载自带代码的模型 / let API calls load models that run their own code"),
    ctx: Optional[int] = typer.Option(None, "--ctx", help="每个请求的上下文长度 / context per request"),
    parallel: int = typer.Option(4, "--parallel", help="每个模型同时解码的请求数 / requests decoded together per model"),
    kv_cells: Optional[int] = typer.Option(None, "--kv-cells", help=(
        "llama.cpp 模型共享 KV 池的 cell 数（默认 parallel × ctx）/ cells of a llama.cpp model's shared KV pool "
        "(default parallel × ctx)")),
    max_queue: int = typer.Option(64, "--max-queue", help="每个模型的排队上限，超出返回 429 / queue per model, then 429"),
    thinking: Optional[List[str]] = typer.Option(None, "--thinking", help=(
        "混合思考模型默认开或关：on|off，或 MODEL=on|off（可重复）/ default thinking of hybrid models: on|off, or "
        "MODEL=on|off (repeatable)")),
    cors_origin: Optional[List[str]] = typer.Option(None, "--cors-origin", help=(
        "允许浏览器应用从这个来源调用（可重复；* 需要 --api-key）/ let browser apps on this origin call the API "
        "(repeatable; * needs --api-key)")),
) -> None:
    """OpenAI 与 Ollama 兼容的 API 服务 / serve OpenAI- and Ollama-compatible APIs (chat, completions, models)."""
    import uvicorn

    from danlu.server import ServerSettings
    from danlu.server.app import create_app
    from danlu.server.security import check_bind, check_cors

    check_bind(host, api_key, insecure)
    check_cors(list(cors_origin or []), api_key)
    settings = ServerSettings(host=host, port=port, models=list(model or []), api_key=api_key, max_loaded=max_loaded,
                              keep_alive_s=parse_duration(keep_alive), insecure=insecure,
                              trust_remote_code=trust_remote_code, n_ctx=ctx, parallel=parallel, max_queue=max_queue,
                              kv_cells=kv_cells,
                              thinking=parse_thinking(thinking or []), cors_origins=list(cors_origin or []))
    app = create_app(settings)
    console.print(t(f"丹炉服务：http://{host}:{port}/v1（OpenAI）与 http://{host}:{port}（Ollama）（Ctrl-C 停止）",
                    f"danlu serving at http://{host}:{port}/v1 (OpenAI) and http://{host}:{port} (Ollama; Ctrl-C to "
                    "stop)"), highlight=False)
    console.print(t(f"网页（对话、竞技场、排行榜）：http://{host}:{port}/", f"web page (chat, arena, leaderboard): "
                    f"http://{host}:{port}/"), highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


def remote_add_command(
    name: str = typer.Argument(..., help="在 danlu 里使用的名字 / the name danlu will call it"),
    base_url: str = typer.Option(..., "--base-url", help="如 http://gpu-box:8000/v1 / e.g. http://gpu-box:8000/v1"),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="远程服务的密钥 / the remote's API key"),
    model: Optional[str] = typer.Option(None, "--model", help="远程服务上的模型名（默认同 NAME）/ model name there"),
    ctx: Optional[int] = typer.Option(None, "--ctx", help="远程上下文长度（字符）/ remote context, in characters"),
) -> None:
    """登记一个 OpenAI 兼容的远程端点为模型 / register an OpenAI-compatible endpoint as a model."""
    remote = remotes.add(name, base_url, model=model, api_key=api_key, n_ctx=ctx, settings=get_settings())
    console.print(plain(t(f"已登记 {remote.name} → {remote.shown_url}（模型 {remote.model}）",
                          f"Registered {remote.name} → {remote.shown_url} (model {remote.model})")))


def remote_list_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """已登记的远程模型 / registered remote models."""
    rows = [r.public() for r in remotes.list_remotes(get_settings())]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table(title=t("远程模型", "Remote models"))
    for column in (t("名称", "name"), "base_url", t("远程模型名", "remote model"), t("密钥", "key")):
        table.add_column(column)
    for row in rows:
        table.add_row(plain(row["name"], single_line=True), plain(row["base_url"], single_line=True),
                      plain(row["model"], single_line=True), "✓" if row["api_key"] else "")
    console.print(table)


def remote_rm_command(name: str = typer.Argument(...)) -> None:
    """删除一个远程模型登记 / forget a remote model."""
    remotes.remove(name, get_settings())
    console.print(plain(t(f"已删除 {name}", f"Removed {name}")))
