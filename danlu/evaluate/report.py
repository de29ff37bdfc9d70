"""Scores and what is written from them: markdown table, PNG chart, results JSON, submission JSON, the leaderboard.

The headline number is the official one: the macro average (mean of per-subject accuracies), and each
category is the mean of its subjects. The micro average (all correct / all questions, what
lm-evaluation-harness's C-Eval group reports) is given too, always labelled as micro. Accuracies are
percentages. A `gen` run also reports where its replies went: mean thinking tokens and seconds per question,
and how many replies were cut inside their thinking (thinking.py); the side-by-side report of a hybrid model's
two modes is side_by_side.py. Stored results live in the `eval_results` table (sessions.py), with the thinking
mode, so the leaderboard can show them beside the catalog's published scores, each with its source and protocol.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from danlu.i18n import t

from .datasets import Suite
from .run import EvalConfig, Prediction
from .thinking import UNFINISHED, ThinkingSummary, summarize

#: What a gen prediction carries beyond its letter (results.json); the full reply stays in predictions.jsonl.
GEN_FIELDS = ("reasoning_tokens", "reasoning_s", "answer_tokens", "total_s", "thinking_unfinished")


@dataclass(frozen=True)
class Scores:
    subjects: dict[str, float]
    counts: dict[str, int]
    categories: dict[str, float]
    average: float  # macro: mean over subjects (the official score)
    micro_average: float  # all correct / all questions
    n_questions: int


def _percent(correct: int, total: int) -> float:
    return round(100.0 * correct / total, 2) if total else 0.0


def score(predictions: Iterable[Prediction], suite: Suite) -> Scores:
    """Per-subject accuracy; categories and the average are macro averages over subjects. Questions
    without an answer key (C-Eval test) are not scored."""
    right: dict[str, int] = {}
    total: dict[str, int] = {}
    for p in (p for p in predictions if p.answer is not None):
        total[p.subject] = total.get(p.subject, 0) + 1
        right[p.subject] = right.get(p.subject, 0) + int(p.correct)
    exact = {s: 100.0 * right[s] / total[s] for s in total}  # averages from unrounded accuracies
    categories = {}
    for cat in suite.categories:
        members = [exact[s] for s in exact if cat in suite.subject(s).categories]
        if members:
            categories[cat] = round(sum(members) / len(members), 2)
    average = round(sum(exact.values()) / len(exact), 2) if exact else 0.0
    n = sum(total.values())
    subjects = {s: round(acc, 2) for s, acc in exact.items()}
    return Scores(subjects, total, categories, average, _percent(sum(right.values()), n), n)


def results_json(scores: Scores, predictions: list[Prediction], config: EvalConfig) -> dict:
    """The documented shape: results (subjects, categories, average) and every prediction; extras are labelled.
    A gen run adds the thinking summary and each prediction's tokens and seconds."""
    gen = config.protocol == "gen"
    data = {
        "results": {"subjects": scores.subjects, "categories": scores.categories, "average": scores.average},
        "micro_average": scores.micro_average,
        "n_questions": scores.n_questions,
        "config": {"model": config.model, "suite": config.suite, "split": config.split,
                   "protocol": config.protocol, "shots": config.shots, "thinking": config.thinking},
        "predictions": [_prediction_row(p, gen) for p in predictions],
    }
    if gen:
        data["thinking"] = summarize(predictions).to_dict()
    return data


def _prediction_row(p: Prediction, gen: bool) -> dict:
    row = {"subject": p.subject, "id": p.id, "pred": p.pred, "answer": p.answer}
    return {**row, **{name: getattr(p, name) for name in GEN_FIELDS}} if gen else row


def submission_json(predictions: list[Prediction]) -> dict:
    """C-Eval's test submission: {subject: {"id": "A", …}}; an unreadable reply is submitted as ""."""
    out: dict[str, dict[str, str]] = {}
    for p in predictions:
        out.setdefault(p.subject, {})[str(p.id)] = p.pred or ""
    return out


def markdown(scores: Scores, suite: Suite, title: str, thinking: ThinkingSummary | None = None) -> str:
    """Per-subject table (with category), then categories and both averages; for gen, where the replies went."""
    lines = [f"## {title}", "", "| 科目 subject | 类别 category | 题数 n | 准确率 acc % |", "|---|---|---:|---:|"]
    for key, acc in scores.subjects.items():
        subject = suite.subject(key)
        lines.append(f"| {subject.name_zh} {key} | {' / '.join(subject.categories)} | {scores.counts[key]} | {acc:.2f} |")
    lines += ["", "| 类别 category | 准确率 acc %（科目平均 macro） |", "|---|---:|"]
    lines += [f"| {cat} | {acc:.2f} |" for cat, acc in scores.categories.items()]
    lines += [f"| **平均 average（macro，官方口径）** | **{scores.average:.2f}** |",
              f"| 微平均 micro average（按题数加权，非官方口径） | {scores.micro_average:.2f} |", ""]
    return "\n".join(lines + (thinking_lines(thinking) if thinking is not None else []))


def thinking_lines(summary: ThinkingSummary) -> list[str]:
    """A gen run's replies: mean thinking tokens and seconds per question, and the replies cut while thinking."""
    return ["| 每题平均 per question | |", "|---|---:|",
            f"| 思考 token thinking tokens | {summary.reasoning_tokens:.1f} |",
            f"| 思考秒数 thinking s | {summary.reasoning_s:.2f} |",
            f"| 作答 token answer tokens | {summary.answer_tokens:.1f} |",
            f"| 总秒数 total s | {summary.total_s:.2f} |",
            f"| {UNFINISHED} | {summary.unfinished} / {summary.n} |", ""]


