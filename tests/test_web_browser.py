"""The web page in real headless Chromium (Debian's `chromium`, driven by playwright) against a real server on
loopback with the real models: a fresh profile starts on the default chat model; chat with gemma-3-270m (a
base model: the page warns first; streamed, saved in the CLI's sessions, regenerated, reopened), an anonymous
battle of two turns with a vote that reveals the names, the leaderboard changing, the English toggle, the API
key prompt, and a download from a local file with its progress. The page's own behaviour on scripted engines
is in test_web_page.py. Chromium missing is a failure with the fix, never a skip."""

from __future__ import annotations

import os
import shutil

import pytest

from browser_harness import chromium, watched_page
from danlu.arena.store import ArenaStore
from danlu.server import ServerSettings
from danlu.sessions import SessionStore
from test_server_harness import home_with, running_server

pytestmark = [pytest.mark.weights, pytest.mark.browser]

GEMMA, QWEN = "gemma-3-270m", "qwen2.5-coder-1.5b-instruct"
REPLY_S = 180_000  # ms: loading a model on first use plus a few tokens, on a busy 2-core machine


@pytest.fixture(scope="module")
def browser():
    with chromium() as chromium_browser:
        yield chromium_browser


@pytest.fixture(scope="module")
def served(tmp_path_factory, gemma_path, qwen_path):
    two = tmp_path_factory.mktemp("two-models")  # exactly these two, whatever else `make models` pulled
    for path in (gemma_path, qwen_path):  # hard links: the store refuses folders that are symlinks out of it
        shutil.copytree(path.parents[1], two / path.parents[1].name, copy_function=os.link)
    base = home_with(tmp_path_factory.mktemp("browser-home"), two)
    settings = ServerSettings(base=base, n_ctx=512, parallel=2, keep_alive_s=-1)
    with running_server(settings) as url:
        yield url, settings.base


@pytest.fixture
def page(browser, served):
    with watched_page(browser, served[0]) as tab:
        yield tab


def count_changes(page, selector: str) -> None:
    """Count DOM changes under `selector` (each streamed piece re-renders the reply) in window.changes."""
    page.evaluate("""sel => { window.changes = 0;
        new MutationObserver(list => { window.changes += list.length; })
            .observe(document.querySelector(sel), {subtree: true, childList: true, characterData: true}); }""", selector)


def test_chat_streams_saves_regenerates_and_reopens_a_session(page, served):
    url, base = served
    page.goto(url + "/")
    page.wait_for_selector(f"#chat-model option[value='{GEMMA}']", state="attached")
    page.select_option("#chat-model", GEMMA)
    assert "仅 CPU" in page.inner_text("#chat-model-info") or "GPU" in page.inner_text("#chat-model-info")
    page.click("#chat-settings-toggle")
    page.select_option("#chat-persona", "assistant")
    page.fill("#chat-max-tokens", "8")
    page.eval_on_selector("#chat-temperature", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }")
    count_changes(page, "#chat-messages")
    page.fill("#chat-input", "你好，请介绍一下长城。")
    page.press("#chat-input", "Enter")
    page.wait_for_selector("#chat-warning:has-text('基础模型')")  # gemma-3-270m continues text: said before it starts
    assert page.locator(".msg").count() == 0
    page.click("#chat-warning-send")
    page.wait_for_selector(".msg.assistant.saved", timeout=REPLY_S)
    assert page.evaluate("window.changes") > 4  # the reply arrived in pieces, not at once
    first_reply = page.evaluate("document.querySelector('.msg.assistant').view.text")  # the Markdown source
    assert first_reply.strip() and "8 tokens" in page.inner_text(".msg.assistant .meta")

    store = SessionStore(base.db_path)  # the CLI's database: system prompt, question and reply
    [session] = store.list()
    assert (session.model, session.n_messages) == (GEMMA, 3)
    assert [r for r, _ in store.messages(session.id)] == ["system", "user", "assistant"]
    assert store.messages(session.id)[2][1] == first_reply

    page.click("#chat-regenerate")
    page.wait_for_selector(".msg.assistant.saved .meta:has-text('tokens')", timeout=REPLY_S)
    page.wait_for_function("document.querySelectorAll('.msg.assistant').length === 1")
    page.wait_for_function("!document.querySelector('#chat-regenerate').disabled")
    assert len(store.messages(session.id)) == 3  # regenerated in place, not appended
    store.close()

    page.click("#chat-new")
    assert page.locator(".msg").count() == 0
    page.click(f"#session-list li[data-id='{session.id}'] .title")
    page.wait_for_selector(".msg.user")
    assert page.inner_text(".msg.user .body") == "你好，请介绍一下长城。"
    assert page.input_value("#chat-system").startswith("你是一个乐于助人的中文助手")
    assert "tokens" in page.inner_text(".msg.assistant .meta")  # the token and speed line came back with it


