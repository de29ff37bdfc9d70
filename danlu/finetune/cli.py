"""The typer functions behind `danlu finetune`, `danlu adapters` and `danlu export` (wired in danlu/cli/commands.py).

Thin, like danlu/cli/commands.py: parse, call train/adapters/export, print. Results go to stdout (a table, or JSON
with --json); progress and notes go to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from danlu.config import get_settings
from danlu.i18n import t
from danlu.terminal import plain

console = Console()


def finetune_command(
    base: str = typer.Argument(..., help="基础模型：目录 id 或路径 / base model: catalog id or path"),
    data: str = typer.Option(..., "--data", help="训练数据 JSONL（OpenAI/ShareGPT/Alpaca）或内置语料名 tea-shop / "
                                                 "training JSONL, or the shipped corpus name tea-shop"),
    out: str = typer.Option(..., "--out", help="适配器名，保存到 $DANLU_HOME/adapters/NAME / adapter name"),
    rank: int = typer.Option(8, "--rank", help="LoRA 秩 / LoRA rank r"),
    alpha: int = typer.Option(16, "--alpha", help="LoRA alpha（缩放 = alpha/rank）/ LoRA alpha (scale = alpha/rank)"),
    lr: float = typer.Option(1e-3, "--lr", help="峰值学习率 / peak learning rate"),
    epochs: float = typer.Option(1.0, "--epochs", help="训练轮数（可为小数）/ passes over the data (may be fractional)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="优化步数上限（优先于 --epochs）/ optimizer steps, overrides --epochs"),
    max_len: int = typer.Option(512, "--max-len", help="每段对话最多 token 数 / tokens per dialogue, longer ones are cut"),
    val: Optional[str] = typer.Option(None, "--val", help="验证集 JSONL（默认留出 10%）/ held-out JSONL (default: 10% of --data)"),
    batch_size: int = typer.Option(4, "--batch-size", help="每步的对话数（梯度累积）/ dialogues per step (gradient accumulation)"),
    save_every: int = typer.Option(10, "--save-every", help="每隔多少步存断点 / checkpoint every N steps"),
    seed: int = typer.Option(0, "--seed"),
    qlora: bool = typer.Option(False, "--qlora", help="4-bit 基座（bitsandbytes，需 CUDA）/ 4-bit base (bitsandbytes, CUDA only)"),
    prompt_format: Optional[str] = typer.Option(None, "--format", help="对话格式（默认同 danlu chat）/ prompt format (default: as danlu chat picks)"),
    restart: bool = typer.Option(False, "--restart", help="丢弃断点重新训练 / discard a checkpoint and start over"),
    overwrite: bool = typer.Option(False, "--overwrite", help="覆盖同名适配器 / replace an adapter of the same name"),
    as_json: bool = typer.Option(False, "--json", help="以 JSON 输出结果 / print the result as JSON"),
) -> None:
    """LoRA 微调（只在助手回复上计算损失，可断点续训）/ LoRA fine-tuning (loss on assistant replies, resumable)."""
    from danlu.finetune.data import resolve_data
    from danlu.finetune.train import TrainConfig, train

    data_path, val_path = resolve_data(data, val)
    config = TrainConfig(base=base, data=data_path, out=out, rank=rank, alpha=alpha, lr=lr, epochs=epochs,
                         max_steps=max_steps, max_len=max_len, val=val_path, batch_size=batch_size, seed=seed,
                         qlora=qlora, prompt_format=prompt_format, save_every=save_every, restart=restart,
                         overwrite=overwrite)
    result = train(config)
    if as_json:
        print(json.dumps(_result_dict(result), ensure_ascii=False, indent=2))
        return
    console.print(_summary(result, base, out), highlight=False)


def _result_dict(result) -> dict:
    from dataclasses import asdict

    return {**asdict(result), "adapter_dir": str(result.adapter_dir)}


def _summary(result, base: str, name: str) -> str:
    lines = [t(f"适配器已保存：{result.adapter_dir}", f"Adapter saved: {result.adapter_dir}"),
             t(f"{result.steps} 步，{result.train_tokens} 个 token，用时 {result.seconds:.0f} 秒",
               f"{result.steps} steps, {result.train_tokens} tokens, {result.seconds:.0f} s")]
    if result.val_loss_before is not None and result.val_loss_after is not None:
        drop = result.val_loss_before - result.val_loss_after
        lines.append(t(f"验证集损失 {result.val_loss_before:.3f} → {result.val_loss_after:.3f}（降低 {drop:.3f}）",
                       f"held-out loss {result.val_loss_before:.3f} → {result.val_loss_after:.3f} (down {drop:.3f})"))
    lines.append(t(f"对话：danlu chat {base} --lora {name}；服务：danlu serve 后用模型名 {base}+{name}",
                   f"Chat: danlu chat {base} --lora {name}; serve: danlu serve, model id {base}+{name}"))
    return "\n".join(lines)


def adapters_command(as_json: bool = typer.Option(False, "--json", help="以 JSON 输出 / print JSON")) -> None:
    """已有的 LoRA 适配器 / LoRA adapters in $DANLU_HOME/adapters."""
    from danlu.finetune.adapters import list_adapters
    from danlu.cli.views import human_bytes

    adapters = list_adapters(get_settings())
    if as_json:
        print(json.dumps([a.as_dict() for a in adapters], ensure_ascii=False, indent=2))
        return
    if not adapters:
        console.print(t("还没有适配器：danlu finetune gemma-3-270m --data tea-shop --out tea-shop",
                        "No adapters yet: danlu finetune gemma-3-270m --data tea-shop --out tea-shop"), highlight=False)
        return
    table = Table(title=t("LoRA 适配器", "LoRA adapters"))
    for column in (t("名称", "name"), t("基础模型", "base"), t("秩", "rank"), "alpha", t("大小", "size"),
                   t("创建时间", "created"), t("验证损失", "val loss")):
        table.add_column(column)
    for a in adapters:
        table.add_row(plain(a.name, single_line=True), plain(a.base or "?", single_line=True), str(a.rank or "?"),
                      str(a.alpha or "?"), human_bytes(a.size_bytes), plain(str(a.created)[:16].replace("T", " ")), _losses(a.val_loss_before, a.val_loss_after))
    console.print(table)


def _losses(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "-"
    return f"{before:.3f} → {after:.3f}"


def export_command(
    base: str = typer.Argument(..., help="基础模型：目录 id 或路径 / base model: catalog id or path"),
    lora: str = typer.Option(..., "--lora", help="适配器名或路径 / adapter name or path"),
    gguf: Path = typer.Option(..., "--gguf", help="输出的 .gguf 文件 / output .gguf file"),
    quant: str = typer.Option("f16", "--quant", help="f32 | f16 | bf16 | q8_0 | q4_k_m | …"),
    check: bool = typer.Option(True, "--check/--no-check", help="用 llama.cpp 核对导出结果 / compare the export with the merged model"),
    as_json: bool = typer.Option(False, "--json", help="以 JSON 输出结果 / print the result as JSON"),
) -> None:
    """合并 LoRA 并导出 GGUF（llama.cpp 可直接加载）/ merge a LoRA and export a GGUF for llama.cpp."""
    from danlu.finetune.export import export

    result = export(base, lora, gguf, quant, get_settings(), check=check)
    if as_json:
        print(json.dumps({**result.__dict__, "path": str(result.path)}, ensure_ascii=False, indent=2))
        return
    from danlu.cli.views import human_bytes

    console.print(t(f"已导出 {result.path}（{result.quant}，{human_bytes(result.size_bytes)}）",
                    f"Exported {result.path} ({result.quant}, {human_bytes(result.size_bytes)})"), highlight=False)
    if result.agreement is not None:
        console.print(t(f"与合并后模型的贪心预测一致率：{result.agreement:.1%}（{result.positions} 个位置）",
                        f"greedy agreement with the merged model: {result.agreement:.1%} over {result.positions} positions"),
                      highlight=False)
    console.print(t(f"运行：danlu chat {result.path}", f"Run it: danlu chat {result.path}"), highlight=False)