def chart(scores: Scores, suite: Suite, path: Path, title: str) -> Path:
    """Horizontal bars per subject, coloured by (first) category, with the macro average as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    font = cjk_font()
    keys = list(scores.subjects)
    labels = [suite.subject(k).name_zh if font else suite.subject(k).name_en for k in keys]
    colors = [_color(suite.categories.index(suite.subject(k).categories[0])) for k in keys]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * len(keys)))
    ax.barh(labels[::-1], [scores.subjects[k] for k in keys][::-1], color=colors[::-1])
    ax.axvline(scores.average, color="black", linestyle="--", linewidth=1, label=f"macro average {scores.average:.1f}")
    ax.axvline(25, color="grey", linestyle=":", linewidth=1, label="chance 25")
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy %")
    ax.set_title(title)
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], *_category_patches(suite, keys)], loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _category_patches(suite: Suite, keys: list[str]) -> list:
    from matplotlib.patches import Patch

    shown = dict.fromkeys(suite.subject(k).categories[0] for k in keys)
    return [Patch(color=_color(suite.categories.index(cat)), label=cat) for cat in shown]


def _color(index: int) -> str:
    return ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")[index % 6]


def cjk_font() -> str | None:
    """A font with Chinese glyphs if the system has one (Noto CJK, WenQuanYi…); else labels stay English."""
    from matplotlib import font_manager, rcParams

    for entry in font_manager.fontManager.ttflist:
        if any(tag in entry.name for tag in ("CJK", "WenQuanYi", "Hei", "Song", "Kai")):
            rcParams["font.sans-serif"] = [entry.name, *rcParams["font.sans-serif"]]
            return entry.name
    return None


def run_title(config: EvalConfig, suite: Suite) -> str:
    mode = {"on": " · thinking on", "off": " · thinking off", "both": " · thinking on vs off"}.get(config.thinking or "", "")
    return f"{config.model} · {suite.name} {config.split} · {config.protocol} {config.shots}-shot{mode}"


# --- stored results (the leaderboard) -----------------------------------------------------------
STORED_COLUMNS = ("run_key", "model", "suite", "split", "protocol", "shots", "n_questions", "average",
                  "micro_average", "results", "data", "created", "thinking")


def store(db_path: Path, config: EvalConfig, scores: Scores, summary: ThinkingSummary | None = None) -> None:
    """Insert or replace this run's row in eval_results, with its thinking mode (and, for gen, the summary)."""
    from danlu.sessions import SessionStore

    results = {"subjects": scores.subjects, "categories": scores.categories}
    if summary is not None:
        results["thinking"] = summary.to_dict()
    sessions = SessionStore(db_path)
    try:
        with sessions.db:
            sessions.db.execute(
                f"INSERT OR REPLACE INTO eval_results ({', '.join(STORED_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(STORED_COLUMNS))})",
                (config.key(), config.model, config.suite, config.split, config.protocol, config.shots,
                 scores.n_questions, scores.average, scores.micro_average, json.dumps(results, ensure_ascii=False),
                 str(Path(config.data).resolve()), time.time(), config.thinking),
            )
    finally:
        sessions.close()


def leaderboard(db_path: Path, suite: str = "ceval") -> list[dict]:
    """Measured runs (source: this machine) and the catalog's published scores, best first."""
    rows = [*_measured_rows(db_path, suite), *_reference_rows(suite)]
    return sorted(rows, key=lambda r: -r["score"])


def _measured_rows(db_path: Path, suite: str) -> list[dict]:
    if not Path(db_path).exists():
        return []
    from danlu.sessions import SessionStore

    sessions = SessionStore(db_path)
    try:
        found = sessions.db.execute(
            "SELECT model, split, protocol, shots, n_questions, average, thinking FROM eval_results WHERE suite = ?",
            (suite,)).fetchall()
    finally:
        sessions.close()
    return [{"model": m, "score": avg, "kind": "measured", "source": t("本机测得", "measured here"),
             "protocol": f"{proto}, {shots}-shot, {split} ({n} {t('题', 'questions')}){_mode_label(mode)}",
             "thinking": mode}
            for m, split, proto, shots, n, avg, mode in found]


def _mode_label(mode: str | None) -> str:
    return {"on": t("，思考", ", thinking on"), "off": t("，不思考", ", thinking off")}.get(mode or "", "")


def _reference_rows(suite: str) -> list[dict]:
    from danlu import catalog

    return [{"model": spec.id, "score": s.score, "kind": "reference", "source": s.source,
             "protocol": f"{s.protocol}" + (f", {s.split}" if s.split else ""), "variant": s.variant,
             "split": s.split, "shots": s.shots}
            for spec in catalog.all_models() for s in spec.scores if s.benchmark == suite]


def write_outputs(folder: Path, scores: Scores, predictions: list[Prediction], suite: Suite,
                  config: EvalConfig) -> dict[str, Path]:
    """report.md, chart.png, results.json and (test split) submission.json in the run's folder."""
    title = run_title(config, suite)
    thinking = summarize(predictions) if config.protocol == "gen" else None
    paths = {"markdown": folder / "report.md", "chart": folder / "chart.png", "json": folder / "results.json"}
    paths["markdown"].write_text(markdown(scores, suite, title, thinking), encoding="utf-8")
    chart(scores, suite, paths["chart"], title)
    paths["json"].write_text(json.dumps(results_json(scores, predictions, config), ensure_ascii=False, indent=2), encoding="utf-8")
    if config.split == "test" and suite.name == "ceval":  # CMMLU's test answers are public: no submission
        paths["submission"] = folder / "submission.json"
        paths["submission"].write_text(json.dumps(submission_json(predictions), ensure_ascii=False, indent=1), encoding="utf-8")
    return paths
