"""`danlu bench [MODEL]`: the typer command danlu/cli/commands.py registers; the measuring is in run.py."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from danlu.config import get_settings
from danlu.errors import DanluError
from danlu.i18n import t

console = Console()


def bench_command(
    model: Optional[str] = typer.Argument(None, help="模型 id 或 GGUF 路径（默认 DANLU_DEFAULT_MODEL）/ model id or GGUF path"),
    pp: int = typer.Option(128, "--pp", help="每个提示的 token 数 / prompt tokens per stream"),
    tg: int = typer.Option(64, "--tg", help="每路生成的 token 数 / new tokens per stream"),
    streams: int = typer.Option(4, "--streams", help="并发路数（另测 1 路）/ concurrent streams (1 is measured too)"),
    repeat: int = typer.Option(2, "--repeat", help="重复次数，取中位数 / repetitions, medians shown"),
    threads: Optional[int] = typer.Option(None, "--threads", help="llama.cpp 线程数 / threads (default DANLU_THREADS)"),
    as_json: bool = typer.Option(False, "--json", help="输出 JSON / print JSON"),
) -> None:
    """本机速度：prefill、decode、首字延迟，单路与多路并发 / this machine's speed: prefill, decode, TTFT, 1 and N streams."""
    from danlu.bench.run import run

    settings = get_settings()
    if threads is not None:
        if threads < 1:
            raise DanluError("--threads 至少为 1 / --threads must be at least 1")
        settings = settings.model_copy(update={"threads": threads, "decode_threads": threads})
    counts = tuple(sorted({1, streams}))
    report = run(model or settings.default_model, pp=pp, tg=tg, streams=counts, repeat=repeat, settings=settings)
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return
    console.print(table(report))
    console.print(footer(report), highlight=False)


COLUMNS = (("并发", "streams"), ("prefill tok/s", "prefill tok/s"), ("首字延迟 (s)", "TTFT (s)"),
           ("decode tok/s", "decode tok/s"), ("每路 decode tok/s", "decode tok/s per stream"))


def table(report: dict) -> Table:
    """One row per stream count: the figures of run.Row."""
    out = Table(title=t(f"{report['model']} 的速度", f"Speed of {report['model']}"))
    for zh, en in COLUMNS:
        out.add_column(t(zh, en), justify="right")
    for row in report["rows"]:
        out.add_row(str(row["streams"]), f"{row['prefill_tps']:.1f}", f"{row['ttft_s']:.3f}",
                    f"{row['decode_tps']:.1f}", f"{row['per_stream_tps']:.1f}")
    return out


def footer(report: dict) -> str:
    omp = ", ".join(f"{k}={v}" for k, v in report["omp"].items()) or "-"
    return t(f"提示 {report['pp']} token，生成 {report['tg']} token，重复 {report['repeat']} 次取中位数；线程 "
             f"{report['decode_threads']}/{report['threads']}（单路 decode/提示与多路），{omp}；{report['cpu_count']} 核，负载 "
             f"{report['load_avg'][0]}",
             f"{report['pp']}-token prompts, {report['tg']} new tokens, median of {report['repeat']}; threads "
             f"{report['decode_threads']}/{report['threads']} (one-stream decode/prompts and batches), {omp}; {report['cpu_count']} cores, "
             f"load {report['load_avg'][0]}")
