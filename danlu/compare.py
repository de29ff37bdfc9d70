"""Side-by-side dialogue reports: one multi-turn script through each model, replies and speed in HTML and markdown.

What write-up 003 did by hand for six models. A script is JSONL, one user turn a line:
`{"dialogue": "自我介绍", "user": "你好，请介绍一下你自己。"}` (optional `"system"` on a dialogue's first
line); lines with the same `dialogue` are one conversation, in order. A model reference may carry
settings after `@`, e.g. `gemma-3-270m@temperature=0.2,top_p=0.8`, so one model can be compared with
itself. Models load one at a time (and are closed after), so memory is each model's own: resident
memory after its dialogues minus before loading, and the file size of its weights.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Callable

from danlu.errors import DanluError

NUMERIC_SETTINGS = {"temperature": float, "top_p": float, "top_k": int, "max_tokens": int, "seed": int,
                    "repetition_penalty": float}


@dataclass(frozen=True)
class Turn:
    dialogue: str
    user: str
    system: str | None = None


@dataclass(frozen=True)
class CompareSettings:
    max_tokens: int = 256
    temperature: float | None = None  # None: each model's recommended value
    seed: int = 0
    n_ctx: int | None = None


@dataclass
class TurnResult:
    dialogue: str
    user: str
    reply: str
    latency_s: float
    ttft_s: float
    tokens: int
    tokens_per_s: float


@dataclass
class ModelRun:
    label: str
    ref: str
    load_s: float = 0.0
    memory_mb: float = 0.0
    weights_mb: float = 0.0
    turns: list[TurnResult] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> dict:
        done = self.turns
        tokens = sum(t.tokens for t in done)
        decode_s = sum(t.latency_s - t.ttft_s for t in done)
        return {"model": self.label, "load_s": round(self.load_s, 2), "memory_mb": round(self.memory_mb, 1),
                "weights_mb": round(self.weights_mb, 1), "turns": len(done), "tokens": tokens,
                "mean_latency_s": round(sum(t.latency_s for t in done) / len(done), 2) if done else None,
                "tokens_per_s": round(tokens / decode_s, 2) if decode_s > 0 else None, "error": self.error}


def load_script(path: Path | None) -> list[Turn]:
    """The JSONL script, or the default Chinese one shipped in danlu/data."""
    if path is None:
        text = (resources.files("danlu") / "data" / "compare_default.jsonl").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    turns = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            turns.append(_parse_turn(json.loads(line), number))
    if not turns:
        raise DanluError(f"对话脚本是空的 / the dialogue script is empty: {path}")
    return turns


def _parse_turn(row: dict, number: int) -> Turn:
    if not isinstance(row.get("user"), str):
        raise DanluError(f"脚本第 {number} 行缺少 \"user\" / line {number} of the script has no \"user\" text")
    return Turn(str(row.get("dialogue", "default")), row["user"], row.get("system"))


def dialogues(script: list[Turn]) -> dict[str, list[Turn]]:
    grouped: dict[str, list[Turn]] = {}
    for turn in script:
        grouped.setdefault(turn.dialogue, []).append(turn)
    return grouped


def parse_ref(ref: str) -> tuple[str, dict]:
    """`model@temperature=0.2,top_p=0.8` -> ("model", {"temperature": 0.2, "top_p": 0.8})."""
    if "@" not in ref:
        return ref, {}
    model, _, spec = ref.partition("@")
    overrides = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in NUMERIC_SETTINGS:
            raise DanluError(f"不认识的设置 {key!r}（可用：{', '.join(NUMERIC_SETTINGS)}）/ unknown setting {key!r}")
        overrides[key] = NUMERIC_SETTINGS[key](value)
    return model, overrides


def _labels(refs: list[str]) -> list[str]:
    """Unique labels: a reference given twice gets #2, #3."""
    seen: dict[str, int] = {}
    labels = []
    for ref in refs:
        seen[ref] = seen.get(ref, 0) + 1
        labels.append(ref if seen[ref] == 1 else f"{ref} #{seen[ref]}")
    return labels


def run_compare(refs: list[str], script: list[Turn], settings: CompareSettings,
                on_status: Callable[[str], None] = lambda text: None) -> list[ModelRun]:
    """Each model in turn: load, run every dialogue, measure, close. A model that fails is reported, not fatal."""
    runs = []
    for label, ref in zip(_labels(refs), refs):
        on_status(f"▶ {label}")
        run = ModelRun(label, ref)
        try:
            _run_model(run, script, settings)
        except DanluError as exc:
            run.error = str(exc)
        runs.append(run)
    return runs


def _run_model(run: ModelRun, script: list[Turn], settings: CompareSettings) -> None:
    from danlu.loader import load

    model, overrides = parse_ref(run.ref)
    before = _rss_mb()
    start = time.perf_counter()
    loaded = load(model, n_ctx=settings.n_ctx)
    run.load_s = time.perf_counter() - start
    run.weights_mb = _size_mb(loaded.resolved.path)
    try:
        params = _params(loaded.params, settings, overrides)
        for turns in dialogues(script).values():
            conversation = loaded.conversation(replace(params), system=turns[0].system)
            run.turns.extend(_run_turn(conversation, turn) for turn in turns)
        run.memory_mb = max(_rss_mb() - before, 0.0)
    finally:
        loaded.engine.close()


