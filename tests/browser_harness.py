"""What the browser tests share: Debian's headless Chromium driven by playwright (never a downloaded browser),
one per test module, and a page that fails its test on any JavaScript error or any request that leaves the
server's origin (the page loads nothing from the network). Chromium missing is a failure with the fix."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def launch_chromium(playwright):
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.fail("chromium is missing: the browser tests need Debian's chromium at /usr/bin/chromium; install it "
                    "with `make browser` (apt-get install -y chromium)", pytrace=False)
    return playwright.chromium.launch(executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
                                      args=CHROMIUM_ARGS)


@contextmanager
def chromium() -> Iterator:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]'", pytrace=False)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@contextmanager
def watched_page(browser, origin: str | None = None, viewport: dict | None = None, **context_options) -> Iterator:
    """A fresh profile's page; on leaving, no JavaScript error happened and no request went outside `origin`."""
    context = browser.new_context(viewport=viewport or DESKTOP, locale="zh-CN", **context_options)
    page = context.new_page()
    errors: list[str] = []
    elsewhere: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if origin:
        page.on("request", lambda r: None if r.url.startswith((origin + "/", "data:")) else elsewhere.append(r.url))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not elsewhere, f"the page asked for something outside {origin}: {elsewhere}"
