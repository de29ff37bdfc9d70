"""Constraints on transformers engines: llguidance over the model's own Hugging Face tokenizer.

llguidance reads a fast (Rust) tokenizer's full description, so byte-level BPE, SentencePiece-style and added
tokens are all seen as they are; a slow (Python) tokenizer cannot be read that way, and a constraint on such a
model is refused with a message that names the backend. The sampling side lives in backends/_decode.py.
"""

from __future__ import annotations

from typing import Any, Callable, Collection

from danlu.errors import DanluError
from danlu.outputs.guide import Guides


def hf_guides(tokenizer: Any, ends: Collection[int], piece: Callable[[int], bytes], n_vocab: int) -> Guides:
    """Guides for one loaded model; `n_vocab` is the output layer's width (Qwen2 pads past the tokenizer)."""

    def make_tokenizer() -> Any:
        if not getattr(tokenizer, "is_fast", False):
            raise _refused(f"{type(tokenizer).__name__} is a slow tokenizer")
        from llguidance.hf import from_tokenizer

        try:
            return from_tokenizer(tokenizer, n_vocab=max(n_vocab, len(tokenizer)), eos_token=sorted(ends))
        except Exception as exc:  # noqa: BLE001 — llguidance names what it cannot read; the user gets that
            raise _refused(str(exc)) from exc

    return Guides(make_tokenizer, ends, piece, lambda text: tokenizer.encode(text, add_special_tokens=False))


def _refused(why: str) -> DanluError:
    return DanluError(f"transformers 后端无法对这个模型强制 JSON schema / 语法（{why}）：请改用 GGUF 模型 / the "
                      f"transformers backend cannot enforce a JSON schema or grammar for this model: {why}; "
                      f"use a GGUF build of it (llama.cpp)")
