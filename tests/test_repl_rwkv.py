"""`danlu chat PATH` on a tiny random RWKV checkpoint: World format, ChatRWKV commands, state saved with the session."""

import io

import pytest
from rich.console import Console

import tiny_models as tm
from danlu.loader import load
from danlu.cli.repl import ChatREPL
from danlu.sessions import SessionStore


@pytest.fixture
def rwkv_repl(tmp_path, danlu_home):
    path = tm.rwkv4_pth(tmp_path / "RWKV-4-World-tiny.pth")
    loaded = load(str(path), n_ctx=512, rwkv_chat_rules=True)
    r = ChatREPL(loaded, SessionStore(danlu_home / "danlu.db"), Console(file=io.StringIO(), width=200), model_id="tiny-rwkv")
    r.handle("/set max_tokens 5")
    r.handle("/set temperature 0")
    return r


def test_a_pth_path_chats_in_the_world_format(rwkv_repl):
    assert rwkv_repl.loaded.resolved.backend == "rwkv" and rwkv_repl.loaded.fmt.name == "rwkv-world"
    rwkv_repl.handle("你好")
    assert [m.role for m in rwkv_repl.conv.history] == ["user", "assistant"]


def test_state_is_saved_with_the_session_and_restored_on_load(rwkv_repl):
    rwkv_repl.handle("第一句话")
    rwkv_repl.handle("/save 存档")
    saved_ids = rwkv_repl.loaded.engine.cached_ids()
    assert rwkv_repl.sessions.load_state(rwkv_repl.session_id)
    rwkv_repl.handle("/reset")
    rwkv_repl.handle("+qq 别的问题")  # moves the engine's state elsewhere
    assert rwkv_repl.loaded.engine.cached_ids() != saved_ids
    rwkv_repl.handle("/load 存档")
    assert rwkv_repl.loaded.engine.cached_ids() == saved_ids


def test_continue_extends_the_last_reply_in_place(rwkv_repl):
    rwkv_repl.handle("讲个故事")
    before = rwkv_repl.conv.history[-1].content
    rwkv_repl.handle("+++")
    after = rwkv_repl.conv.history[-1].content
    assert len(rwkv_repl.conv.history) == 2 and after.startswith(before)
    assert rwkv_repl.sessions.messages(rwkv_repl.session_id)[-1][1] == after
