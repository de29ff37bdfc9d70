"""The web page in real headless Chromium (Debian's `chromium`, driven by playwright) against a real server on
loopback with the real models: chat with gemma-3-270m (streamed, saved in the CLI's sessions, regenerated,
reopened), an anonymous battle of two turns with a vote that reveals the names, the leaderboard changing,
the English toggle, and the API key prompt. Chromium missing is a failure with the fix, never a skip."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from danlu.arena.store import ArenaStore
from danlu.server import ServerSettings
from danlu.sessions import SessionStore
from test_server_harness import home_with, models_dir_of, running_server

pytestmark = [pytest.mark.weights, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GEMMA, QWEN = "gemma-3-270m", "qwen2.5-coder-1.5b-instruct"
REPLY_S = 180_000  # ms: loading a model on first use plus a few tokens, on a busy 2-core machine


def launch_chromium(playwright):
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.fail("chromium is missing: the browser tests need Debian's chromium at /usr/bin/chromium; install it "
                    "with `make browser` (apt-get install -y chromium)", pytrace=False)
    return playwright.chromium.launch(executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
                                      args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]'", pytrace=False)
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, gemma_path, qwen_path):
    base = home_with(tmp_path_factory.mktemp("browser-home"), models_dir_of(gemma_path))
    settings = ServerSettings(base=base, n_ctx=512, parallel=2, keep_alive_s=-1)
    with running_server(settings) as url:
        yield url, settings.base


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


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
    page.wait_for_selector(".msg.assistant.saved", timeout=REPLY_S)
    assert page.evaluate("window.changes") > 4  # the reply arrived in pieces, not at once
    first_reply = page.inner_text(".msg.assistant .body")
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
    page.click(f"#session-list li[data-id='{session.id}']")
    page.wait_for_selector(".msg.user")
    assert page.inner_text(".msg.user .body") == "你好，请介绍一下长城。"
    assert page.input_value("#chat-system").startswith("你是一个乐于助人的中文助手")


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