def _params(defaults, settings: CompareSettings, overrides: dict):
    params = replace(defaults, max_tokens=settings.max_tokens, seed=settings.seed)
    if settings.temperature is not None:
        params = replace(params, temperature=settings.temperature)
    return replace(params, **overrides)


def _run_turn(conversation, turn: Turn) -> TurnResult:
    start = time.perf_counter()
    parts, final = [], None
    for chunk in conversation.send(turn.user):
        parts.append(chunk.text)
        final = chunk if chunk.timings else final
    latency = time.perf_counter() - start
    timings = final.timings if final else None
    tokens = timings.completion_tokens if timings else 0
    return TurnResult(turn.dialogue, turn.user, conversation.history[-1].content if conversation.history else "".join(parts),
                      latency, timings.ttft_s if timings else latency, tokens, timings.decode_tps if timings else 0.0)


def _rss_mb() -> float:
    """Resident memory of this process now (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _size_mb(path: Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


# --- reports ----------------------------------------------------------------------------------------
def write_reports(runs: list[ModelRun], script: list[Turn], out: Path) -> tuple[Path, Path]:
    """`out` (HTML) and the same name with .md beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md_path = out.with_suffix(".md")
    out.write_text(render_html(runs, script), encoding="utf-8")
    md_path.write_text(render_markdown(runs, script), encoding="utf-8")
    return out, md_path


def _summary_rows(runs: list[ModelRun]) -> list[list[str]]:
    rows = []
    for run in runs:
        s = run.summary()
        rows.append([run.label, f"{s['load_s']}", f"{s['memory_mb']}", f"{s['weights_mb']}",
                     f"{s['mean_latency_s']}", f"{s['tokens_per_s']}", str(s["tokens"]), run.error or ""])
    return rows


SUMMARY_HEADER = ["模型 model", "加载 load s", "内存 memory MB (RSS)", "权重 weights MB", "平均延迟 mean latency s",
                  "生成速度 tokens/s", "生成 tokens", "错误 error"]


def _reply(run: ModelRun, index: int) -> TurnResult | None:
    return run.turns[index] if index < len(run.turns) else None


def render_markdown(runs: list[ModelRun], script: list[Turn]) -> str:
    lines = ["# 模型对比 / Model comparison", "", "| " + " | ".join(SUMMARY_HEADER) + " |",
             "|" + "---|" * len(SUMMARY_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in _summary_rows(runs)]
    for index, turn in enumerate(script):
        lines += ["", f"## {turn.dialogue} · {index + 1}", "", f"> 用户 / user: {turn.user}", ""]
        for run in runs:
            result = _reply(run, index)
            if result:
                reply = result.reply.replace("\n", "<br>")
                lines.append(f"- **{run.label}** ({result.latency_s:.2f} s, {result.tokens} tok, {result.tokens_per_s:.1f} tok/s): {reply}")
    return "\n".join(lines) + "\n"


def render_html(runs: list[ModelRun], script: list[Turn]) -> str:
    """One self-contained page: summary table, then a row per turn with a column per model."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in SUMMARY_HEADER)
    summary = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in _summary_rows(runs))
    columns = "".join(f"<th>{esc(run.label)}</th>" for run in runs)
    body = "".join(_html_turn_row(index, turn, runs) for index, turn in enumerate(script))
    return (
        "<!doctype html><html lang=\"zh\"><head><meta charset=\"utf-8\"><title>模型对比 / Model comparison</title>"
        f"<style>{CSS}</style></head><body><h1>模型对比 / Model comparison</h1>"
        f"<table class=\"summary\"><tr>{head}</tr>{summary}</table>"
        f"<table class=\"replies\"><tr><th>对话 / dialogue</th><th>用户 / user</th>{columns}</tr>{body}</table></body></html>\n"
    )


def _html_turn_row(index: int, turn: Turn, runs: list[ModelRun]) -> str:
    esc = html.escape
    cells = []
    for run in runs:
        result = _reply(run, index)
        if result is None:
            cells.append("<td class=\"missing\">—</td>")
            continue
        meta = f"{result.latency_s:.2f} s · {result.tokens} tok · {result.tokens_per_s:.1f} tok/s"
        cells.append(f"<td><div class=\"reply\">{esc(result.reply)}</div><div class=\"meta\">{meta}</div></td>")
    return f"<tr><td>{esc(turn.dialogue)} · {index + 1}</td><td>{esc(turn.user)}</td>{''.join(cells)}</tr>"


CSS = ("body{font-family:system-ui,'Noto Sans CJK SC',sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
       "td,th{border:1px solid #ccc;padding:.4em .6em;vertical-align:top}th{background:#f4f4f4}"
       ".reply{white-space:pre-wrap;max-width:40em}.meta{color:#777;font-size:.85em;margin-top:.4em}")
