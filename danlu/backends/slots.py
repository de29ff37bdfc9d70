"""The prefix cache over llama.cpp sequence ids, used by backends/llamacpp_batched.py.

Each slot is a sequence id whose tokens stay in the KV cache after its request ends. All slots share one pool
of `cells` KV cells (llama.cpp's unified cache, as llama-server runs it). A new request takes the slot sharing
the longest token prefix with its prompt (its own conversation's last turn), or shares that prefix into a free
slot when continuing in place would throw away more than a few of its tokens (`seq_cp` adds the slot's id to the
same cells: nothing is copied). The table counts cells, not slots: a cell several sequences share counts once, and when the
pool runs short the least recently used idle slot that frees any cells goes first (as vLLM's automatic prefix
caching evicts blocks, least recently used first).

How cells are counted: every stretch of positions a slot decodes in one go is a *run* (an id and the position it
starts at). A slot's tokens are a chain of runs; sharing a prefix hands over the runs below it. A run holds as
many cells as the furthest any slot reaches into it, so the pool holds the sum of that over all runs.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from danlu.backends.base import common_prefix

#: Streams of their own (no shared cells): continue a cached slot in place when at least this share of its tokens
#: is reused; else copy the prefix.
REUSE_IN_PLACE = 0.5
#: One shared pool: continue in place only when at most this many of the slot's tokens are lost (a conversation's
#: own next turn differs from its cache by a re-rendered reply end); else share the prefix (free) and keep the rest.
IN_PLACE_TAIL = 16
_RUN_IDS = itertools.count()


@dataclass(eq=False)
class Slot:
    """One llama.cpp sequence id, the tokens its KV cells hold (decoded tokens only) and the runs they are in."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0
    request: Any = None  # the request decoding in it, None when it is only a cache
    runs: list[tuple[int, int]] = field(default_factory=list)  # (run id, first position), by position
    _open: bool = False  # whether appended tokens continue the last run (nothing shared or cut since it began)

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def append(self, tokens: list[int]) -> None:
        """Tokens just decoded into this sequence's own new cells."""
        if not self._open:
            self.runs.append((next(_RUN_IDS), len(self.tokens)))
            self._open = True
        self.tokens.extend(tokens)

    def cut(self, keep: int) -> None:
        """Keep the first `keep` tokens (0: none)."""
        del self.tokens[keep:]
        self.runs = [run for run in self.runs if run[1] < keep]
        self._open = False

    def share_from(self, source: "Slot", n: int) -> None:
        """Hold the first `n` cells of `source` (the same cells: llama.cpp's seq_cp in a unified cache)."""
        self.tokens = list(source.tokens[:n])
        self.runs = [run for run in source.runs if run[1] < n]
        self._open = source._open = False  # the next tokens of either go to fresh cells

    def extents(self) -> list[tuple[int, int, int]]:
        """(run id, first position, end position) of each run this slot reaches into."""
        ends = [start for _, start in self.runs[1:]] + [len(self.tokens)]
        return [(run, start, end) for (run, start), end in zip(self.runs, ends)]


def cells_used(slots: list[Slot]) -> int:
    """Distinct KV cells the slots hold: per run, from its start to the furthest any slot reaches."""
    spans: dict[int, tuple[int, int]] = {}
    for slot in slots:
        for run, start, end in slot.extents():
            spans[run] = (start, max(end, spans.get(run, (start, start))[1]))
    return sum(end - start for start, end in spans.values())


