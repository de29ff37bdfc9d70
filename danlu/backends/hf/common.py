"""What every transformers engine shares: tokens, stop ids, context checks, the remote-code guard.

The causal and seq2seq engines differ only in how they run the network; the token side of the
Engine contract (tokenize, pieces, eos/bos, chat template) lives here once.
"""

from __future__ import annotations

import gc
from typing import Any, Sequence

import torch

from danlu.backends.base import GenerationParams
from danlu.catalog.schema import ModelSpec
from danlu.errors import ContextOverflow, DanluError

from .grammar import hf_guides
from .loading import remote_code_failure
from .tokens import TokenCodec


class HFEngineBase:
    """Token handling for a loaded transformers model; subclasses add generation."""

    def __init__(self, model: Any, tokenizer: Any, spec: ModelSpec | None, n_ctx: int, remote_code: bool = False,
                 adapters: list | None = None):
        self.model, self.tokenizer, self.spec, self.n_ctx = model, tokenizer, spec, n_ctx
        self.codec = TokenCodec(tokenizer)
        self.remote_code = remote_code
        self.adapters = adapters or []  # lora.AdapterReport per applied adapter: proof it took effect
        self.device = model.get_input_embeddings().weight.device  # where input ids go, also under device_map="auto"
        self._guides = hf_guides(tokenizer, self.eos_token_ids(), self.token_to_piece, self.vocab_size)

    # --- tokens -----------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = False) -> list[int]:
        return self.codec.tokenize(text, special, self.bos_token_id() if add_bos else None)

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return self.codec.detokenize(ids)

    def token_to_piece(self, token_id: int) -> bytes:
        """The token's bytes (may be part of a UTF-8 character); special tokens render as nothing."""
        return self.codec.piece(token_id)

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry as text (special tokens included), for templates."""
        return str(self.tokenizer.convert_ids_to_tokens(token_id))

    def control_tokens(self) -> tuple[str, ...]:
        """Special tokens the tokenizer splits out when asked to (what client text must never become)."""
        added = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        special = [t.content for t in added.values() if getattr(t, "special", False)]
        return tuple(dict.fromkeys([*self.tokenizer.all_special_tokens, *special]))

    def eos_token_ids(self) -> set[int]:
        """The tokenizer's and generation config's end ids, plus the catalog's stop ids."""
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids |= set(configured) if isinstance(configured, (list, tuple)) else {configured}
        if self.tokenizer.eos_token_id is None and self.codec.kind == "wordpiece":
            ids.add(self.tokenizer.sep_token_id)  # BERT-tokenized dialogue bots end a turn with [SEP]
        if self.spec:
            ids |= set(self.spec.stop_token_ids)
        return {i for i in ids if isinstance(i, int) and 0 <= i < self.vocab_size}

    def bos_token_id(self) -> int | None:
        bos = self.tokenizer.bos_token_id
        if bos is None and self.codec.kind == "wordpiece":
            bos = self.tokenizer.cls_token_id  # gpt2-dialogbot starts every prompt with [CLS]
        return bos

    def chat_template(self) -> str | None:
        template = getattr(self.tokenizer, "chat_template", None)
        return template if isinstance(template, str) else None

    @property
    def vocab_size(self) -> int:
        """Rows of the output layer (may exceed the tokenizer: Qwen2 pads its vocabulary)."""
        head = self.model.get_output_embeddings()
        return int(head.weight.shape[0]) if head is not None else len(self.tokenizer)

    # --- shared checks ----------------------------------------------------------------------
    def _check_room(self, ids: Sequence[int]) -> None:
        if not ids:
            raise DanluError("提示为空 / empty prompt: generation needs at least one token")
        if len(ids) >= self.n_ctx:
            raise ContextOverflow(
                f"提示有 {len(ids)} 个 token，超过上下文 {self.n_ctx} / prompt of {len(ids)} tokens "
                f"exceeds the context of {self.n_ctx}: shorten it or load with a larger --ctx"
            )

    def _guide(self, params: GenerationParams) -> Any:
        """The request's constraint at work (outputs/guide.py), or None; a refusal is a DanluError."""
        return self._guides.start(params.constraint) if params.constraint is not None else None

    def _run(self, **inputs: Any) -> Any:
        """One forward pass; remote code that breaks here names the transformers it was written for."""
        try:
            with torch.no_grad():
                return self.model(**inputs)
        except Exception as exc:
            if self.remote_code:
                raise DanluError(remote_code_failure(self.spec, exc)) from exc
            raise

    def _tensor(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.tensor([list(ids)], dtype=torch.long, device=self.device)

    def close(self) -> None:
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
