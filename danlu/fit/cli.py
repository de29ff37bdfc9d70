"""`danlu fit`: which models run on this machine (or on one with --vram/--ram), and how well we predicted it.

    danlu fit                         every catalog model and variant, best first, with the reason
    danlu fit --vram 6 [--ram 16]     the same for a machine with a 6 GB card
    danlu fit --hardware              what was detected
    danlu fit ID                      one model's variants
    danlu fit ID --measure --ctx N    load it, fill N tokens, compare the peak with the prediction
    danlu fit ID --parallel 8 [--ctx N] [--measure]   as `danlu serve --parallel 8` holds it: one KV pool of
                                      8 × N cells shared by its cached conversations

cli.py registers `fit_command` as the `fit` command; all logic lives in danlu.fit and danlu.hardware.
"""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from danlu import catalog
from danlu.config import get_settings
from danlu.errors import DanluError
from danlu.fit import FitResult, MeasureReport, fit_catalog, fmt_bytes, measure
from danlu.hardware import RELEVANT_FLAGS, Hardware, detect, with_budget
from danlu.i18n import t

console = Console()
err = Console(stderr=True)


def fit_command(
    model: Optional[str] = typer.Argument(None, help="模型 id（或 --measure 时的文件/目录路径）/ model id (or a path with --measure)"),
    show_hardware: bool = typer.Option(False, "--hardware", help="只显示检测到的硬件 / show the detected hardware"),
    vram: Optional[float] = typer.Option(None, "--vram", help="假设显存 GB（0 = 无 GPU）/ assume a GPU with this many GB (0: none)"),
    ram: Optional[float] = typer.Option(None, "--ram", help="假设内存 GB / assume this much RAM, GB"),
    ctx: Optional[int] = typer.Option(None, "--ctx", help="上下文长度 / context length (default: DANLU_N_CTX)"),
    do_measure: bool = typer.Option(False, "--measure", help="加载并实测峰值内存 / load it and measure the peak"),
    variant: Optional[str] = typer.Option(None, "--variant", help="只看这个量化版本 / only this variant"),
    parallel: Optional[int] = typer.Option(None, "--parallel", min=1, help=(
        "按 danlu serve --parallel N 预测（N × ctx 的共享 KV 池）/ as `danlu serve --parallel N` holds it (a KV pool of "
        "N × ctx cells)")),
    as_json: bool = typer.Option(False, "--json", help="输出 JSON / print JSON"),
) -> None:
    """哪些模型能在这台机器上跑：预测内存、结论与理由 / which models fit this machine: predicted memory, verdict, reason."""
    try:
        _dispatch(model, show_hardware, vram, ram, ctx, do_measure, variant, as_json, parallel)
    except DanluError as exc:
        err.print(f"[red]✗[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _dispatch(model: str | None, show_hardware: bool, vram: float | None, ram: float | None, ctx: int | None,
              do_measure: bool, variant: str | None, as_json: bool, parallel: int | None = None) -> None:
    settings = get_settings()
    hw = with_budget(detect(), vram, ram)
    n_ctx = ctx or settings.n_ctx
    served = _served(parallel, n_ctx, settings)
    if show_hardware:
        return _print_json(hw.to_dict()) if as_json else console.print(hardware_table(hw))
    if do_measure:
        if not model:
            raise DanluError("--measure 需要一个模型 id 或路径 / --measure needs a model id or path")
        report = measure(model, n_ctx, variant=variant, settings=settings, n_threads=settings.threads, served=served)
        if as_json:
            return _print_json(report.to_dict())
        console.print(measure_table(report))
        return console.print(measure_note(report), highlight=False)
    models = (catalog.get(model),) if model else None
    cells, kwargs = served.fit_inputs() if served else (n_ctx, None)
    results = [r for r in fit_catalog(hw, cells, settings, models, kwargs) if variant in (None, r.variant)]
    if as_json:
        return _print_json({"hardware": hw.to_dict(), "n_ctx": n_ctx, "models": [r.to_dict() for r in results]})
    console.print(_machine_line(hw, n_ctx), highlight=False)
    console.print(ranking_table(results))


def _served(parallel: int | None, n_ctx: int, settings):
    """The server settings `danlu serve --parallel N --ctx n_ctx` would run with, or None without --parallel."""
    if parallel is None:
        return None
    from danlu.server import ServerSettings

    return ServerSettings(parallel=parallel, n_ctx=n_ctx, base=settings)


def _print_json(data: dict) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def bilingual(text: str) -> str:
    """Pick one language of a '中文 / English' message for the table (JSON keeps both)."""
    zh, sep, en = text.partition(" / ")
    return t(zh, en) if sep else text


# ---------------------------------------------------------------- tables

