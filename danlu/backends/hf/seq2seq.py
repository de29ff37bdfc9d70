"""Encoder–decoder transformers models (T5: ChatYuan, PromptCLUE) as an Engine.

The prompt ids go to the encoder; the reply is decoded from `decoder_start_token_id` with a
self-attention cache. There is no prefix to reuse between chat turns — the encoder reads the whole
prompt each time (T5 prompts are short: ChatYuan keeps 5 turns) — so `state` is not a capability;
only an identical prompt (a retry) reuses the encoder output. Like the reference scripts, the
encoder input ends with `</s>`, which is added when the caller did not.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch

from danlu.backends._decode import Run, log_softmax_sum, stream
from danlu.backends.base import Capabilities, Chunk, GenerationParams

from .common import HFEngineBase


class Seq2SeqEngine(HFEngineBase):
    """A T5-style model; see the Engine protocol in base.py."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._encoded: tuple[list[int], Any] | None = None  # (encoder ids, encoder outputs) of the last call
        self.capabilities = Capabilities(
            chat_template=self.chat_template() is not None, logits=True, state=False,
            lora=True, gpu=self.device.type == "cuda",
        )

    @property
    def decoder_start(self) -> int:
        start = self.model.config.decoder_start_token_id
        return start if start is not None else self.tokenizer.pad_token_id

    def generate(self, ids: Sequence[int], params: GenerationParams) -> Iterator[Chunk]:
        """Encode the prompt, then decode the reply token by token."""
        ids = self._with_eos(ids)
        self._check_room(ids)
        cache = self._new_cache()
        run = Run(
            prompt_tokens=len(ids), cached_tokens=0, budget=params.max_tokens,
            stop_ids=self.eos_token_ids() | set(params.stop_token_ids), piece=self.token_to_piece,
            prefill=lambda: self._decode(ids, [self.decoder_start], cache)[-1],
            step=lambda token: self._decode(ids, [token], cache)[-1], guide=self._guide(params),
        )
        return stream(run, params, [])  # the encoder's ids are not the reply's history: no repeat window over them

    def next_token_logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits of the reply's first token."""
        return self._decode(self._with_eos(ids), [self.decoder_start], None)[-1].float().cpu().numpy()

    def loglikelihood(self, context_ids: Sequence[int], continuation_ids: Sequence[int]) -> float:
        """log p(continuation as the decoder's output | context as the encoder's input)."""
        continuation_ids = list(continuation_ids)
        if not context_ids or not continuation_ids:
            raise ValueError("loglikelihood needs a non-empty context and continuation")
        decoder_ids = [self.decoder_start, *continuation_ids[:-1]]
        return log_softmax_sum(self._decode(self._with_eos(context_ids), decoder_ids, None), continuation_ids)

    def save_state(self) -> None:
        """Nothing to keep between calls: the encoder re-reads the prompt."""
        return None

    def restore_state(self, state: Any) -> None:
        return None

    def _with_eos(self, ids: Sequence[int]) -> list[int]:
        ids, eos = list(ids), self.tokenizer.eos_token_id
        return ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids

    def _encoder_outputs(self, ids: list[int]) -> Any:
        if self._encoded is None or self._encoded[0] != ids:
            with torch.no_grad():
                self._encoded = (ids, self.model.get_encoder()(input_ids=self._tensor(ids)))
        return self._encoded[1]

    def _decode(self, ids: list[int], decoder_ids: list[int], cache: Any) -> torch.Tensor:
        out = self._run(
            encoder_outputs=self._encoder_outputs(ids), decoder_input_ids=self._tensor(decoder_ids),
            past_key_values=cache, use_cache=cache is not None,
        )
        return out.logits[0]

    def _new_cache(self) -> Any:
        from transformers import DynamicCache, EncoderDecoderCache

        return EncoderDecoderCache(DynamicCache(), DynamicCache())
