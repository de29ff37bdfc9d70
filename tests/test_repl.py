"""The chat REPL's commands, driven in-process on real gemma weights with a scripted input."""

import io

import pytest
from rich.console import Console

from danlu.loader import load
from danlu.repl import ChatREPL
from danlu.sessions import SessionStore

pytestmark = pytest.mark.weights


@pytest.fixture
def repl(home_with_models, gemma_path):
    loaded = load("gemma-3-270m", n_ctx=1024)
    console = Console(file=io.StringIO(), width=200)
    r = ChatREPL(loaded, SessionStore(home_with_models / "danlu.db"), console, model_id="gemma-3-270m")
    r.handle("/set temperature 0")
    r.handle("/set max_tokens 6")
    yield r
    loaded.engine.close()


def said(r: ChatREPL) -> str:
    return r.console.file.getvalue()


def test_set_rejects_unknown_keys_and_bad_numbers(repl):
    repl.handle("/set warmth 3")
    repl.handle("/set top_k many")
    assert "用法" in said(repl) and "需要一个数字" in said(repl)
    assert repl.conv.params.max_tokens == 6 and repl.conv.params.temperature == 0


def test_retry_replaces_the_last_reply_in_memory_and_database(repl):
    repl.handle("你好")
    repl.handle("/set temperature 1.5")
    repl.handle("/set seed 7")
    repl.handle("/retry")
    rows = repl.sessions.messages(repl.session_id)
    assert [r for r, _ in rows] == ["user", "assistant"]
    assert rows[1][1] == repl.conv.history[-1].content


def test_reset_starts_a_new_session_and_keeps_the_old(repl):
    repl.handle("你好")
    first = repl.session_id
    repl.handle("/reset")
    assert repl.session_id != first and repl.conv.history == []
    assert len(repl.sessions.messages(first)) == 2


def test_save_then_load_restores_history_and_system(repl):
    repl.handle("/system 你是诗人")
    repl.handle("写一句诗")
    repl.handle("/save 诗")
    repl.handle("/reset")
    repl.handle("/load 诗")
    assert repl.conv.system == "你是诗人"
    assert [m.role for m in repl.conv.history] == ["user", "assistant"]


def test_chatrwkv_plus_commands_do_not_touch_history(repl, capfd):
    repl.handle("+gen 从前有座山")
    repl.handle("+qa 中国的首都是哪里？")
    assert repl.conv.history == []
    assert capfd.readouterr().out.count("助手>") == 2


def test_unknown_slash_command_shows_help(repl):
    repl.handle("/frobnicate")
    assert "未知命令" in said(repl) and "/system" in said(repl)


def test_bye_leaves(repl):
    assert repl.handle("/bye") == "bye"
