"""Screenshots of the web page for the README: docs/screenshots/{chat,arena,leaderboard,chat-phone}.png.

    .venv/bin/python docs/screenshots.py            (needs `make models` and `make browser`)

Everything on them is real: a `danlu serve` in this process (a throwaway DANLU_HOME that links the pulled
models), headless Debian chromium driven by playwright, a chat with qwen2.5-coder-1.5b-instruct, then three
anonymous battles between gemma-3-270m and qwen2.5-coder-1.5b-instruct. The votes are cast by this script
with a fixed rule, since nobody is watching: the reply with more distinct Chinese characters wins, equal
counts are a tie — a crude stand-in for a person, good enough to fill the leaderboard. Last, the same browser
profile at a phone's 390×844 reloads the page, which reopens the chat.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from danlu.config import Settings
from danlu.server import ServerSettings
from danlu.server.app import background_server

OUT = Path(__file__).parent / "screenshots"
MODELS = Path(Settings().home) / "models"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUESTIONS = ["用一句话介绍长城。", "推荐一本适合初学者的 Python 书。", "“举一反三”是什么意思？"]
WAIT_MS = 900_000  # a 2-core machine shared with other work can be slow


def chat(page: Page) -> None:
    page.select_option("#chat-model", "qwen2.5-coder-1.5b-instruct")
    page.click("#chat-settings-toggle")
    page.select_option("#chat-persona", "assistant")
    page.fill("#chat-max-tokens", "160")
    page.eval_on_selector("#chat-temperature", "el => { el.value = '0.3'; el.dispatchEvent(new Event('input')); }")
    for n, question in enumerate(["用 Python 写一个函数，判断一个数是不是质数。", "用一句话解释它为什么只检查到平方根。"], start=1):
        page.fill("#chat-input", question)
        page.press("#chat-input", "Enter")
        try:
            page.wait_for_function(f"document.querySelectorAll('.msg.assistant.saved').length === {n}", timeout=WAIT_MS)
        except Exception:
            page.screenshot(path=OUT / "failed.png")  # what the page showed, to see why
            raise
    page.click("#chat-settings-toggle")  # folded away: room for the conversation
    page.screenshot(path=OUT / "chat.png")


def cjk_count(text: str) -> int:
    return len(set(re.findall(r"[\u4e00-\u9fff]", text)))


def scripted_vote(page: Page) -> str:
    """The reply with more distinct Chinese characters wins; equal counts are a tie."""
    left = cjk_count(page.inner_text("#arena-messages-a .msg.assistant:last-child .body"))
    right = cjk_count(page.inner_text("#arena-messages-b .msg.assistant:last-child .body"))
    return "vote-a" if left > right else "vote-b" if right > left else "vote-tie"


def battle(page: Page, question: str, shot: bool) -> None:
    page.click("#arena-start")
    page.wait_for_selector("#arena-input:not([disabled])")
    page.fill("#arena-input", question)
    page.press("#arena-input", "Enter")
    page.wait_for_selector("#arena-status:has-text('第 1 轮已保存')", timeout=WAIT_MS)
    page.click(f"#{scripted_vote(page)}")
    page.wait_for_selector("#arena-status:has-text('已记录投票')")
    if shot:
        page.screenshot(path=OUT / "arena.png")


def arena_and_leaderboard(page: Page) -> None:
    page.click("#tab-arena")
    page.fill("#arena-max-tokens", "80")
    page.fill("#arena-temperature", "0.3")
    for n, question in enumerate(QUESTIONS):
        battle(page, question, shot=n == len(QUESTIONS) - 1)
    page.click("#tab-board")
    page.wait_for_selector(f"#board-summary[data-votes='{len(QUESTIONS)}']")
    page.screenshot(path=OUT / "leaderboard.png")


def phone(page: Page) -> None:
    """The phone layout: the reload reopens the last session; the reply's code block scrolls inside it."""
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(page.url.split("#")[0] + "#chat")
    page.reload()
    page.wait_for_selector(".msg.assistant.saved")
    page.evaluate("document.querySelector('#chat-messages').scrollTop = 0")
    page.screenshot(path=OUT / "chat-phone.png")


def main() -> None:
    if not MODELS.exists():
        sys.exit(f"no pulled models in {MODELS}: run `make models` first")
    OUT.mkdir(exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="danlu-shots-"))
    (home / "models").symlink_to(MODELS, target_is_directory=True)
    settings = ServerSettings(base=Settings(home=home), host="127.0.0.1", port=0, n_ctx=1024, parallel=2, keep_alive_s=-1)
    with background_server(settings) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 820}, locale="zh-CN")
        page.goto(url + "/")
        page.wait_for_selector("#chat-model option[value='qwen2.5-coder-1.5b-instruct']", state="attached")
        chat(page)
        arena_and_leaderboard(page)
        phone(page)
        browser.close()
    print(f"wrote {', '.join(str(p) for p in sorted(OUT.glob('*.png')))}")


if __name__ == "__main__":
    main()
