"""A streamed reply on the terminal: a thinking model's thinking shown dimmed while it lasts, folded to one line
(「思考 120 字 · 3.4 秒」) once the answer starts, then the answer as it comes.

On a terminal the thinking lives in a transient rich Live region (its last few lines), so nothing of it stays on
screen but the folded line; elsewhere (a pipe, a log) the thinking is written out whole before that line. Model
text is always shown as text: escape sequences are made visible, never obeyed.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

from danlu.i18n import t
from danlu.terminal import visible

LIVE_LINES = 4  # how much of the thinking stays visible while it streams


class ReplyView:
    """Feed the reply's text pieces; `close()` at the end (also after Ctrl-C)."""

    def __init__(self, console: Console, reasoning: str | None, thinking: bool | None = None):
        self.console = console
        self.splitter = None
        if reasoning:
            from danlu.outputs.reasoning import get_reasoning

            self.splitter = get_reasoning(reasoning)(thinking=thinking is not False)
        self.thought: list[str] = []
        self.started = time.perf_counter()
        self._live: Live | None = None
        self._folded = False

    def feed(self, text: str) -> None:
        if self.splitter is None:
            self._answer(text)
            return
        split = self.splitter.feed(text)
        self._think(split.reasoning)
        self._answer(split.content)

    def close(self) -> None:
        if self.splitter is not None:
            tail = self.splitter.flush()
            self._think(tail.reasoning)
            self._answer(tail.content)
        self._fold()

    def _think(self, text: str) -> None:
        if not text:
            return
        self.thought.append(text)
        if self.console.is_terminal:
            if self._live is None:
                self._live = Live(console=self.console, transient=True, auto_refresh=False)
                self._live.start()
            lines = visible("".join(self.thought)).splitlines()[-LIVE_LINES:]
            self._live.update(Text("\n".join(lines), style="dim"), refresh=True)
        else:
            sys.stdout.write(visible(text))

    def _answer(self, text: str) -> None:
        if not text:
            return
        self._fold()
        sys.stdout.write(visible(text))
        sys.stdout.flush()

    def _fold(self) -> None:
        """Once: the thinking becomes one dimmed line."""
        if self._folded or not self.thought:
            return
        self._folded = True
        if self._live is not None:
            self._live.stop()
        chars, seconds = len("".join(self.thought).strip()), time.perf_counter() - self.started
        if not self.console.is_terminal:
            sys.stdout.write("\n")
        sys.stdout.flush()
        self.console.print(Text(t(f"💭 思考 {chars} 字 · {seconds:.1f} 秒", f"💭 thought {chars} characters · "
                                  f"{seconds:.1f} s"), style="dim"))
