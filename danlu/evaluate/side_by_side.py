"""A hybrid model's gen run with thinking on and off, side by side: markdown table, PNG chart and JSON.

Both runs answered the same questions; each was scored and stored on its own (report.py). This module only
puts them next to each other: accuracy per subject and overall (macro, the official score, and micro), then
per question the mean thinking tokens and seconds, answer tokens, total seconds, and how many replies were cut
inside their thinking. The files go in the folder of the run key with `thinking="both"`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .datasets import Suite
from .report import Scores, cjk_font, results_json, run_title
from .run import EvalConfig, Prediction
from .thinking import MODES, UNFINISHED, ThinkingSummary, summarize

Runs = dict[str, tuple[Scores, list[Prediction]]]  # "on" / "off" -> that run's scores and predictions
LABELS = {"on": "思考 on", "off": "不思考 off"}
COLORS = {"on": "#C44E52", "off": "#4C72B0"}


def subjects_of(runs: Runs) -> list[str]:
    """Every subject either run scored, in the first run's order."""
    keys: dict[str, None] = {}
    for mode in MODES:
        keys.update(dict.fromkeys(runs[mode][0].subjects))
    return list(keys)


def markdown(runs: Runs, suite: Suite, title: str) -> str:
    """Accuracy per subject for both modes, both averages, then where the replies' tokens and seconds went."""
    head = " | ".join(f"{LABELS[m]} acc %" for m in MODES)
    lines = [f"## {title}", "", f"| 科目 subject | 题数 n | {head} |", "|---|---:|" + "---:|" * len(MODES)]
    for key in subjects_of(runs):
        accs = " | ".join(_acc(runs[m][0].subjects.get(key)) for m in MODES)
        n = max(runs[m][0].counts.get(key, 0) for m in MODES)
        lines.append(f"| {suite.subject(key).name_zh} {key} | {n} | {accs} |")
    n_all = max(runs[m][0].n_questions for m in MODES)
    lines.append(f"| **平均 average（macro，官方口径）** | {n_all} | "
                 + " | ".join(f"**{runs[m][0].average:.2f}**" for m in MODES) + " |")
    lines.append("| 微平均 micro average（按题数加权） | | " + " | ".join(f"{runs[m][0].micro_average:.2f}" for m in MODES) + " |")
    return "\n".join(lines + [""] + _reply_lines({m: summarize(runs[m][1]) for m in MODES}))


def _acc(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _reply_lines(summaries: dict[str, ThinkingSummary]) -> list[str]:
    rows = (("思考 token thinking tokens", "reasoning_tokens", "{:.1f}"), ("思考秒数 thinking s", "reasoning_s", "{:.2f}"),
            ("作答 token answer tokens", "answer_tokens", "{:.1f}"), ("总秒数 total s", "total_s", "{:.2f}"))
    lines = ["| 每题平均 per question | " + " | ".join(LABELS[m] for m in MODES) + " |", "|---|" + "---:|" * len(MODES)]
    for label, name, form in rows:
        lines.append(f"| {label} | " + " | ".join(form.format(getattr(summaries[m], name)) for m in MODES) + " |")
    lines.append(f"| {UNFINISHED} | "
                 + " | ".join(f"{summaries[m].unfinished} / {summaries[m].n}" for m in MODES) + " |")
    return lines + [""]


def results(runs: Runs, config: EvalConfig) -> dict:
    """Both runs in report.results_json's shape under `modes`, and the comparison itself on top."""
    summaries = {m: summarize(runs[m][1]) for m in MODES}
    per_mode = {m: results_json(runs[m][0], runs[m][1], replace(config, thinking=m)) for m in MODES}
    return {
        "config": {"model": config.model, "suite": config.suite, "split": config.split, "protocol": config.protocol,
                   "shots": config.shots, "thinking": "both", "max_tokens": config.max_tokens},
        "side_by_side": {
            "subjects": {k: {m: runs[m][0].subjects.get(k) for m in MODES} for k in subjects_of(runs)},
            "average": {m: runs[m][0].average for m in MODES},
            "micro_average": {m: runs[m][0].micro_average for m in MODES},
            "thinking": {m: summaries[m].to_dict() for m in MODES},
        },
        "modes": per_mode,
    }


def chart(runs: Runs, suite: Suite, path: Path, title: str) -> Path:
    """Left: accuracy per subject, a bar per mode, each mode's macro average as a line. Right: mean thinking
    tokens per question, with the mean thinking seconds written on the bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = subjects_of(runs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 2.4 + 0.45 * len(keys)), width_ratios=(3, 1))
    _accuracy_bars(left, runs, suite, keys, bool(cjk_font()))
    _thinking_bars(right, {m: summarize(runs[m][1]) for m in MODES})
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _accuracy_bars(ax, runs: Runs, suite: Suite, keys: list[str], chinese: bool) -> None:
    rows = range(len(keys))[::-1]  # the first subject on top
    height = 0.8 / len(MODES)
    for i, mode in enumerate(MODES):
        scores = runs[mode][0]
        ax.barh([r + (0.4 - height / 2 - i * height) for r in rows], [scores.subjects.get(k, 0.0) for k in keys],
                height=height, color=COLORS[mode], label=f"thinking {mode}")
        ax.axvline(scores.average, color=COLORS[mode], linestyle="--", linewidth=1,
                   label=f"{mode}: macro average {scores.average:.1f}")
    ax.set_yticks(list(rows), [suite.subject(k).name_zh if chinese else suite.subject(k).name_en for k in keys])
    ax.axvline(25, color="grey", linestyle=":", linewidth=1, label="chance 25")
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy %")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8)  # below: bars reach 100


def _thinking_bars(ax, summaries: dict[str, ThinkingSummary]) -> None:
    bars = ax.bar(list(MODES), [summaries[m].reasoning_tokens for m in MODES], color=[COLORS[m] for m in MODES])
    for bar, mode in zip(bars, MODES):
        ax.annotate(f"{summaries[mode].reasoning_s:.1f} s", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, max([summaries[m].reasoning_tokens for m in MODES] + [1.0]) * 1.15)
    ax.set_ylabel("mean thinking tokens per question")
    ax.set_xlabel("thinking")


def write_outputs(folder: Path, runs: Runs, suite: Suite, config: EvalConfig) -> dict[str, Path]:
    """report.md, chart.png and results.json of the comparison in `folder`."""
    title = run_title(config, suite)
    paths = {"markdown": folder / "report.md", "chart": folder / "chart.png", "json": folder / "results.json"}
    folder.mkdir(parents=True, exist_ok=True)
    paths["markdown"].write_text(markdown(runs, suite, title), encoding="utf-8")
    chart(runs, suite, paths["chart"], title)
    paths["json"].write_text(json.dumps(results(runs, config), ensure_ascii=False, indent=2), encoding="utf-8")
    return paths
