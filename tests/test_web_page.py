"""The web page's own behaviour in real headless Chromium (Debian's `chromium`, driven by playwright), against
a real danlu server whose model is a slow scripted engine (tests/scripted_page_server.py), so every reply is
known: Markdown and code rendered as it streams and a script in a reply that never runs; thinking folded above
the answer; a tool call as a card; sessions renamed, searched, deleted with undo, reopened after a reload, and
picked up from `danlu chat` without a reload; editing an earlier message; the phone layout; the default chat
model on a fresh profile; a server killed mid-reply, with both messages kept on screen and in the database.
Every page fails its test on a JavaScript error or a request outside the server (browser_harness)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from browser_harness import PHONE, chromium, watched_page
from danlu.arena.store import ArenaStore
from danlu.sessions import SessionStore
from scripted_page_server import LONG, MODEL, MODEL_B, serve_scripted

pytestmark = [pytest.mark.browser]

REPLY_MS = 30_000
LOAD_MS = 120_000  # /api/models runs fit over the whole catalog: seconds, more on a busy 2-core machine
MARKDOWN = ["# 长城\n\n", "**长城**是中国古代的", "军事防御工程。\n\n- 东起山海关\n- 西至嘉峪关\n\n",
            "| 朝代 | 长度 |\n|---|---|\n| 明 | 8851 km |\n\n", "```python\nprint('你好')\n", "```\n\n",
            "<img src=x onerror=\"window.pwned='img'\"> <script>window.pwned='script'</script>\n\n",
            "[点我](javascript:window.pwned='link') ![图](javascript:window.pwned='image') ",
            "<a href=\"javascript:window.pwned='a'\">a</a> <svg onload=\"window.pwned='svg'\"></svg> <b>粗</b>"]
THINKING = ["<think>\n嗯，", "先想", "一想。\n</think>\n\n答案", "是 **42**。"]
WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "查询天气", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL = ["好的，我查一下。\n<tool", "_call>\n{\"name\": \"get_weather\", \"arg", "uments\": {\"city\": \"北京\"}}\n</tool_call>"]
DEFAULT = "qwen2.5-coder-1.5b-instruct"


@pytest.fixture(scope="module")
def browser():
    with chromium() as chromium_browser:
        yield chromium_browser


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("page-home")
    with serve_scripted(home) as (url, engine, right):
        yield url, engine, home / "danlu.db", right


@pytest.fixture
def page(browser, served):
    with watched_page(browser, served[0]) as tab:
        tab.goto(served[0] + "/")
        tab.wait_for_selector(f"#chat-model option[value='{MODEL}']", state="attached", timeout=LOAD_MS)
        tab.select_option("#chat-model", MODEL)
        yield tab


def say(page, text: str, saved: int | None = None) -> None:
    """Send `text`; wait until `saved` replies (default: one more than now) are saved."""
    target = saved if saved is not None else page.locator(".msg.assistant.saved").count() + 1
    page.fill("#chat-input", text)
    page.press("#chat-input", "Enter")
    page.wait_for_function(f"document.querySelectorAll('.msg.assistant.saved').length >= {target}", timeout=REPLY_MS)


def stored(db: Path) -> list[list[dict]]:
    store = SessionStore(db)
    try:
        return [store.entries(s.id) for s in store.list()]
    finally:
        store.close()


# ---------------------------------------------------------------- rendering


def test_markdown_and_code_render_as_they_stream_and_a_script_in_a_reply_never_runs(page, served):
    served[1].scripts.append(MARKDOWN)
    page.evaluate("""() => { window.renders = 0; const box = document.querySelector('#chat-messages');
        new MutationObserver(() => { if (box.querySelector('.msg.assistant .body h1')) window.renders++; })
            .observe(box, {subtree: true, childList: true}); }""")
    say(page, "介绍长城")
    reply = page.locator(".msg.assistant .body").last
    assert page.evaluate("window.renders") > 3  # the heading was there while the rest still streamed
    assert reply.locator("h1").inner_text() == "长城" and reply.locator("strong").first.inner_text() == "长城"
    assert reply.locator("li").all_inner_texts() == ["东起山海关", "西至嘉峪关"]
    assert reply.locator("table td").all_inner_texts() == ["明", "8851 km"]
    assert reply.locator(".code-lang").inner_text() == "python"
    assert reply.locator("code .hljs-built_in").inner_text() == "print"  # highlighted
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    reply.locator(".codeblock button.copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == "print('你好')\n"

    assert page.evaluate("window.pwned") is None  # no handler, script, link or SVG from the reply ran
    for link in reply.locator("a").all():
        link.click()
    assert page.evaluate("window.pwned") is None
    assert reply.locator("img, script, svg, [onerror], [onload], [href^='javascript']").count() == 0
    assert "<img src=x" in reply.inner_text() and "<b>粗</b>" in reply.inner_text()  # raw HTML is shown as text


def test_thinking_is_folded_above_the_answer_with_its_tokens_and_seconds(page, served):
    served[1].scripts.append(THINKING)
    say(page, "想一想")
    block = page.locator(".msg.assistant details.thinking").last
    assert block.is_visible() and block.get_attribute("open") is None  # folded once the answer came
    summary = block.locator("summary").inner_text()
    assert summary.startswith("思考过程") and "tokens" in summary and summary.endswith(" s")
    assert page.locator(".msg.assistant .body").last.inner_text() == "答案是 42。"
    block.locator("summary").click()
    assert block.locator(".thinking-text").inner_text() == "嗯，先想一想。"
    [session] = [s for s in stored(served[2]) if s[-1]["content"] == "答案是 **42**。"]
    assert session[-1]["meta"]["reasoning"] == "嗯，先想一想。" and session[-1]["meta"]["reasoning_tokens"] > 0

    page.reload()  # the last session comes back, thinking still folded above its answer
    page.wait_for_selector(".msg.assistant details.thinking summary:has-text('思考过程')")
    page.click("#lang-button")  # English: what is on screen is said again in English
    assert page.locator(".msg.assistant details.thinking summary").last.inner_text().startswith("Thinking")
    assert "first token" in page.locator(".msg.assistant .meta").last.inner_text()


def test_a_tool_call_is_shown_as_a_card(page, served):
    served[1].scripts.append(CALL)
    page.click("#chat-settings-toggle")
    page.fill("#chat-tools", json.dumps(WEATHER))
    say(page, "北京天气怎么样？")
    card = page.locator(".msg.assistant .tool-card").last
    assert card.locator(".tool-name").inner_text() == "get_weather"
    assert json.loads(card.locator(".tool-args").inner_text()) == {"city": "北京"}
    assert "调用工具" in page.locator(".msg.assistant .meta").last.inner_text()
    assert page.locator(".msg.assistant .body").last.inner_text() == "好的，我查一下。"


# ---------------------------------------------------------------- sessions


def test_sessions_are_renamed_searched_deleted_with_undo_and_the_last_reopens(page, served):
    db = served[2]
    say(page, "介绍一下长城")
    store = SessionStore(db)  # a session `danlu chat` writes meanwhile: it appears without a reload
    cli = store.create(MODEL)
    store.add_message(cli, "user", "故宫门票多少钱？")
    store.add_message(cli, "assistant", "六十元。")
    store.close()
    page.wait_for_selector(f"#session-list li[data-id='{cli}']", timeout=15_000)

    mine = page.get_attribute("#session-list li.active", "data-id")
    page.hover(f"#session-list li[data-id='{mine}']")
    page.click(f"#session-list li[data-id='{mine}'] button.rename")
    page.fill("#session-list .rename-input", "长城笔记")
    page.press("#session-list .rename-input", "Enter")
    page.wait_for_selector(f"#session-list li[data-id='{mine}'] .title:has-text('长城笔记')")
    store = SessionStore(db)
    assert store.find("长城笔记").id == mine
    store.close()

    page.fill("#session-search", "门票")  # content
    page.wait_for_function(f"[...document.querySelectorAll('#session-list li[data-id]')].map(li => li.dataset.id).join() === '{cli}'")
    page.fill("#session-search", "长城笔记")  # title
    page.wait_for_function(f"[...document.querySelectorAll('#session-list li[data-id]')].map(li => li.dataset.id).join() === '{mine}'")
    page.fill("#session-search", "")

    page.reload()  # the session open before the reload is open again, with its token line
    page.wait_for_selector(".msg.user:has-text('介绍一下长城')")
    assert page.get_attribute("#session-list li.active", "data-id") == mine
    assert "tokens" in page.inner_text(".msg.assistant .meta")

    page.hover(f"#session-list li[data-id='{cli}']")
    page.click(f"#session-list li[data-id='{cli}'] button.delete")
    page.wait_for_selector(f"#session-list li[data-id='{cli}']", state="detached")
    page.click("#session-undo-button")  # undo: back, and never deleted
    page.wait_for_selector(f"#session-list li[data-id='{cli}']")
    page.hover(f"#session-list li[data-id='{cli}']")
    page.click(f"#session-list li[data-id='{cli}'] button.delete")
    page.wait_for_selector("#session-undo", state="hidden", timeout=15_000)  # the undo expired: deleted
    store = SessionStore(db)
    assert cli not in {s.id for s in store.list()} and mine in {s.id for s in store.list()}
    store.close()


def test_editing_an_earlier_message_regenerates_from_there(page, served):
    served[1].scripts.extend([["第一个回答"], ["第二个回答"], ["改过之后的回答"]])
    say(page, "第一个问题")
    say(page, "第二个问题")
    first = page.locator(".msg.user").first
    first.locator("button.edit").click()
    first.locator(".editor textarea").fill("改过的问题")
    first.locator(".editor .save-edit").click()
    page.wait_for_function("document.querySelectorAll('.msg.assistant.saved').length === 1 && "
                           "document.querySelector('.msg.assistant .body').innerText === '改过之后的回答'", timeout=REPLY_MS)
    assert page.locator(".msg.user .body").all_inner_texts() == ["改过的问题"]
    [session] = [s for s in stored(served[2]) if s and s[0]["content"] == "改过的问题"]
    assert [(m["role"], m["content"]) for m in session] == [("user", "改过的问题"), ("assistant", "改过之后的回答")]


# ---------------------------------------------------------------- the arena


def test_the_arena_folds_thinking_shows_each_sides_speed_stops_both_and_keeps_its_sides(page, served):
    url, left, db, right = served
    left.scripts.append(THINKING)
    right.scripts.append(["右边", "的回答。"])
    page.click("#tab-arena")
    page.click("label:has(input[value=side_by_side]) span")
    page.select_option("#arena-model-a", MODEL)
    page.select_option("#arena-model-b", MODEL_B)
    page.click("#arena-start")
    page.wait_for_selector("#arena-input:not([disabled])")
    page.evaluate("""() => { window.waited = false; const duel = document.querySelector('.duel');
        new MutationObserver(() => { window.waited ||= [...duel.querySelectorAll('.body.waiting')]
            .some(b => b.textContent.includes('等待首字')); }).observe(duel, {subtree: true, childList: true}); }""")
    page.fill("#arena-input", "想一想再答")
    page.press("#arena-input", "Enter")
    page.wait_for_selector("#arena-status:has-text('第 1 轮已保存')", timeout=REPLY_MS)
    assert page.evaluate("window.waited")  # each side said it was waiting before its first token
    a, b = (page.locator(f"#arena-messages-{side} .msg.assistant") for side in "ab")
    assert a.locator("details.thinking").get_attribute("open") is None  # the voter sees the answer, thinking folded
    assert a.locator("details.thinking summary").inner_text().startswith("思考过程")
    assert a.locator(".body").inner_text() == "答案是 42。" and b.locator(".body").inner_text() == "右边的回答。"
    for side in (a, b):
        meta = side.locator(".meta").inner_text()
        assert "首字" in meta and "tok/s" in meta and "正常结束" in meta and "stop" not in meta
    store = ArenaStore.open(db)
    [battle] = [row[0] for row in store.db.execute("SELECT id FROM battles ORDER BY created DESC LIMIT 1")]
    reply = store.entries(battle, "a")[1]
    assert reply["meta"]["reasoning"] == "嗯，先想一想。" and reply["meta"]["reasoning_tokens"] > 0
    store.close()

    left.scripts.append(LONG)
    right.scripts.append(LONG)
    page.fill("#arena-input", "讲个长故事")
    page.press("#arena-input", "Enter")
    page.wait_for_selector("#arena-messages-b .msg.assistant .body:has-text('第3句')", timeout=REPLY_MS)
    page.click("#arena-stop")  # both sides end; the turn is not saved and the question goes back in the box
    page.wait_for_selector("#arena-status:has-text('已停止')")
    assert page.locator(".column .msg.assistant.unsaved").count() == 2
    assert page.input_value("#arena-input") == "讲个长故事"
    page.click("#arena-start")  # a new battle: the pickers kept their sides
    page.wait_for_selector("#arena-input:not([disabled])")
    assert (page.input_value("#arena-model-a"), page.input_value("#arena-model-b")) == (MODEL, MODEL_B)


# ---------------------------------------------------------------- first visit, phone


def test_a_fresh_profile_preselects_the_default_chat_model_and_offers_its_download(browser, served):
    with watched_page(browser, served[0]) as page:
        page.goto(served[0] + "/")
        page.wait_for_selector(f"#chat-model option[value='{DEFAULT}']", state="attached", timeout=LOAD_MS)
        assert page.input_value("#chat-model") == DEFAULT  # Settings.default_model, as `danlu chat`
        assert page.inner_text("#chat-model-info .badge") == "需下载" and page.is_visible("#chat-download")
        assert "基础模型，不适合对话" in page.inner_text("#chat-model option[value='gemma-3-270m']")


def test_the_phone_layout_fits_390_px_with_a_pinned_input(browser, served):
    served[1].scripts.extend([["很长的回答。" * 60 + "\n\n```\n" + "x" * 300 + "\n```"]] * 3)
    with watched_page(browser, served[0], viewport=PHONE) as page:
        page.goto(served[0] + "/")
        page.wait_for_selector(f"#chat-model option[value='{MODEL}']", state="attached", timeout=LOAD_MS)
        page.select_option("#chat-model", MODEL)
        for n in range(3):
            say(page, f"第{n}个问题")
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        box = page.locator("#chat-input").bounding_box()
        assert page.is_visible("#chat-input") and box["y"] + box["height"] <= PHONE["height"]  # pinned at the bottom
        assert page.evaluate("document.scrollingElement.scrollTop") == 0  # the messages scroll, not the page
        for tab in ("#tab-chat", "#tab-arena", "#tab-board"):  # labels on one line, the language button inside
            assert page.locator(tab).bounding_box()["height"] < 40
        lang = page.locator("#lang-button").bounding_box()
        assert lang["x"] + lang["width"] <= PHONE["width"]
        assert not page.locator("#session-search").is_visible() or page.locator("#sidebar").bounding_box()["x"] < 0
        page.click("#sidebar-toggle")  # the sidebar slides in
        page.wait_for_function("document.querySelector('#sidebar').getBoundingClientRect().x >= 0")
        page.click("#sidebar-backdrop", position={"x": 370, "y": 400})
        for tab in ("#tab-arena", "#tab-board"):
            page.click(tab)
            page.wait_for_timeout(300)
            assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), tab
        page.wait_for_selector("#board-ceval tr td[data-label]")
        assert page.evaluate("getComputedStyle(document.querySelector('#board-ceval td')).display") != "table-cell"


# ---------------------------------------------------------------- a server that goes away


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, str(Path(__file__).parent / "scripted_page_server.py"), str(home), str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    line = server.stdout.readline()
    assert line.startswith("http://"), server.stderr.read()
    return server


def test_a_server_killed_mid_reply_leaves_both_messages_on_screen_and_in_the_database(browser, tmp_path):
    home, port = tmp_path / "home", free_port()
    server = start_server(home, port)
    url = f"http://127.0.0.1:{port}"
    try:
        with watched_page(browser, url) as page:
            page.goto(url + "/")
            page.wait_for_selector(f"#chat-model option[value='{MODEL}']", state="attached", timeout=LOAD_MS)
            page.select_option("#chat-model", MODEL)
            page.fill("#chat-input", "讲一个很长的故事")
            page.press("#chat-input", "Enter")
            page.wait_for_selector(".msg.assistant .body:has-text('第5句')", timeout=REPLY_MS)
            server.send_signal(signal.SIGKILL)
            server.wait()
            page.wait_for_selector("#connection:has-text('与服务器的连接断开')")
            page.wait_for_selector(".msg.assistant.interrupted")
            shown = page.evaluate("document.querySelector('.msg.assistant').view.text")
            assert page.inner_text(".msg.user .body") == "讲一个很长的故事" and shown.startswith("第1句。第2句。")
            assert "连接中断" in page.inner_text(".msg.assistant .meta")
            [[user]] = stored(home / "danlu.db")  # the question was saved as it was sent
            assert (user["role"], user["content"]) == ("user", "讲一个很长的故事")

            page.click("#tab-board")  # no blank tab while the server is down
            page.wait_for_selector("#board-error:has-text('排行榜暂时读不到')")
            page.click("#tab-chat")
            time.sleep(1)
            server = start_server(home, port)  # the page reconnects by itself and writes the partial reply
            page.wait_for_selector("#connection:has-text('已重新连接')", timeout=30_000)
            page.wait_for_selector(".msg.assistant.saved")
        [[user, reply]] = stored(home / "danlu.db")
        assert reply["role"] == "assistant" and reply["content"] == shown and reply["meta"]["interrupted"] is True
    finally:
        server.kill()
        server.wait()
