"""Interface language: Chinese first, English when DANLU_LANG=en (or --lang en)."""

from __future__ import annotations

import os

_lang: str | None = None


def set_lang(lang: str | None) -> None:
    global _lang
    _lang = lang


def lang() -> str:
    return (_lang or os.environ.get("DANLU_LANG") or "zh").lower()


def t(zh: str, en: str) -> str:
    """Pick the interface text for the current language."""
    return en if lang().startswith("en") else zh
