"""Decoder-only transformers models (GPT-2, Llama, Qwen2, Gemma3, remote-code chat models) as an Engine.

What it knows: the KV cache and the token ids it covers survive between calls. A call reuses the
longest common prefix with the previous one, crops the cache there (`DynamicCache.crop`) and runs
only the new tokens, as llama-cpp-python's `Llama.generate` does — a chat turn does not re-read its
history. Caches that cannot be cropped (legacy tuples from remote code, a sliding window already
past its size) are reused only when the new ids extend the old ones, else rebuilt.
What it doesn't: batching several sequences, beam search.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from danlu.backends._decode import CachedPrefixEngine, Run, stream
from danlu.backends.base import Capabilities, Chunk, GenerationParams, common_prefix

from .common import HFEngineBase

#: Prompt tokens per forward pass: bounds activation memory on long prompts (a 256k vocabulary is 1 MB a row).
PREFILL_CHUNK = 512


@dataclass
class KVState:
    """A saved cache: the ids it covers, the cache itself, and the logits after the last id."""

    ids: list[int]
    cache: Any
    logits: torch.Tensor | None
    pruned_at: int = 0  # see CausalEngine._prune


class CausalEngine(CachedPrefixEngine, HFEngineBase):
    """A decoder-only model with a reusable KV cache; see the Engine protocol in base.py."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._ids: list[int] = []
        self._cache: Any = None
        self._logits: torch.Tensor | None = None  # next-token logits after self._ids
        self._sliding = False  # the cache has sliding-window layers (Gemma3, Qwen2 with a window)
        self._pruned_at = 0  # sliding layers can be cropped back only to here (see _prune)
        forward = inspect.signature(self.model.forward).parameters
        self._keeps_last_logits = "logits_to_keep" in forward
        self.capabilities = Capabilities(
            chat_template=self.chat_template() is not None, logits=True, state=True,
            lora=True, gpu=self.device.type == "cuda",
        )

    # --- generation -------------------------------------------------------------------------
    def generate(self, ids: Sequence[int], params: GenerationParams) -> Iterator[Chunk]:
        """Stream chunks; the cache of the longest common prefix with the last call is reused."""
        ids = list(ids)
        self._check_room(ids)
        run = Run(
            prompt_tokens=len(ids), cached_tokens=0, budget=min(params.max_tokens, self.n_ctx - len(ids)),
            stop_ids=self.eos_token_ids() | set(params.stop_token_ids), piece=self.token_to_piece,
            prefill=lambda: self._prefill(run, ids), step=lambda token: self._feed([token])[-1],
            guide=self._guide(params),
        )
        return stream(run, params, ids)

    # --- state ------------------------------------------------------------------------------
    def save_state(self) -> KVState:
        """A deep copy of the KV cache and the ids it covers (restorable any number of times)."""
        return KVState(list(self._ids), copy.deepcopy(self._cache), self._logits, self._pruned_at)

    def restore_state(self, state: KVState) -> None:
        self._ids, self._cache, self._logits = list(state.ids), copy.deepcopy(state.cache), state.logits
        self._pruned_at = state.pruned_at

    def cached_ids(self) -> list[int]:
        """The ids the KV cache covers now (tests and the memory bench read this)."""
        return list(self._ids)

    def close(self) -> None:
        self._cache, self._logits = None, None
        super().close()

    # --- the cache ----------------------------------------------------------------------------
    def _sync(self, ids: list[int]) -> tuple[torch.Tensor, int]:
        """Make the cache cover exactly `ids`, running only uncached tokens: (next-token logits, reused)."""
        kept = self._truncate(common_prefix(self._ids, ids))
        if kept == len(ids) and self._logits is not None:
            return self._logits, kept
        if kept == len(ids):  # all cached but no logits kept: run the last token again
            kept = self._truncate(kept - 1)
        self._prune()
        return self._feed(ids[kept:])[-1], kept

    def _prune(self) -> None:
        """Sliding layers record every token so a call can be rolled back; trim them to the window
        now, which means later crops can only undo tokens added after this point."""
        if self._sliding and self._cache is not None:
            self._cache.crop(0)
            self._pruned_at = len(self._ids)

    def _truncate(self, keep: int) -> int:
        """Drop cached tokens after `keep`; returns how many stay (0 when the cache had to go)."""
        drop = len(self._ids) - keep
        if drop == 0:
            return keep
        if keep > 0 and self._crop(drop):
            self._ids, self._logits = self._ids[:keep], None
            return keep
        self._ids, self._cache, self._logits = [], None, None
        return 0

    def _crop(self, drop: int) -> bool:
        if not hasattr(self._cache, "crop"):
            return False  # a legacy tuple cache from remote code: cannot be cut back
        if self._sliding and len(self._ids) - drop < self._pruned_at:
            return False  # those tokens already left the sliding window
        try:
            self._cache.crop(-drop)
        except (RuntimeError, ValueError, TypeError):
            return False  # e.g. a sliding-window layer already past its window
        return True

    def _feed(self, tokens: list[int], all_logits: bool = False) -> torch.Tensor:
        """Run tokens after the cached ones, in chunks; logits of the last (or every) position."""
        rows = []
        for start in range(0, len(tokens), PREFILL_CHUNK):
            part = tokens[start : start + PREFILL_CHUNK]
            rows.append(self._forward(part, all_logits))
        logits = torch.cat(rows) if all_logits else rows[-1]
        self._logits = logits[-1].clone()  # a view would pin every position's logits in memory
        return logits

    def _forward(self, tokens: list[int], all_logits: bool) -> torch.Tensor:
        inputs: dict[str, Any] = {"input_ids": self._tensor(tokens), "use_cache": True}
        inputs["past_key_values"] = self._cache if self._cache is not None else self._new_cache()
        if not self.remote_code:  # one unpadded sequence: all ones, which also silences GPT-2's padding warning
            inputs["attention_mask"] = torch.ones(1, len(self._ids) + len(tokens), dtype=torch.long, device=self.device)
        if self._keeps_last_logits and not all_logits:
            inputs["logits_to_keep"] = 1  # the prompt's other positions are never sampled from
        out = self._run(**{k: v for k, v in inputs.items() if v is not None})
        self._cache = out.past_key_values
        self._ids.extend(tokens)
        return out.logits[0]

    def _new_cache(self) -> Any:
        """A DynamicCache shaped by the config (sliding layers stay small); remote code makes its own."""
        if self.remote_code:
            return None
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        self._sliding = any(getattr(layer, "is_sliding", False) for layer in cache.layers)
        if self._sliding:
            cache.activate_past_recording()
        self._pruned_at = 0
        return cache
