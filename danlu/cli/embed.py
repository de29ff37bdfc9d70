"""`danlu embed MODEL TEXT…`: vectors for texts, from an embedding model or any GGUF in embedding mode.

    danlu embed bge-small-zh-v1.5 "今天天气很好" "今天是晴天"     one compact line per text
    danlu embed bge-m3 --json < lines.txt                         OpenAI-shaped JSON, one text per stdin line
    danlu embed qwen3-embedding-0.6b --query "怎么退货"           with the model's query instruction
    danlu embed ./model.gguf --full "…"                           every value, one vector per line (for pipes)

cli.py registers `embed_command` as the `embed` command; loading goes through danlu.loader, the vectors
come from the engine's `embed` (danlu/backends/llamacpp_embed.py). Messages go to stderr, results to stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console

from danlu.cli import views
from danlu.backends.base import EmbeddingResult
from danlu.errors import DanluError
from danlu.i18n import t
from danlu.progress import counter

err = Console(stderr=True)
PROGRESS_FROM = 64  # texts: fewer than this finish before a bar is worth drawing
SHOWN = 4  # values shown at each end of a vector in the compact view


def embed_command(
    model: str = typer.Argument(..., help="目录 id 或 GGUF 路径 / catalog id or GGUF path"),
    texts: Optional[list[str]] = typer.Argument(None, help="要嵌入的文本；省略时从 stdin 读，每行一条 / texts; "
                                                          "one per stdin line when omitted"),
    as_json: bool = typer.Option(False, "--json", help="OpenAI 风格的 JSON / OpenAI-style JSON"),
    full: bool = typer.Option(False, "--full", help="每行一个完整向量 / every value, one vector per line"),
    query: bool = typer.Option(False, "--query", help="加上模型的查询前缀（检索用的问题）/ add the model's query prefix"),
    normalize: Optional[bool] = typer.Option(None, "--normalize/--no-normalize",
                                             help="L2 归一化（默认按模型）/ L2-normalise (default: as the model's card says)"),
    truncate: bool = typer.Option(False, "--truncate", help="截断过长的文本 / cut texts longer than the model's limit"),
    dimensions: Optional[int] = typer.Option(None, "--dimensions", help="只保留前 N 维 / keep the first N values"),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="mean | cls | last（默认按模型 / default: the model's)"),
    digits: int = typer.Option(4, "--digits", help="小数位数 / decimals shown"),
    ctx: Optional[int] = typer.Option(None, "--ctx", help="最长输入 token 数 / longest input, tokens"),
    force: bool = typer.Option(False, "--force", help="放不下也加载 / load even when fit says it will not fit"),
) -> None:
    """文本的向量（嵌入模型，或任何 GGUF 的嵌入模式）/ vectors for texts (an embedding model, or any GGUF)."""
    from danlu.backends.llamacpp_embed import checked_texts  # llama_cpp loads only when the command runs

    items = checked_texts(list(texts) if texts else read_lines(sys.stdin))  # before the (slow) load
    extra = {k: v for k, v in {"pooling": pooling, "force": force or None}.items() if v is not None}
    loaded = views.load_with_status(err, model, n_ctx=ctx, embedding=True, **extra)
    engine = loaded.engine
    try:
        result = run(engine, engine.as_queries(items) if query else items, normalize, truncate, dimensions)
    finally:
        engine.close()
    label = loaded.resolved.label
    if as_json:
        print(json.dumps(openai_shape(result, label), ensure_ascii=False))
    elif full:
        for row in result.vectors:
            print(" ".join(f"{v:.{digits}f}" for v in row))
    else:
        print_compact(result, label, engine.pooling, digits)


def read_lines(stream) -> list[str]:
    """One text per line; blank lines are skipped (an empty text has no vector)."""
    if stream.isatty():
        raise DanluError("没有文本：在命令后给出文本，或从 stdin 每行一条 / no texts: give them after the model, "
                         "or one per line on stdin")
    return [line.rstrip("\r\n") for line in stream if line.strip()]


def run(engine, texts: list[str], normalize: bool | None, truncate: bool, dimensions: int | None) -> EmbeddingResult:
    """engine.embed with a progress bar on stderr for long inputs."""
    if not getattr(engine.capabilities, "embeddings", False):
        raise DanluError("这个模型不给向量（重排模型给的是分数）/ this model gives no vectors (a reranker gives scores)")
    with counter(t("嵌入", "embedding"), len(texts), enabled=len(texts) >= PROGRESS_FROM) as bar:
        done = [0]

        def advance(n: int, _total: int) -> None:
            bar.advance(n - done[0])
            done[0] = n

        return engine.embed(texts, normalize=normalize, truncate=truncate, dimensions=dimensions, on_progress=advance)


def openai_shape(result: EmbeddingResult, model: str) -> dict:
    """The body of OpenAI's embeddings response, with the dimension and what was cut as extras."""
    data = [{"object": "embedding", "index": i, "embedding": [float(f"{v:.8g}") for v in row]}
            for i, row in enumerate(result.vectors.tolist())]
    return {"object": "list", "data": data, "model": model, "dimensions": result.dimensions,
            "normalized": result.normalized, "truncated": [i for i, cut in enumerate(result.truncated) if cut],
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}}


def print_compact(result: EmbeddingResult, label: str, pooling: str, digits: int) -> None:
    """One line per text: index, tokens, the first and last values; a summary line on stderr."""
    for i, (row, n) in enumerate(zip(result.vectors, result.token_counts)):
        values = [f"{v:.{digits}f}" for v in row]
        shown = values if len(values) <= 2 * SHOWN else values[:SHOWN] + ["…"] + values[-SHOWN:]
        cut = t("（已截断）", " (truncated)") if result.truncated and result.truncated[i] else ""
        print(f"[{i}] {n} tokens{cut}: {' '.join(shown)}")
    norm = t("已归一化", "normalised") if result.normalized else t("未归一化", "not normalised")
    err.print(t(f"{label}：{len(result.vectors)} 条，{result.dimensions} 维，{pooling} 池化，{norm}，共 {result.prompt_tokens} token",
                f"{label}: {len(result.vectors)} texts, {result.dimensions} dims, {pooling} pooling, {norm}, "
                f"{result.prompt_tokens} tokens"), highlight=False, soft_wrap=True)
