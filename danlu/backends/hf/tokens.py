"""Token ids ↔ bytes for Hugging Face tokenizers, the way llama.cpp's token_to_piece gives them.

Streaming needs each token's own bytes (a Chinese character is often split over two byte-level
tokens), but `tokenizer.decode([id])` turns half a character into U+FFFD. The bytes depend on the
tokenizer family, read from the fast tokenizer's decoder: byte-level BPE (GPT-2, Qwen2, Llama 3)
maps each char back to a byte; SentencePiece styles (Llama 1/2, Gemma, T5) use "▁" for a space and
`<0xNN>` byte fallback; WordPiece (BERT, gpt2-dialogbot) joins characters and drops "##".
Special tokens render as nothing, as in llama.cpp, so a stop marker never reaches the screen.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Sequence

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in char → the byte it stands for (the inverse of bytes_to_unicode)."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(visible), 0
    for b in range(256):
        if b not in visible:
            visible.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(visible, chars)}


def decoder_kind(tokenizer: Any) -> str:
    """'bytelevel', 'sentencepiece', 'wordpiece' or 'other', from the fast tokenizer's decoder."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "other"
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    kinds = {d.get("type") for d in decoder.get("decoders", [decoder])}
    if "ByteLevel" in kinds:
        return "bytelevel"
    if "WordPiece" in kinds:
        return "wordpiece"
    if kinds & {"Metaspace", "ByteFallback", "Replace"}:
        return "sentencepiece"
    return "other"


class TokenCodec:
    """Tokenize as text or markup, and give each token's bytes for streaming."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.kind = decoder_kind(tokenizer)
        self.special_ids = set(tokenizer.all_special_ids)
        self.added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
        self._pieces: dict[int, bytes] = {}

    def tokenize(self, text: str, special: bool, bos: int | None) -> list[int]:
        """`special=False` keeps typed markup such as `<|im_end|>` as plain text (the injection guard)."""
        ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"] if text else []
        return ([bos] if bos is not None else []) + list(ids)

    def piece(self, token_id: int) -> bytes:
        if token_id not in self._pieces:
            self._pieces[token_id] = self._piece(token_id)
        return self._pieces[token_id]

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return b"".join(self.piece(i) for i in ids)

    def _piece(self, token_id: int) -> bytes:
        if token_id in self.special_ids:
            return b""
        if token_id in self.added:  # added tokens are stored as plain text, not in the model's alphabet
            return self.added[token_id].encode("utf-8")
        token = self.tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(token, bytes):  # tiktoken-style remote tokenizers (Qwen-1) already give bytes
            return token
        if token is None:
            return b""
        return self._from_vocab_entry(token, token_id)

    def _from_vocab_entry(self, token: str, token_id: int) -> bytes:
        if self.kind == "bytelevel":
            alphabet = byte_level_alphabet()
            if all(ch in alphabet for ch in token):
                return bytes(alphabet[ch] for ch in token)
            return token.encode("utf-8")
        if self.kind == "wordpiece":
            return _wordpiece(token)
        byte = _BYTE_TOKEN.match(token)
        if byte:
            return bytes([int(byte.group(1), 16)])
        if self.kind == "sentencepiece" or "▁" in token:
            return token.replace("▁", " ").encode("utf-8")
        return self.tokenizer.decode([token_id]).encode("utf-8")


def _wordpiece(token: str) -> bytes:
    """BERT pieces: '##' continues a word; a new Latin word gets a space; CJK characters join directly."""
    if token.startswith("##"):
        return token[2:].encode("utf-8")
    if token[:1].isascii() and token[:1].isalnum():
        return b" " + token.encode("utf-8")
    return token.encode("utf-8")
