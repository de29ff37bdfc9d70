"""The chat REPL's commands, driven in-process on real gemma weights with a scripted input."""

import io

import pytest
from rich.console import Console

from danlu.loader import load
from danlu.cli.repl import ChatREPL
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


# ---------------------------------------------------------------- stored and generated text is shown as written

def test_history_prints_stored_markup_and_escapes_as_plain_text(repl):
    """A session written through the web page: its name, model, system prompt and messages are not markup."""
    sid = repl.sessions.create("[link=https://evil.example]gemma[/link]")
    for role, text in [("system", "[bold]你是[/] [link=https://evil.example]诗人[/link]"),
                       ("user", "\x1b]0;pwned\x07问题"), ("assistant", "答\x1b[2J案\n第二行")]:
        repl.sessions.add_message(sid, role, text)
    repl.sessions.name(sid, "[/]")
    repl.handle("/load [/]")
    repl.handle("/history")
    out = said(repl)
    assert "[bold]你是[/] [link=https://evil.example]诗人[/link]" in out
    assert "\\x1b]0;pwned\\x07问题" in out and "答\\x1b[2J案\n第二行" in out and "\x1b" not in out
    assert "[link=https://evil.example]gemma[/link]" in out, "the note naming the session's model"


def test_streamed_reply_shows_escape_sequences_and_keeps_chinese_and_newlines(repl, capfd):
    from danlu.backends.base import Chunk

    repl.stream(iter([Chunk("你好\x1b[2J", []), Chunk("\x1b]0;pwned\x07", []), Chunk("\n世界", [], "stop")]))
    out = capfd.readouterr().out
    assert "你好\\x1b[2J\\x1b]0;pwned\\x07\n世界" in out and "\x1b" not in out


def test_an_error_quoting_a_name_is_printed_as_written(repl):
    repl.handle("/load [bold]nope[/]")
    assert "'[bold]nope[/]'" in said(repl)