def hardware_table(hw: Hardware) -> Table:
    table = Table(title=t("本机硬件", "Hardware") + (t("（假设）", " (assumed)") if hw.assumed else ""))
    table.add_column(t("项目", "item"))
    table.add_column(t("数值", "value"))
    table.add_row(t("CPU 核心", "CPU cores"), str(hw.cpu_cores))
    flags = sorted(hw.cpu_flags & RELEVANT_FLAGS)
    table.add_row(t("CPU 特性", "CPU features"), f"{hw.machine} {' '.join(flags)}")
    table.add_row(t("内存（总/可用）", "RAM (total/available)"),
                  f"{fmt_bytes(hw.ram_total_bytes)} / {fmt_bytes(hw.ram_available_bytes)}")
    for gpu in hw.gpus or ():
        bw = f", {gpu.bandwidth / 1e9:.0f} GB/s" if gpu.bandwidth else ""
        table.add_row(f"GPU {gpu.index} ({gpu.kind})", f"{gpu.name}: {fmt_bytes(gpu.free_bytes)} / "
                      f"{fmt_bytes(gpu.total_bytes)} {t('空闲/总计', 'free/total')}{bw}")
    if not hw.gpus:
        table.add_row("GPU", t("无（NVML、torch.cuda、nvidia-smi 都没找到）", "none (not found by NVML, torch.cuda or nvidia-smi)"))
    return table


def _machine_line(hw: Hardware, n_ctx: int) -> str:
    gpu = f"{hw.gpu.name} {fmt_bytes(hw.vram_free_bytes)}" if hw.gpu else t("无 GPU", "no GPU")
    assumed = t("（假设的机器）", " (assumed machine)") if hw.assumed else ""
    return t(f"机器{assumed}：{gpu}，内存可用 {fmt_bytes(hw.ram_available_bytes)}，{hw.cpu_cores} 核；上下文 {n_ctx}",
             f"Machine{assumed}: {gpu}, {fmt_bytes(hw.ram_available_bytes)} RAM available, {hw.cpu_cores} cores; "
             f"context {n_ctx}")


def ranking_table(results: list[FitResult]) -> Table:
    table = Table(title=t("能跑哪些模型（最好的在前）", "What fits (best first)"), show_lines=False)
    for col, justify in ((t("模型", "model"), "left"), (t("版本", "variant"), "left"), (t("显存", "VRAM"), "right"),
                         (t("内存", "RAM"), "right"), (t("结论", "verdict"), "left"), (t("速度", "speed"), "left"),
                         ("C-Eval", "right"), (t("理由", "reason"), "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in results:
        table.add_row(_model_cell(r), r.variant, _size(r.estimate.gpu.total), _size(r.estimate.host_needed),
                      _verdict_cell(r), _speed_cell(r), f"{r.ceval:.1f}" if r.ceval is not None else "-",
                      escape(bilingual(r.reason)))
    return table


def _model_cell(r: FitResult) -> str:
    """The id, marked when the model makes vectors or scores rather than chats."""
    kinds = {"embedding": t("嵌入", "embedding"), "rerank": t("重排", "rerank")}
    return f"{escape(r.model_id)} [dim]({kinds[r.kind]})[/]" if r.kind in kinds else escape(r.model_id)


def _size(n: int) -> str:
    return fmt_bytes(n) if n else "-"


def _verdict_cell(r: FitResult) -> str:
    colour = {"gpu": "green", "partial": "yellow", "cpu": "cyan", "remote": "blue", "no-fit": "red",
              "unsupported": "dim"}[r.verdict]
    text = bilingual(r.verdict_text())
    return f"[{colour}]{escape(text)}[/]" + (f"\n{escape(r.strategy)}" if r.strategy else "")


def _speed_cell(r: FitResult) -> str:
    if not r.fits or r.kind != "chat":  # the speed class is decoding speed; embedding models do not decode
        return "-"
    rate = f"~{r.tokens_per_s:.0f}" if r.tokens_per_s >= 1 else f"{r.tokens_per_s:.1f}"
    return f"{bilingual(r.speed_text().replace(' ', ' / ', 1))} {rate} tok/s"


def measure_table(report: MeasureReport) -> Table:
    est = report.estimate
    table = Table(title=escape(report.label), min_width=60)
    table.add_column(t(f"上下文 {report.n_ctx}", f"context {report.n_ctx}"))
    table.add_column(t("预测", "predicted"), justify="right")
    table.add_column(t("实测", "measured"), justify="right")
    names = {"weights": t("权重", "weights"), "kv_cache": t("KV 缓存/状态", "KV cache / state"),
             "compute": t("计算缓冲", "compute buffers"), "overhead": t("运行时开销", "runtime overhead")}
    for part, name in names.items():
        table.add_row(name, fmt_bytes(getattr(est.host, part) + getattr(est.gpu, part)), "")
    table.add_row(t("合计", "total"), fmt_bytes(report.predicted_bytes), fmt_bytes(report.measured_bytes))
    table.add_row(t("误差", "error"), "", f"{report.error:+.1%}")
    return table


def measure_note(report: MeasureReport) -> str:
    m = report.measurement
    return t(f"实测 = 在子进程里加载并填满 {m.tokens} 个 token 期间的常驻内存峰值（{m.host.method}）减去加载前的常驻内存；"
             f"内存映射的权重页被读到后才计入；glibc 的 mmap 阈值固定为 1 MiB，峰值即存活字节。用时 {m.seconds:.1f} 秒。",
             f"measured = resident peak ({m.host.method}) in a child process while loading and filling {m.tokens} "
             f"tokens, minus the resident set before loading; mapped weight pages count once read; glibc's mmap "
             f"threshold is pinned at 1 MiB so the peak is live bytes. Took {m.seconds:.1f} s.")
