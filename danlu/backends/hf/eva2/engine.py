"""EVA2.0 as a danlu Engine: the reference encoder input, sampling or beam search, evaluation hooks.

A chat prompt rendered by the `eva2` format (utterances each ending in `<sep>`, then `<s_0>`) goes
through the reference window (layout.py) before the encoder reads it; the decoder starts from `<s_0>`.
With `num_beams` > 1 the reply comes from beam search (beam sampling when temperature > 0, as the
reference script runs it) and arrives in one piece at the end; with one beam it streams token by
token through danlu's shared sampler. Either way the reference's own `generate` settings apply:
no `<sep>` as the first token and no 3-gram repeated from the reply or the context (layout.py).
`next_token_logits` / `loglikelihood` score the decoder's first tokens given the prompt as the encoder
input, as for the T5 models, so `danlu eval` ao and ppl work.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from danlu.backends._beams import BeamRun, beam_search
from danlu.backends._decode import Run, log_softmax_sum, stream
from danlu.backends.base import Capabilities, Chunk, GenerationParams, Timings
from danlu.catalog.schema import ModelSpec
from danlu.errors import ContextOverflow, DanluError
from danlu.streaming import TextStream

from .layout import ReferenceRules, encoder_input
from .modeling import EvaCache, EvaForConditionalGeneration
from .tokenizer import EvaTokenizer


class EvaEngine:
    """One loaded EVA model; see the Engine protocol in backends/base.py."""

    prompt_format = "eva2"  # the named format a bare folder (no catalog entry) is chatted with

    def __init__(self, model: EvaForConditionalGeneration, tokenizer: EvaTokenizer, spec: ModelSpec | None, n_ctx: int):
        self.model, self.tokenizer, self.spec, self.n_ctx = model, tokenizer, spec, n_ctx
        self.device = model.shared.weight.device
        self.capabilities = Capabilities(chat_template=False, logits=True, state=False, lora=False,
                                         gpu=self.device.type == "cuda")
        self._encoded: tuple[list[int], torch.Tensor] | None = None  # a retry of the same prompt skips the encoder

    # --- tokens -------------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = False) -> list[int]:
        """`add_bos` is ignored: EVA's `<s_0>` starts the decoder, an encoder input has no leading token."""
        return self.tokenizer.encode(text, special)

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return b"".join(self.token_to_piece(i) for i in ids)

    def token_to_piece(self, token_id: int) -> bytes:
        return self.tokenizer.piece(token_id)

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.tokens[token_id]

    def eos_token_ids(self) -> set[int]:
        return {self.tokenizer.sep_id} | set(self.spec.stop_token_ids if self.spec else ())

    def bos_token_id(self) -> int | None:
        return None  # no prompt-start token (evaluation must not prepend `<s_0>` to the encoder input)

    def chat_template(self) -> str | None:
        return None

    @property
    def vocab_size(self) -> int:
        return int(self.model.lm_head.weight.shape[0])

    def encoder_input(self, ids: Sequence[int]) -> list[int]:
        """The ids the encoder reads for a prompt (the reference window for a rendered chat)."""
        return encoder_input(ids, self.tokenizer.sep_id, self.tokenizer.bos_id)

    # --- generation ---------------------------------------------------------------------------
    def generate(self, ids: Sequence[int], params: GenerationParams) -> Iterator[Chunk]:
        encoder_ids = self.encoder_input(ids)
        self._check_room(encoder_ids)
        stops = self.eos_token_ids() | set(params.stop_token_ids)
        rules = ReferenceRules(encoder_ids, stops)
        if params.num_beams > 1:
            return self._beams(encoder_ids, params, stops, rules)
        return self._sample(encoder_ids, params, stops, rules)

    def _sample(self, encoder_ids: list[int], params: GenerationParams, stops: set[int],
                rules: ReferenceRules) -> Iterator[Chunk]:
        cache = self._cache(encoder_ids)
        start = self.tokenizer.bos_id

        def adjust(_: int, logits: torch.Tensor, out: list[int]) -> None:
            logits[rules.banned([start, *out])] = -float("inf")

        run = Run(prompt_tokens=len(encoder_ids), cached_tokens=0, budget=params.max_tokens, stop_ids=stops,
                  piece=self.token_to_piece, prefill=lambda: self._step(cache, [start])[0],
                  step=lambda token: self._step(cache, [token])[0], adjust=adjust)
        return stream(run, params, [])  # the context is not the reply's history: no repetition window over it

    def _beams(self, encoder_ids: list[int], params: GenerationParams, stops: set[int],
               rules: ReferenceRules) -> Iterator[Chunk]:
        started = time.perf_counter()
        cache = self._cache(encoder_ids)
        run = BeamRun(start=self.tokenizer.bos_id, first_logits=lambda: self._step(cache, [self.tokenizer.bos_id])[0],
                      step=lambda tokens, parents: self._beam_step(cache, tokens, parents), stop_ids=stops,
                      budget=params.max_tokens, banned=rules.banned)
        with torch.no_grad():
            result = beam_search(run, params)
        yield from self._whole_reply(result.tokens, result.stopped, params, len(encoder_ids), started)

    def _whole_reply(self, tokens: list[int], stopped: bool, params: GenerationParams, prompt_tokens: int,
                     started: float) -> Iterator[Chunk]:
        """A beam search's reply as one chunk, cut at a stop string like a streamed one."""
        text, kept, parts = TextStream(stop=list(params.stop)), [], []
        for token in tokens:
            kept.append(token)
            piece = text.feed(self.token_to_piece(token))
            parts.append(piece.text)
            if piece.stopped:
                stopped = True
                break
        parts.append("" if stopped else text.flush())
        elapsed = time.perf_counter() - started
        timings = Timings(prompt_tokens=prompt_tokens, cached_tokens=0, completion_tokens=len(kept), ttft_s=elapsed,
                          prompt_tps=prompt_tokens / max(elapsed, 1e-9), decode_tps=len(kept) / max(elapsed, 1e-9))
        reply = "".join(parts)
        if reply:
            yield Chunk(reply, kept)
        yield Chunk("", [] if reply else kept, finish_reason="stop" if stopped else "length", timings=timings)

    # --- evaluation ---------------------------------------------------------------------------
    def next_token_logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits of the reply's first token."""
        cache = self._cache(self.encoder_input(ids))
        return self._step(cache, [self.tokenizer.bos_id])[0].float().cpu().numpy()

    def loglikelihood(self, context_ids: Sequence[int], continuation_ids: Sequence[int]) -> float:
        """log p(continuation as the decoder's output | context as the encoder's input)."""
        continuation_ids = list(continuation_ids)
        if not context_ids or not continuation_ids:
            raise ValueError("loglikelihood needs a non-empty context and continuation")
        cache = self._cache(self.encoder_input(context_ids))
        rows = self._step(cache, [self.tokenizer.bos_id, *continuation_ids[:-1]])
        return log_softmax_sum(rows.float().cpu(), continuation_ids)

    def save_state(self) -> None:
        """Nothing to keep between calls: the encoder re-reads the prompt."""
        return None

    def restore_state(self, state: Any) -> None:
        return None

    def close(self) -> None:
        self.model = None
        self._encoded = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- the network --------------------------------------------------------------------------
    def _check_room(self, ids: Sequence[int]) -> None:
        if len(ids) >= self.n_ctx:
            raise ContextOverflow(
                f"提示有 {len(ids)} 个 token，超过上下文 {self.n_ctx} / prompt of {len(ids)} tokens exceeds the "
                f"context of {self.n_ctx}: shorten it"
            )

    def _cache(self, encoder_ids: list[int]) -> EvaCache:
        if self.model is None:
            raise DanluError("模型已卸载 / the model was closed")
        encoded = self._encoded  # read once: another caller may replace it meanwhile
        if encoded is None or encoded[0] != encoder_ids:
            with torch.no_grad():
                encoded = (encoder_ids, self.model.encode(self._tensor([encoder_ids])))
            self._encoded = encoded
        with torch.no_grad():
            return self.model.new_cache(encoded[1])

    def _step(self, cache: EvaCache, tokens: list[int]) -> torch.Tensor:
        """Logits [tokens, vocab] for decoder tokens fed after what the cache holds."""
        with torch.no_grad():
            return self.model.decode(self._tensor([tokens]), cache)[0]

    def _beam_step(self, cache: EvaCache, tokens: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        """Reorder the cache to the surviving beams, then one token each; [beams, vocab]."""
        if cache.keys[0] is not None and cache.keys[0].shape[0] == 1:
            parents = torch.zeros_like(parents)  # after the first step every beam is a copy of the one prefilled row
        cache.reorder(parents.to(self.device))
        with torch.no_grad():
            return self.model.decode(tokens.to(self.device)[:, None], cache)[:, -1]

    def _tensor(self, rows: list[list[int]]) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.long, device=self.device)
