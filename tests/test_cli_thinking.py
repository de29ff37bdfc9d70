"""Thinking models in the terminal: `danlu chat` shows the thinking, folds it to one line once the answer starts,
stores only the answer, and switches with /think and /nothink; `danlu run --json` keeps `reasoning` apart from
`text`. A scripted engine with Qwen3's real template stands in for the model."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from danlu.backends.base import GenerationParams
from danlu.formats import from_template
from danlu.loader import Loaded, Resolved
from danlu.cli.oneshot import run_once
from danlu.cli.repl import ChatREPL
from danlu.sessions import SessionStore
from scripted import ScriptedEngine, template

THINKING = ["<think>\n让我", "想想……\n</think>\n\n", "答案是", " 42。"]


def loaded_with(engine: ScriptedEngine) -> Loaded:
    fmt = from_template(engine.template, control_tokens=engine.control_tokens())
    return Loaded(Resolved(None, None, Path("qwen3"), "scripted"), engine, fmt, GenerationParams(), None)


def repl_for(engine: ScriptedEngine, tmp_path) -> tuple[ChatREPL, io.StringIO]:
    out = io.StringIO()
    return ChatREPL(loaded_with(engine), SessionStore(tmp_path / "d.db"), Console(file=out, width=100)), out


def test_chat_folds_the_thinking_and_stores_only_the_answer(tmp_path, capsys):
    engine = ScriptedEngine(template("qwen3.jinja"), [THINKING])
    repl, console = repl_for(engine, tmp_path)
    repl.handle("问一个问题")
    shown = capsys.readouterr().out
    assert "答案是 42。" in shown and "<think>" not in shown and "</think>" not in shown
    assert "思考" in console.getvalue()  # the folded line
    assert [m.content for m in repl.conv.history] == ["问一个问题", "答案是 42。"]
    assert repl.conv.last_reasoning == "让我想想……"
    stored = repl.sessions.messages(repl.session_id)
    assert stored[-1] == ("assistant", "答案是 42。")


def test_think_and_nothink_switch_a_hybrid_template(tmp_path, capsys):
    engine = ScriptedEngine(template("qwen3.jinja"), [["好。"], ["好。"]])
    repl, console = repl_for(engine, tmp_path)
    repl.handle("/nothink")
    repl.handle("你好")
    assert engine.prompts[-1].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    repl.handle("/think")
    repl.handle("再说一次")
    assert engine.prompts[-1].endswith("<|im_start|>assistant\n")
    assert "思考已关闭" in console.getvalue() and "思考已打开" in console.getvalue()


def test_a_model_without_a_switch_says_so(tmp_path):
    engine = ScriptedEngine(template("deepseek-r1-distill-qwen.jinja"))
    repl, console = repl_for(engine, tmp_path)
    repl.handle("/nothink")
    assert "总是思考" in console.getvalue()


def test_run_json_keeps_reasoning_apart_from_text():
    engine = ScriptedEngine(template("qwen3.jinja"), [THINKING])
    result = run_once(loaded_with(engine), "问题")
    assert result["text"] == "答案是 42。" and result["reasoning"] == "让我想想……"
