"""Typer functions for `danlu eval` and `danlu compare`; danlu/cli/commands.py registers them. Printing only: the
work is in danlu.evaluate and danlu.compare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from danlu.config import get_settings
from danlu.errors import DanluError
from danlu.i18n import t
from danlu.terminal import plain

console = Console()
err = Console(stderr=True)


def eval_command(
    model: str = typer.Argument(..., help="目录 id 或路径 / catalog id or path"),
    data: Path = typer.Option(..., "--data", help="C-Eval / CMMLU 数据目录（含 dev/ val/ test/）/ data folder"),
    suite: str = typer.Option("ceval", "--suite", help="ceval | cmmlu"),
    split: str = typer.Option("val", "--split", help="val | test（CMMLU 只有 test）"),
    protocol: str = typer.Option("ao", "--protocol", help="ao | ppl | gen"),
    shots: int = typer.Option(5, "--shots", help="0 | 5：dev 中的示例数 / few-shot examples from dev"),
    subjects: Optional[List[str]] = typer.Option(None, "--subjects", help="只评这些科目（可重复）/ only these subjects"),
    limit: Optional[int] = typer.Option(None, "--limit", help="每科最多 N 题 / at most N questions per subject"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="把结果和每题预测写成 JSON / write results + predictions"),
    ctx: Optional[int] = typer.Option(None, "--ctx", help="上下文长度 / context length"),
    thinking: Optional[str] = typer.Option(
        None, "--thinking", help="gen，混合思考模型：on | off | both（两种各跑一遍，并排报告）/ gen on a hybrid model: "
                                 "on | off | both (runs each, reports them side by side)"),
    max_tokens: Optional[int] = typer.Option(
        None, "--max-tokens", min=1, help="gen：思考预算（token，默认取目录的 thinking_budget），作答另有 64 个 / gen: the "
                                          "thinking budget in tokens (default: the catalog's), plus 64 for the answer"),
) -> None:
    """C-Eval / CMMLU 评测（中断后重跑同一命令会接着跑）/ evaluate on C-Eval or CMMLU (a killed run resumes)."""
    from danlu.cli import views
    from danlu.evaluate import EvalConfig, run_evaluation, run_thinking_modes

    if split == "val" and suite == "cmmlu":
        split = "test"  # CMMLU has no val split; its test answers are public
    settings = get_settings()
    subject_list = tuple(s for item in (subjects or []) for s in item.split(",") if s)
    config = EvalConfig(model=model, data=data, suite=suite, split=split, protocol=protocol, shots=shots,
                        subjects=subject_list, limit=limit, thinking=thinking, max_tokens=max_tokens)
    loaded = views.load_with_status(err, model, n_ctx=ctx)
    if thinking == "both":
        comparison = run_thinking_modes(loaded, config, settings.home, db_path=settings.db_path)
        for outcome in comparison.outcomes.values():
            _print_warnings(outcome)
            _print_scores(outcome)
        _print_side_by_side(comparison)
        paths = comparison.paths
    else:
        outcome = run_evaluation(loaded, config, settings.home, db_path=settings.db_path)
        _print_warnings(outcome)
        _print_scores(outcome)
        paths = outcome.paths
    if json_out:
        json_out.write_text(paths["json"].read_text(encoding="utf-8"), encoding="utf-8")
        console.print(t(f"已写入 {json_out}", f"wrote {json_out}"), highlight=False)


def _print_warnings(outcome) -> None:
    for warning in outcome.warnings:
        err.print(Text.assemble(("! ", "yellow"), plain(warning)))


def _print_scores(outcome) -> None:
    from danlu.evaluate.datasets import get_suite
    from danlu.evaluate.report import run_title

    suite, scores = get_suite(outcome.config.suite), outcome.scores
    table = Table(title=run_title(outcome.config, suite))
    for column in (t("科目", "subject"), t("类别", "category"), t("题数", "n"), t("准确率 %", "acc %")):
        table.add_column(column)
    for key, acc in scores.subjects.items():
        subject = suite.subject(key)
        table.add_row(f"{subject.name_zh} {key}", " / ".join(subject.categories), str(scores.counts[key]), f"{acc:.2f}")
    table.add_section()
    for cat, acc in scores.categories.items():
        table.add_row(cat, "", "", f"{acc:.2f}")
    table.add_row(t("平均（macro，官方口径）", "average (macro, official)"), "", str(scores.n_questions), f"{scores.average:.2f}")
    table.add_row(t("微平均（micro，按题数加权）", "micro average (per question)"), "", "", f"{scores.micro_average:.2f}")
    console.print(table)
    if outcome.config.protocol == "gen":
        _print_thinking(outcome)
    if outcome.answered_now:
        console.print(t(f"本次回答 {outcome.answered_now} 题，{outcome.questions_per_s:.2f} 题/秒",
                        f"answered {outcome.answered_now} questions, {outcome.questions_per_s:.2f} q/s"), highlight=False)
    for name, path in outcome.paths.items():
        console.print(f"  {name}: {path}", highlight=False, soft_wrap=True)


def _print_thinking(outcome) -> None:
    from danlu.evaluate.thinking import summarize

    s = summarize(outcome.predictions)
    console.print(t(f"每题平均：思考 {s.reasoning_tokens:.1f} token / {s.reasoning_s:.2f} 秒，作答 {s.answer_tokens:.1f} token，"
                    f"共 {s.total_s:.2f} 秒；思考未结束 {s.unfinished} 题（记为错）",
                    f"per question: thinking {s.reasoning_tokens:.1f} tokens / {s.reasoning_s:.2f} s, answer "
                    f"{s.answer_tokens:.1f} tokens, {s.total_s:.2f} s in all; thinking did not finish on {s.unfinished} "
                    "(counted wrong)"), highlight=False)


def _print_side_by_side(comparison) -> None:
    from danlu.evaluate.datasets import get_suite
    from danlu.evaluate.side_by_side import subjects_of
    from danlu.evaluate.thinking import MODES, summarize

    runs = {m: o.scores for m, o in comparison.outcomes.items()}
    suite = get_suite(comparison.outcomes["on"].config.suite)
    table = Table(title=t("思考 开 / 关 并排", "thinking on vs off"))
    for column in (t("科目", "subject"), t("思考 on %", "on %"), t("不思考 off %", "off %")):
        table.add_column(column)
    for key in subjects_of({m: (runs[m], []) for m in MODES}):
        table.add_row(f"{suite.subject(key).name_zh} {key}",
                      *(f"{runs[m].subjects[key]:.2f}" if key in runs[m].subjects else "—" for m in MODES))
    table.add_section()
    table.add_row(t("平均（macro）", "average (macro)"), *(f"{runs[m].average:.2f}" for m in MODES))
    summaries = {m: summarize(comparison.outcomes[m].predictions) for m in MODES}
    table.add_row(t("每题思考 token", "thinking tokens / q"), *(f"{summaries[m].reasoning_tokens:.1f}" for m in MODES))
    table.add_row(t("每题思考秒数", "thinking s / q"), *(f"{summaries[m].reasoning_s:.2f}" for m in MODES))
    console.print(table)
    for name, path in comparison.paths.items():
        console.print(f"  {name}: {path}", highlight=False, soft_wrap=True)


def compare_command(
    models: List[str] = typer.Argument(..., help="两个或更多模型（目录 id 或路径）/ two or more models"),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="对话脚本 JSONL（默认内置中文脚本）/ dialogue script"),
    out: Path = typer.Option(Path("report.html"), "--out", help="HTML 报告路径（同名 .md 一并写出）/ HTML report path"),
    max_tokens: int = typer.Option(256, "--max-tokens"),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="默认用各模型推荐值 / default: each model's own"),
    seed: int = typer.Option(0, "--seed"),
    ctx: Optional[int] = typer.Option(None, "--ctx"),
) -> None:
    """同一段多轮对话交给每个模型，写出并排报告 / run one dialogue script through each model, side by side."""
    from danlu.compare import CompareSettings, load_script, run_compare, write_reports

    if len(models) < 2:
        raise DanluError("至少需要两个模型 / compare needs at least two models")
    script = load_script(prompts)
    settings = CompareSettings(max_tokens=max_tokens, temperature=temperature, seed=seed, n_ctx=ctx)
    results = run_compare(models, script, settings, on_status=lambda text: err.print(plain(text)))
    html_path, md_path = write_reports(results, script, out)
    console.print(t(f"已写入 {html_path} 和 {md_path}", f"wrote {html_path} and {md_path}"), highlight=False)
    print(json.dumps([r.summary() for r in results], ensure_ascii=False, indent=1))  # plain: rich would wrap it