class SlotTable:
    """Chooses a slot for each prompt and keeps the cells in use within `cells` (least recently used out).

    `forget(seq_id, keep)` cuts a sequence back to `keep` cells (False: it could not, and holds none now);
    `share(src, dst, n)` gives `dst` the first `n` cells of `src` (False: it could not, `dst` holds none);
    `intact(seq_id, keep)` says whether the first `keep` cells of a sequence can still be continued (a sliding
    window may have overwritten what they need)."""

    def __init__(self, n_slots: int, cells: int, forget: Callable[[int, int], bool],
                 share: Callable[[int, int, int], bool], *, shared_cells: bool = True,
                 intact: Callable[[int, int], bool] = lambda seq_id, keep: True):
        self.slots = [Slot(i) for i in range(n_slots)]
        self.cells = cells
        self.shared_cells = shared_cells  # False: every sequence has its own stream, so a shared prefix is a copy
        self._forget, self._share, self._intact = forget, share, intact

    def place(self, prompt: list[int], need: int, reserved: int) -> tuple[Slot, int] | None:
        """A slot ready to continue `prompt`, and how many of its tokens are already cached; None: no room now.

        `need` is the cells this request may fill in all (prompt + max new tokens), `reserved` what the
        active requests may still add."""
        target, source, common = self._choose(prompt)
        if target is None:
            return None
        keep = min(common, len(prompt) - 1)  # the last prompt token is decoded again for fresh logits
        while self._used_if(target, source, keep) + need - keep + reserved > self.cells:
            if not self.evict_idle(protect=(target, source)):
                return None
        return target, self._prepare(target, source, keep)

    def _choose(self, prompt: list[int]) -> tuple[Slot | None, Slot | None, int]:
        idle = [s for s in self.slots if s.request is None]
        if not idle:
            return None, None, 0
        best = max(self.slots, key=lambda s: common_prefix(s.tokens, prompt))
        common = common_prefix(best.tokens, prompt)
        if common and not self._intact(best.seq_id, min(common, len(prompt) - 1)):
            common = 0  # nothing of it can be continued: start afresh, and leave it for its own conversation
        if best.request is None and common and self._in_place(best, common):
            return best, best, common
        empty = [s for s in idle if not s.tokens]
        target = empty[0] if empty else min(idle, key=lambda s: s.last_used)
        return target, (best if common else None), common

    def _in_place(self, slot: Slot, common: int) -> bool:
        if self.shared_cells:
            return len(slot.tokens) - common <= IN_PLACE_TAIL
        return common >= REUSE_IN_PLACE * len(slot.tokens)

    def _prepare(self, target: Slot, source: Slot | None, keep: int) -> int:
        """Make `target` hold exactly the first `keep` prompt tokens; returns how many it holds."""
        if source is target:
            if not self._forget(target.seq_id, keep):
                keep = 0  # this cache cannot be cut here (a sliding window forgot what lies before): start over
            target.cut(keep)
            return keep
        self._forget(target.seq_id, 0)
        target.cut(0)
        if source is not None and keep and self._share(source.seq_id, target.seq_id, keep):
            target.share_from(source, keep)
            if not self.shared_cells:  # a stream of its own: the prefix was copied into cells of its own
                target.runs = [(next(_RUN_IDS), 0)]
        return len(target.tokens)

    def used(self) -> int:
        """KV cells the slots hold, a shared cell once."""
        return cells_used(self.slots)

    def _used_if(self, target: Slot, source: Slot | None, keep: int) -> int:
        """Cells held once `target` is cut back to (or given) the first `keep` tokens."""
        planned = Slot(target.seq_id)
        if source is not None and keep:
            planned.tokens, planned.runs = list(source.tokens[:keep]), [r for r in source.runs if r[1] < keep]
        if source is not target and not self.shared_cells:
            planned.runs = [(-1, 0)] if keep else []
        return cells_used([planned if s is target else s for s in self.slots])

    def evict_idle(self, protect: tuple[Slot | None, ...] = ()) -> bool:
        """Give up the least recently used idle cache whose cells are not all shared; False when there is none."""
        idle = sorted((s for s in self.slots if s.request is None and s.tokens and s not in protect),
                      key=lambda s: s.last_used)
        before = self.used()
        for victim in idle:
            if cells_used([s for s in self.slots if s is not victim]) < before:
                self._forget(victim.seq_id, 0)
                victim.cut(0)
                return True
        return False

    def info(self) -> dict:
        cached = sum(1 for s in self.slots if s.request is None and s.tokens)
        return {"slots": len(self.slots), "cached_slots": cached, "kv_cells": self.cells, "kv_cells_used": self.used()}
