"""Typer functions for `danlu eval` and `danlu compare`; danlu/cli.py registers them. Printing only: the
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
) -> None:
    """C-Eval / CMMLU 评测（中断后重跑同一命令会接着跑）/ evaluate on C-Eval or CMMLU (a killed run resumes)."""
    from danlu import views
    from danlu.evaluate import EvalConfig, run_evaluation

    if split == "val" and suite == "cmmlu":
        split = "test"  # CMMLU has no val split; its test answers are public
    settings = get_settings()
    subject_list = tuple(s for item in (subjects or []) for s in item.split(",") if s)
    config = EvalConfig(model=model, data=data, suite=suite, split=split, protocol=protocol, shots=shots,
                        subjects=subject_list, limit=limit)
    loaded = views.load_with_status(err, model, n_ctx=ctx)
    outcome = run_evaluation(loaded, config, settings.home, db_path=settings.db_path)
    for warning in outcome.warnings:
        err.print(Text.assemble(("! ", "yellow"), plain(warning)))
    _print_scores(outcome)
    if json_out:
        json_out.write_text(outcome.paths["json"].read_text(encoding="utf-8"), encoding="utf-8")
        console.print(t(f"已写入 {json_out}", f"wrote {json_out}"), highlight=False)


def _print_scores(outcome) -> None:
    from danlu.evaluate.datasets import get_suite

    suite, scores = get_suite(outcome.config.suite), outcome.scores
    table = Table(title=f"{outcome.config.model} · {suite.name} {outcome.config.split} · {outcome.config.protocol} {outcome.config.shots}-shot")
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
    if outcome.answered_now:
        console.print(t(f"本次回答 {outcome.answered_now} 题，{outcome.questions_per_s:.2f} 题/秒",
                        f"answered {outcome.answered_now} questions, {outcome.questions_per_s:.2f} q/s"), highlight=False)
    for name, path in outcome.paths.items():
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