def test_a_fresh_profile_starts_on_the_default_chat_model_and_labels_the_base_model(page, served):
    page.goto(served[0] + "/")
    page.wait_for_selector(f"#chat-model option[value='{GEMMA}']", state="attached")
    assert page.input_value("#chat-model") == QWEN  # Settings.default_model, as `danlu chat` uses
    assert "已下载" in page.inner_text("#chat-model-info .badge")
    gemma = page.inner_text(f"#chat-model option[value='{GEMMA}']")
    assert "基础模型，不适合对话" in gemma and "已下载" in gemma
    assert gemma.count("MiB") == 1  # one memory figure: fit's prediction


def test_an_anonymous_battle_votes_and_the_leaderboard_changes(page, served):
    url, base = served
    page.goto(url + "/#board")
    page.wait_for_selector("#board-table td.none")  # no votes yet
    assert page.locator("#board-table tr[data-model]").count() == 0

    page.click("#tab-arena")
    page.fill("#arena-max-tokens", "6")
    page.fill("#arena-temperature", "0")
    page.click("#arena-start")
    page.wait_for_selector("#arena-input:not([disabled])")
    assert page.inner_text("#arena-name-a") == "" and page.inner_text("#arena-name-b") == ""
    for n, question in enumerate(["用一句话介绍长城。", "再介绍一下故宫。"], start=1):
        page.fill("#arena-input", question)
        page.press("#arena-input", "Enter")
        page.wait_for_selector(f"#arena-status:has-text('第 {n} 轮已保存')", timeout=REPLY_S)
        assert page.locator("#arena-messages-a .msg.assistant.saved").count() == n
        assert page.locator("#arena-messages-b .msg.assistant.saved").count() == n
    assert page.is_enabled("#vote-a") and page.inner_text("#arena-name-a") == ""  # still anonymous

    page.click("#vote-a")
    page.wait_for_selector("#arena-status:has-text('已记录投票')")
    names = {page.inner_text("#arena-name-a"), page.inner_text("#arena-name-b")}
    assert names == {GEMMA, QWEN}
    assert page.is_disabled("#vote-b") and page.is_disabled("#arena-input")
    winner = page.inner_text("#arena-name-a")

    page.click("#tab-board")
    page.wait_for_selector("#board-table tr[data-model]")
    rows = page.locator("#board-table tr[data-model]")
    assert rows.count() == 2 and rows.first.get_attribute("data-model") == winner  # the winner ranks first
    assert page.get_attribute("#board-summary", "data-votes") == "1"
    store = ArenaStore.open(base.db_path)
    assert [(v.vote, v.anonymous) for v in store.votes()] == [("a", True)]
    store.close()


def test_the_interface_switches_to_english(page, served):
    url, _ = served
    page.goto(url + "/?lang=en")
    assert page.inner_text("#tab-chat") == "Chat" and page.inner_text("#tab-arena") == "Arena"
    page.click("#lang-button")
    assert page.inner_text("#tab-chat") == "对话" and page.inner_text("#lang-button") == "English"


def test_a_keyed_server_asks_for_the_key_and_the_page_sends_it(browser, tmp_path):
    settings = ServerSettings(base=home_with(tmp_path, None), api_key="page-key")
    with running_server(settings) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#key-dialog[open]")  # /api answered 401: the page asks
        page.fill("#key-input", "page-key")
        page.click("#key-dialog button[value=save]")
        page.wait_for_selector(f"#chat-model option[value='{GEMMA}']", state="attached")
        assert page.evaluate("localStorage.getItem('danlu.apiKey')") == "page-key"
        page.wait_for_selector("#chat-error", state="hidden")  # the 401's message is gone
        context.close()


def test_a_model_downloads_from_a_local_file_with_progress(browser, tmp_path, gemma_path):
    """下载 on a model that is not here: the server's pull from a local file (hard-linked, then verified against
    the catalog's sha256), its progress streamed into the bar, then the model is ready in the picker."""
    settings = ServerSettings(base=home_with(tmp_path, None))
    with running_server(settings) as url, watched_page(browser, url) as page:
        page.goto(url + "/")
        page.wait_for_selector(f"#chat-model option[value='{GEMMA}']", state="attached")
        assert page.input_value("#chat-model") == QWEN  # the default, not downloaded yet: 需下载
        assert "需下载" in page.inner_text("#chat-model-info .badge")
        page.select_option("#chat-model", GEMMA)
        page.click("#chat-download")
        page.select_option("#download-source", "local")
        page.fill("#download-path", str(gemma_path))
        page.evaluate("""() => { window.progress = [];
            new MutationObserver(() => window.progress.push(document.querySelector('#download-status').textContent))
                .observe(document.querySelector('#download-status'), {childList: true, characterData: true, subtree: true}); }""")
        page.click("#download-start")
        page.wait_for_selector("#download-status:has-text('下载完成')", timeout=120_000)
        progress = page.evaluate("window.progress")
        assert any("%" in line and "MiB" in line for line in progress), progress  # numbers while it verified
        assert page.evaluate("document.querySelector('#download-bar').value") == page.evaluate(
            "document.querySelector('#download-bar').max")
        page.wait_for_selector("#chat-model-info .badge:has-text('已下载')")
        assert page.input_value("#chat-model") == GEMMA
    assert (settings.base.models_dir / GEMMA).is_dir()
