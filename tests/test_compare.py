"""`danlu compare`: the dialogue script, model references with settings, and the side-by-side reports."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

import tiny_models as tm
from danlu.compare import (CompareSettings, ModelRun, Turn, TurnResult, dialogues, load_script, parse_ref,
                           render_html, render_markdown, run_compare, write_reports)
from danlu.errors import DanluError


def compare_app() -> typer.Typer:
    from danlu.cli import friendly
    from danlu.evaluate.cli import compare_command

    app = typer.Typer()
    app.command("compare")(friendly(compare_command))
    app.command("noop")(lambda: None)
    return app


def test_the_default_script_is_a_chinese_multi_turn_dialogue():
    script = load_script(None)
    groups = dialogues(script)
    assert len(script) >= 6 and len(groups) >= 3
    assert all(len(turns) >= 1 for turns in groups.values()) and max(len(t) for t in groups.values()) >= 2
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in turn.user) for turn in script)


def test_a_script_line_without_user_text_is_an_error(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"dialogue": "a", "user": "你好"}\n{"dialogue": "a", "assistant": "x"}\n', encoding="utf-8")
    with pytest.raises(DanluError, match="line 2"):
        load_script(path)


def test_model_references_carry_settings():
    assert parse_ref("gemma-3-270m") == ("gemma-3-270m", {})
    assert parse_ref("gemma-3-270m@temperature=0.2,top_k=5") == ("gemma-3-270m", {"temperature": 0.2, "top_k": 5})
    with pytest.raises(DanluError, match="colour"):
        parse_ref("m@colour=red")


def _run(label: str, reply: str) -> ModelRun:
    run = ModelRun(label, label, load_s=1.5, memory_mb=300.0, weights_mb=250.0)
    run.turns = [TurnResult("问候", "你好", reply, 0.5, 0.1, 10, 25.0)]
    return run


def test_reports_put_models_side_by_side_and_escape_replies(tmp_path):
    script = [Turn("问候", "你好")]
    runs = [_run("a", "<b>你好</b>"), _run("b", "您好！")]
    html_path, md_path = write_reports(runs, script, tmp_path / "out" / "report.html")
    page = html_path.read_text(encoding="utf-8")
    assert "&lt;b&gt;你好&lt;/b&gt;" in page and "<b>你好</b>" not in page
    assert page.index(">a<") < page.index(">b<") and "tokens/s" in page
    table = md_path.read_text(encoding="utf-8")
    assert "| a | 1.5 | 300.0 | 250.0 | 0.5 | 25.0 | 10 |  |" in table and "您好！" in table
    assert render_markdown(runs, script) == table and render_html(runs, script) == page


def test_compare_two_tiny_models_writes_both_reports(tmp_path):
    first, second = tm.qwen2(tmp_path / "qwen2"), tm.llama(tmp_path / "llama")
    script = tmp_path / "script.jsonl"
    script.write_text('{"dialogue": "问候", "user": "你好"}\n{"dialogue": "问候", "user": "今天天气很好。"}\n', encoding="utf-8")
    out = tmp_path / "cmp.html"
    result = CliRunner().invoke(compare_app(), ["compare", str(first), f"{second}@temperature=0", "--prompts", str(script),
                                                "--out", str(out), "--max-tokens", "8", "--ctx", "256"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("["):])
    assert [s["turns"] for s in summary] == [2, 2] and all(s["error"] is None for s in summary)
    assert out.exists() and out.with_suffix(".md").exists() and "今天天气很好。" in out.read_text(encoding="utf-8")


def test_compare_needs_two_models():
    result = CliRunner().invoke(compare_app(), ["compare", "only-one"])
    assert result.exit_code == 1 and "two models" in result.output


@pytest.mark.weights
def test_compare_gemma_with_itself_at_two_settings(home_with_models, tmp_path):
    script = [Turn("常识", "中国的首都是哪座城市？"), Turn("常识", "那里有哪些著名的景点？")]
    runs = run_compare(["gemma-3-270m@temperature=0", "gemma-3-270m@temperature=1.0,top_p=0.8"], script,
                       CompareSettings(max_tokens=24, n_ctx=1024))
    assert [r.label for r in runs] == ["gemma-3-270m@temperature=0", "gemma-3-270m@temperature=1.0,top_p=0.8"]
    for run in runs:
        assert run.error is None and len(run.turns) == 2
        assert run.weights_mb > 200 and run.memory_mb > 0 and all(t.latency_s > 0 for t in run.turns)
    html_path, md_path = write_reports(runs, script, tmp_path / "gemma.html")
    assert "中国的首都是哪座城市？" in html_path.read_text(encoding="utf-8") and md_path.exists()


@pytest.mark.weights
def test_compare_runs_the_three_real_models_side_by_side(home_with_models, qwen05_path, tmp_path):
    """Issue 20: with qwen2.5-coder-0.5b-instruct pulled, compare (and the arena) have three real models."""
    models = ["gemma-3-270m", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
    script = [Turn("常识", "中国的首都是哪座城市？只回答城市名。")]
    runs = run_compare(models, script, CompareSettings(max_tokens=12, temperature=0.0, n_ctx=512))
    assert [r.label for r in runs] == models
    for run in runs:
        assert run.error is None and len(run.turns) == 1 and run.turns[0].reply.strip()
    assert "北京" in runs[1].turns[0].reply + runs[2].turns[0].reply  # the two chat models know it
    html_path, _ = write_reports(runs, script, tmp_path / "three.html")
    page = html_path.read_text(encoding="utf-8")
    assert all(model in page for model in models)
