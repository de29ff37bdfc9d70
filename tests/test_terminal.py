"""Stored and generated text in the terminal: never Rich markup, control characters shown, Chinese kept.

Names, models and system prompts can be written through the web page; model output is what the model says.
`danlu sessions`, `danlu leaderboard` and `danlu adapters` run as a user runs them (subprocesses); the
streamed text of `danlu run` through the function that writes it. /history and `danlu chat`'s stream are
in test_repl.py (they need a loaded model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from danlu.arena.store import ArenaStore
from danlu.sessions import SessionStore
from danlu.terminal import one_line, plain, visible

BREAKS_TABLE = "[/]"
FAKE_LINK = "[link=https://evil.example]官网[/link]"
RED = "\x1b[31mqwen\x1b[0m"


def danlu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "danlu.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=300)


def test_control_characters_become_visible_and_newlines_tabs_and_chinese_stay():
    assert visible("长城\n\t\x1b[2J\x07\r\x9b\u202e😀") == "长城\n\t\\x1b[2J\\x07\\x0d\\x9b\\u202e😀"
    assert one_line("a\nb\tc\x1b") == "a\\nb\\tc\\x1b"
    assert plain("[bold]x[/]").plain == "[bold]x[/]" and not plain("[bold]x[/]").spans


def test_cleaning_streamed_pieces_one_at_a_time_equals_cleaning_the_whole():
    text = "你好\x1b]0;title\x07世界\n\x1b[31m红\x1b[0m"
    assert "".join(visible(c) for c in text) == visible(text)


def test_sessions_table_prints_names_and_models_as_written(danlu_home):
    store = SessionStore(danlu_home / "danlu.db")
    store.name(store.create(RED), BREAKS_TABLE)
    store.name(store.create("gemma-3-270m"), FAKE_LINK)
    store.close()
    out = danlu("sessions")
    assert out.returncode == 0, out.stderr
    assert BREAKS_TABLE in out.stdout and FAKE_LINK in out.stdout
    assert "\x1b" not in out.stdout and "\\x1b[31mqwen\\x1b[0m" in out.stdout


def test_leaderboard_prints_model_names_from_votes_as_written(danlu_home):
    store = ArenaStore.open(danlu_home / "danlu.db")
    battle = store.create_battle(BREAKS_TABLE, RED, anonymous=True)
    store.add_turn(battle, "你好", "a", "b")
    store.record_vote(battle, "a")
    store.close()
    out = danlu("leaderboard")
    assert out.returncode == 0, out.stderr
    assert BREAKS_TABLE in out.stdout and "\\x1b[31mqwen" in out.stdout and "\x1b" not in out.stdout


def test_adapters_table_prints_names_and_bases_as_written(danlu_home):
    folder = danlu_home / "adapters" / "[bold]tea"  # a folder name cannot hold "/"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    (folder / "danlu.json").write_text(json.dumps({"base": FAKE_LINK}))
    out = danlu("adapters")
    assert out.returncode == 0, out.stderr
    assert "[bold]tea" in out.stdout and FAKE_LINK in out.stdout


def test_run_streams_model_output_with_escapes_shown_and_chinese_and_newlines_kept(capsys):
    from rich.console import Console

    from danlu.cli.reply_view import ReplyView

    view = ReplyView(Console(stderr=True), reasoning=None)
    for piece in ["你好", "\x1b[2J", "\x1b]8;;https://evil.example\x07点我", "\n第二行"]:
        view.feed(piece)
    view.close()
    assert capsys.readouterr().out == "你好\\x1b[2J\\x1b]8;;https://evil.example\\x07点我\n第二行"


def test_a_user_error_quoting_stored_text_is_printed_as_written(danlu_home):
    out = danlu("chat", "no-such-model[/]\x1b[31m")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "no-such-model[/]\\x1b[31m" in out.stderr


def test_a_progress_bar_shows_a_remote_file_name_as_written():
    """modelscope labels each bar with the file name from the repo's listing."""
    from danlu.progress import Board

    with Board(enabled=True) as board:
        bar = board.bytes_bar("[/]model\x1b[2J.safetensors", 10)
        column, task = board._progress.columns[0], board._progress.tasks[0]
        first = column.render(task)
        bar.update(description="[link=https://evil.example]x[/link]")
        second = column.render(task)
    assert first.plain == "[/]model\\x1b[2J.safetensors"
    assert second.plain == "[link=https://evil.example]x[/link]" and "link" not in str(second.spans)
