"""The KV cache operations the batched engine's slot table asks llama.cpp for: cut, share, check, and the sizes.

What it knows: in a unified cache (one pool of cells for every sequence) `seq_cp` shares cells, nothing is
copied; with one stream per sequence it copies only whole streams. A sliding-window layer that keeps only its
window (`swa_full` off, llama.cpp's default) lets a cell be overwritten once it falls `window` positions behind
its sequence's last token (llama.cpp reuses masked cells), so such a cache can be cut back or shared only while
nothing has fallen out of the window yet.
"""

from __future__ import annotations

import llama_cpp

CELL_PAD = 256  # llama.cpp pads every KV stream to a multiple of this many cells


def pad_cells(n: int) -> int:
    return -(-n // CELL_PAD) * CELL_PAD


def pool_cells(n_ctx: int, parallel: int, kv_cells: int | None = None) -> int:
    """Cells of the unified pool: as asked, else one full context per decode lane (llama-server's `-c` for
    `-np` slots of n_ctx each); never less than one context."""
    return pad_cells(max(int(kv_cells or 0) or n_ctx * parallel, n_ctx))


class KvCells:
    """One llama.cpp context's memory, as the slot table's `forget`, `share` and `intact` callbacks."""

    def __init__(self, ctx, model, *, unified: bool, swa_full: bool):
        self._mem = llama_cpp.llama_get_memory(ctx)
        self.unified = unified
        self.window = 0 if swa_full else llama_cpp.llama_model_n_swa(model)

    def forget(self, seq_id: int, keep: int = 0) -> bool:
        """Drop a sequence's cells from position `keep` on; False when a partial cut is impossible (then it holds
        none): llama.cpp refuses some, and a window-only layer may have lost what a cut further back needs."""
        if keep and not self.intact(seq_id, keep):
            keep = -1
        if keep > 0 and llama_cpp.llama_memory_seq_rm(self._mem, seq_id, keep, -1):
            return True
        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        return keep == 0

    def intact(self, seq_id: int, keep: int) -> bool:
        """Whether the first `keep` cells of a sequence still hold what the token after them attends to."""
        if not self.window:
            return True
        last = llama_cpp.llama_memory_seq_pos_max(self._mem, seq_id)
        return keep > last or last + 2 <= self.window

    def share(self, src: int, dst: int, n: int) -> bool:
        """Give `dst` the first `n` cells of `src` (a copy of the whole stream cut back to `n` without a unified
        cache); False where a window-only layer no longer holds what that prefix needs."""
        if not self.intact(src, n):
            return False
        if self.unified:
            llama_cpp.llama_memory_seq_cp(self._mem, src, dst, 0, n)
            return True
        llama_cpp.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        llama_cpp.llama_memory_seq_rm(self._mem, dst, n, -1)
        return True
