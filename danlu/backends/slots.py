"""The prefix cache over llama.cpp sequence ids, used by backends/llamacpp_batched.py.

Each slot is a sequence id whose tokens stay in the KV cache after its request ends. A new request takes
the slot sharing the longest token prefix with its prompt (its own conversation's last turn), or copies
that prefix into a free slot (`seq_cp` shares the cells, it copies nothing) when continuing in place would
throw most of a cache away; when KV cells run short the least recently used idle slot goes first (as
vLLM's automatic prefix caching and llama.cpp's server slots).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from danlu.backends.base import common_prefix

#: Continue a cached slot in place when at least this share of its tokens is reused; else copy the prefix.
REUSE_IN_PLACE = 0.5


@dataclass(eq=False)
class Slot:
    """One llama.cpp sequence id and the tokens its KV cells hold (decoded tokens only)."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0
    request: Any = None  # the request decoding in it, None when it is only a cache

    def touch(self) -> None:
        self.last_used = time.monotonic()




class SlotTable:
    """Chooses a slot for each prompt and keeps the cells in use within `cells` (least recently used out)."""

    def __init__(self, n_slots: int, cells: int, forget: Callable[[int, int], bool],
                 copy_prefix: Callable[[int, int, int], None]):
        self.slots = [Slot(i) for i in range(n_slots)]
        self.cells = cells
        self._forget, self._copy = forget, copy_prefix

    def place(self, prompt: list[int], need: int, reserved: int) -> tuple[Slot, int] | None:
        """A slot ready to continue `prompt`, and how many of its tokens are already cached; None: no room now.

        `need` is the cells this request may fill in all (prompt + max new tokens), `reserved` what the
        active requests may still add."""
        target, source, common = self._choose(prompt)
        if target is None:
            return None
        keep = min(common, len(prompt) - 1)  # the last prompt token is decoded again for fresh logits
        while self.used(excluding=target) + need + reserved > self.cells:
            if not self.evict_idle(protect=(target, source)):
                return None
        return target, self._prepare(target, source, keep)

    def _choose(self, prompt: list[int]) -> tuple[Slot | None, Slot | None, int]:
        idle = [s for s in self.slots if s.request is None]
        if not idle:
            return None, None, 0
        best = max(self.slots, key=lambda s: common_prefix(s.tokens, prompt))
        common = common_prefix(best.tokens, prompt)
        if best.request is None and common and common >= REUSE_IN_PLACE * len(best.tokens):
            return best, best, common
        empty = [s for s in idle if not s.tokens]
        target = empty[0] if empty else min(idle, key=lambda s: s.last_used)
        return target, (best if common else None), common

    def _prepare(self, target: Slot, source: Slot | None, keep: int) -> int:
        """Make `target` hold exactly the first `keep` prompt tokens; returns how many it holds."""
        if source is target:
            if not self._forget(target.seq_id, keep):
                keep = 0  # this cache cannot be cut in the middle: start over
            del target.tokens[keep:]
            return keep
        self._forget(target.seq_id, 0)
        target.tokens = []
        if source is not None and keep:
            self._copy(source.seq_id, target.seq_id, keep)
            target.tokens = list(source.tokens[:keep])
        return len(target.tokens)

    def used(self, excluding: Slot | None = None) -> int:
        """Cells held by the slots (shared prefixes counted once per slot: an upper bound)."""
        return sum(len(s.tokens) for s in self.slots if s is not excluding)

    def evict_idle(self, protect: tuple[Slot | None, ...] = ()) -> bool:
        """Give up the least recently used idle cache; False when there is none."""
        idle = [s for s in self.slots if s.request is None and s.tokens and s not in protect]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.last_used)
        self._forget(victim.seq_id, 0)
        victim.tokens = []
        return True

    def info(self) -> dict:
        cached = sum(1 for s in self.slots if s.request is None and s.tokens)
        return {"slots": len(self.slots), "cached_slots": cached, "kv_cells": self.cells, "kv_cells_used": self.used()}
