"""What the CLI shows: rows and text built from catalog, store and loader, kept out of cli.py."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from danlu import catalog
from danlu.catalog.schema import ModelSpec
from danlu.config import Settings
from danlu.i18n import t
from danlu.loader import Loaded, availability, load
from danlu.terminal import one_line


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def model_rows(settings: Settings) -> list[dict]:
    """One row per catalog model: the facts a user picks by, and whether it can run now."""
    rows = []
    for spec in catalog.all_models():
        variant = spec.variant()
        status = availability(spec, settings)
        rows.append({
            "id": spec.id, "name": spec.name, "family": spec.family, "kind": spec.kind, "backend": spec.backend_for(variant),
            "params_b": spec.params_b, "context_length": spec.context_length, "variant": variant.name,
            "size_bytes": variant.size_bytes, "prompt_format": spec.prompt_format,
            "trust_remote_code": spec.trust_remote_code, "thinking": spec.thinking, "aliases": list(spec.aliases),
            "runnable": status.runnable,
            "status_code": status.code, "status": status.reason,
        })
    return rows


def describe(spec: ModelSpec) -> str:
    """A readable summary of one catalog entry."""
    lines = [f"[bold]{spec.name}[/] ({spec.id})", f"{t('家族', 'family')}: {spec.family} · {spec.architecture} · {spec.params_b}B · ctx {spec.context_length} · vocab {spec.vocab_size}",
             f"{t('后端', 'backend')}: {spec.backend} · {t('格式', 'format')}: {spec.prompt_format} · {t('许可', 'license')}: {spec.license}"]
    if spec.embedding:
        e = spec.embedding
        lines.append(f"{t('类型', 'kind')}: {kind_text(spec.kind)} · {t('池化', 'pooling')} {e.pooling} · "
                     f"{t('维度', 'dimensions')} {e.dimensions} · {t('最长', 'max')} {e.max_tokens} tokens · "
                     f"{t('归一化', 'normalised') if e.normalized else t('不归一化', 'not normalised')}")
        if e.query_prefix:
            lines.append(f"{t('查询前缀', 'query prefix')}: {e.query_prefix!r}")
    if spec.trust_remote_code:
        lines.append(t(f"需要远程代码（--trust-remote-code，写于 transformers {spec.remote_code_transformers}）",
                       f"needs remote code (--trust-remote-code, written for transformers {spec.remote_code_transformers})"))
    lines += _thinking_lines(spec) + _name_lines(spec)
    lines += [f"  · {v.name}: {v.format}, {v.bits_per_weight} bpw, {human_bytes(v.size_bytes)}{' (est)' if v.size_estimated else ''}" for v in spec.variants]
    lines += [f"  C-Eval/CMMLU {s.benchmark} {s.score} ({s.protocol}; {s.source})" for s in spec.scores]
    lines += [f"  [{t('笔记', 'write-up')} {n.seed}] {n.note}" for n in spec.seed_notes]
    if spec.unsupported:
        lines.append(f"[yellow]{spec.unsupported}[/]")
    return "\n".join(lines)


THINKING_WORDS = {"hybrid": ("混合（可开关）", "hybrid (can be switched off)"), "always": ("总是思考", "always thinks"),
                  "never": ("不思考", "never thinks")}


def _thinking_lines(spec: ModelSpec) -> list[str]:
    """Thinking mode, its parser and budget, and the sampling the card gives with thinking off."""
    zh, en = THINKING_WORDS[spec.thinking]
    line = f"{t('思考模式', 'thinking')}: {spec.thinking} · {t(zh, en)}"
    if spec.reasoning_parser:
        line += f" · parser {spec.reasoning_parser}"
    if spec.thinking_budget:
        line += f" · {t('思考预留', 'thinking budget')} {spec.thinking_budget} tokens"
    g, lines = spec.generation, [line]
    lines.append(f"{t('推荐采样', 'sampling')}: temperature {g.temperature}, top_p {g.top_p}, top_k {g.top_k}"
                 + (f", min_p {g.min_p}" if g.min_p else ""))
    if spec.generation_no_think:
        n = spec.generation_no_think
        lines[-1] += f"; {t('关闭思考时', 'thinking off')}: temperature {n.temperature}, top_p {n.top_p}, top_k {n.top_k}"
    return lines


def _name_lines(spec: ModelSpec) -> list[str]:
    """Other names it answers to, how it calls tools, and its draft model."""
    lines = [f"{t('别名', 'aliases')}: {', '.join(spec.aliases)}"] if spec.aliases else []
    if spec.tool_protocol:
        lines.append(f"{t('工具调用', 'tool calls')}: {spec.tool_protocol}")
    if spec.draft:
        lines.append(f"{t('草稿模型（推测解码）', 'draft model (speculative decoding)')}: {spec.draft}")
    return lines


def kind_text(kind: str) -> str:
    """chat / embedding / rerank in the user's language."""
    return {"chat": t("对话", "chat"), "embedding": t("嵌入", "embedding"), "rerank": t("重排", "rerank")}[kind]


def installed_row(m) -> dict:
    return {"id": m.id, "variant": m.variant, "path": str(m.path), "size_bytes": m.size}


def load_with_status(console: Console, ref: str, **kwargs) -> Loaded:
    """Load a model behind a spinner (loading a large GGUF takes seconds to minutes)."""
    shown = escape(one_line(ref))  # a status line is markup: the name must not be
    with console.status(t(f"正在加载 {shown} …", f"Loading {shown} …")):
        return load(ref, **kwargs)
