"""Progress display for long work: byte transfers (size, speed, ETA) and item counts, on rich.

One `Board` is one live display on stderr holding any number of bars; a bar is either
bytes (`board.bytes_bar`) or items (`board.count_bar`), and both kinds can share a board.
A disabled board keeps the same API and draws nothing, so callers never branch on "quiet".

Libraries that draw their own bars get adapters here, so every download looks the same:
`tqdm_class(board)` for huggingface_hub (anything taking a tqdm class), and
`callback_class(board, base)` for modelscope's per-file progress callbacks.
`say()` prints a one-line message (above the bars when a board is live) and logs it.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.markup import escape
from rich.text import Text

from danlu.terminal import one_line, visible

__all__ = ["Bar", "Board", "ListeningBoard", "console", "counter", "say", "transfer", "tqdm_class", "callback_class"]

log = logging.getLogger("danlu")

# stderr: stdout stays clean for what a command prints as its result (paths, JSON).
console = Console(stderr=True)

_BYTES, _ITEMS = "bytes", "items"


class _AmountColumn(ProgressColumn):
    """"12.3/250.0 MB" for byte bars, "3/22" for item bars."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes, self._items = DownloadColumn(), MofNCompleteColumn()

    def render(self, task: Task) -> Text:
        column = self._bytes if task.fields.get("unit") == _BYTES else self._items
        return column.render(task)


class _RateColumn(ProgressColumn):
    """Transfer speed for byte bars; time elapsed for item bars (an item rate means little)."""

    def __init__(self) -> None:
        super().__init__()
        self._speed, self._elapsed = TransferSpeedColumn(), TimeElapsedColumn()

    def render(self, task: Task) -> Text:
        column = self._speed if task.fields.get("unit") == _BYTES else self._elapsed
        return column.render(task)


def _new_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        _AmountColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class Bar:
    """One line on a board; every method is a no-op on a disabled board."""

    def __init__(self, progress: Progress | None, task_id: TaskID | None) -> None:
        self._progress, self._task_id = progress, task_id

    def advance(self, amount: float) -> None:
        if self._progress is not None:
            self._progress.advance(self._task_id, amount)

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        if self._progress is None:
            return
        shown = None if description is None else _description(description)
        given = {"completed": completed, "total": total, "description": shown}
        self._progress.update(self._task_id, **{key: value for key, value in given.items() if value is not None})

    def close(self) -> None:
        """Stop the clock: a finished bar keeps its last numbers but no longer counts time."""
        if self._progress is not None:
            self._progress.stop_task(self._task_id)


class Board:
    """A live display holding bars; use as a context manager around the work."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress = _new_progress() if enabled else None
        self._lock = threading.Lock()  # libraries open bars from worker threads

    def __enter__(self) -> "Board":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def bytes_bar(self, description: str, total: int | None, completed: int = 0) -> Bar:
        return self._add(description, total, completed, _BYTES)

    def count_bar(self, description: str, total: int | None, completed: int = 0) -> Bar:
        return self._add(description, total, completed, _ITEMS)

    def say(self, message: str) -> None:
        say(message, enabled=self.enabled)

    def _add(self, description: str, total: int | None, completed: int, unit: str) -> Bar:
        if self._progress is None:
            return Bar(None, None)
        with self._lock:
            task_id = self._progress.add_task(_description(description), total=total, completed=completed, unit=unit)
        return Bar(self._progress, task_id)


class ListeningBoard(Board):
    """A board with no display that tells `listen(Report)` every change (a server streaming a pull's progress).

    `listen` may raise (a client that went away): the work in progress stops there, as on Ctrl-C."""

    def __init__(self, listen) -> None:
        super().__init__(enabled=False)
        self._listen = listen

    def say(self, message: str) -> None:
        log.info(message)
        self._listen(Report(message))

    def _add(self, description: str, total: int | None, completed: int, unit: str) -> Bar:
        return _ListeningBar(self._listen, Report(description, completed, total, unit))


class Report:
    """One bar's state, or a message (no numbers)."""

    def __init__(self, description: str, completed: float | None = None, total: float | None = None,
                 unit: str = _ITEMS) -> None:
        self.description, self.completed, self.total, self.unit = description, completed, total, unit
        self.finished = False


class _ListeningBar(Bar):
    def __init__(self, listen, report: Report) -> None:
        super().__init__(None, None)
        self._listen, self._report = listen, report
        listen(report)

    def advance(self, amount: float) -> None:
        self._report.completed = (self._report.completed or 0) + amount
        self._listen(self._report)

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        report = self._report
        report.completed = report.completed if completed is None else completed
        report.total = report.total if total is None else total
        report.description = report.description if description is None else description
        self._listen(report)

    def close(self) -> None:
        self._report.finished = True
        self._listen(self._report)


def _description(text: str) -> str:
    """A bar's label is read as markup by its column; file names in it come from a remote repo's listing."""
    return escape(one_line(text))


def say(message: str, *, enabled: bool = True) -> None:
    """A one-line message for the user; always logged, printed unless quiet."""
    log.info(message)
    if enabled:
        console.print(visible(message), highlight=False, markup=False)  # may quote a server's error text


@contextmanager
def transfer(description: str, total: int | None, *, enabled: bool = True, completed: int = 0) -> Iterator[Bar]:
    """A board with one byte bar: `with transfer("下载 / download", size) as bar: bar.advance(n)`."""
    with Board(enabled) as board:
        yield board.bytes_bar(description, total, completed)


@contextmanager
def counter(description: str, total: int | None, *, enabled: bool = True) -> Iterator[Bar]:
    """A board with one item bar: `with counter("评测 / eval", len(items)) as bar: bar.advance(1)`."""
    with Board(enabled) as board:
        yield board.count_bar(description, total)


def tqdm_class(board: Board) -> type:
    """A tqdm subclass whose bars are drawn on `board` (for huggingface_hub's `tqdm_class=`)."""
    from tqdm.std import tqdm as base  # tqdm ships with huggingface_hub; import only when asked

    class BoardTqdm(base):
        """Draws nothing itself (disable=True); forwards counts to a rich bar."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # huggingface_hub's own tqdm takes `name`; vanilla tqdm rejects it
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            unit_is_bytes = kwargs.get("unit") == "B"
            add = board.bytes_bar if unit_is_bytes else board.count_bar
            self._bar = add(str(kwargs.get("desc") or ""), kwargs.get("total"), kwargs.get("initial") or 0)

        def update(self, n: float | None = 1) -> bool | None:
            self.n += n or 0
            self._bar.advance(n or 0)
            return True

        def reset(self, total: float | None = None) -> None:
            self.n = 0
            if total is not None:
                self.total = total
            self._bar.update(completed=0, total=self.total)

        def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
            self._bar.update(description=desc or "")

        def close(self) -> None:
            self._bar.close()
            super().close()

    return BoardTqdm


def callback_class(board: Board, base: type) -> type:
    """A subclass of a per-file callback base `(filename, file_size)` with `update(n)`/`end()` (modelscope)."""

    class BoardCallback(base):  # type: ignore[misc, valid-type]
        def __init__(self, filename: str, file_size: int) -> None:
            super().__init__(filename, file_size)
            self._bar = board.bytes_bar(filename, file_size or None)

        def update(self, size: int) -> None:
            self._bar.advance(size)

        def end(self) -> None:
            self._bar.close()

    return BoardCallback
