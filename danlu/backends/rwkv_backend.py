"""RWKV backend: ChatRWKV's `.pth` checkpoints (RWKV-4 to RWKV-7) through the `rwkv` pip package.

What it knows: an RNN carries a fixed-size state instead of a KV cache, so memory does not grow with
the conversation. The engine remembers which ids its state covers; a call whose ids extend them runs
only the new suffix (a chat turn reads only itself), anything else restarts from a fresh state — an
RNN state cannot be cut back. `save_state` returns a deep copy of the state list, so a session can
keep it and a ChatRWKV-style `+reset` / `++` can go back. Tokenizers: the World vocabulary
(`rwkv_vocab_v20230424`, bundled in the package) or the Pile/Raven 20B tokenizer (`20B_tokenizer.json`,
which ships with ChatRWKV, not with the package: put it next to the .pth or pass its path).
What it doesn't: LoRA, batching. ChatRWKV's newline rules for chat turns are `ChatRules` below.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from danlu import rwkv_strategy
from danlu.catalog.schema import ModelSpec, Variant
from danlu.errors import DanluError

from ._decode import CachedPrefixEngine, Run, stream
from .base import Capabilities, Chunk, GenerationParams, LoadPlan
from .hf.tokens import byte_level_alphabet

#: Tokens per forward call while reading a prompt (ChatRWKV's CHUNK_LEN): bounds activation memory.
CHUNK_LEN = 256
EOT = 0  # end of text in both RWKV vocabularies
WORLD_VOCAB = "rwkv_vocab_v20230424"
PILE_VOCAB_SIZES = range(50254, 50305)  # 20B tokenizer: 50,277 entries, padded to 50,304 in some checkpoints


def load(spec: ModelSpec | None, variant: Variant | None, plan: LoadPlan) -> "RwkvEngine":
    """Open a .pth checkpoint with a strategy from the plan, or one chosen from free memory."""
    path = _checkpoint(Path(plan.path).expanduser(), variant)
    peek = _peek(path)
    strategy = _strategy(plan, path, peek)
    tokenizer = choose_tokenizer(path, peek.vocab_size, plan.extra.get("tokenizer"))
    if plan.n_threads and plan.n_threads > 0:
        torch.set_num_threads(plan.n_threads)
    model = _open_model(path, strategy, peek.version)
    engine = RwkvEngine(model, tokenizer, spec, plan.n_ctx, peek.version, strategy)
    if plan.extra.get("rwkv_chat_rules"):
        engine.chat_rules = ChatRules.for_tokenizer(tokenizer)
    return engine


# --- the checkpoint ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Peek:
    """What the checkpoint says about itself before the package loads it."""

    vocab_size: int
    n_layer: int
    version: float


def _checkpoint(path: Path, variant: Variant | None) -> Path:
    if path.is_dir():
        named = path / variant.file if variant and variant.file else None
        candidates = [named] if named and named.exists() else sorted(path.glob("*.pth"))
        if len(candidates) != 1:
            raise DanluError(f"{path} 里应有且只有一个 .pth / {path} should hold exactly one .pth checkpoint, found {len(candidates)}")
        path = candidates[0]
    if not path.exists() or path.suffix != ".pth":
        raise DanluError(f"找不到 RWKV 权重 / no RWKV .pth checkpoint at {path}")
    return path


def _peek(path: Path) -> Peek:
    """Shapes and version from the key names (as rwkv/model.py detects them), loaded lazily with mmap."""
    try:
        w = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:
        raise DanluError(f"无法读取 {path}（文件损坏？）/ cannot read {path} (corrupt?): {exc}") from exc
    keys = [k for k in w if isinstance(k, str)]
    n_layer = 1 + max((int(k.split(".")[1]) for k in keys if k.startswith("blocks.")), default=-1)
    version = 4.0
    if any(k.endswith("att.r_k") for k in keys):
        version = 7.0
    elif any("time_maa" in k for k in keys):
        version = 6.0
    elif any("ln_x" in k for k in keys):
        version = 5.0
    return Peek(int(w["emb.weight"].shape[0]), n_layer, version)


def _strategy(plan: LoadPlan, path: Path, peek: Peek) -> str:
    """The user's strategy if given (validated), else one that fits this machine's free memory."""
    explicit = plan.extra.get("rwkv_strategy")
    if explicit:
        return rwkv_strategy.validate(explicit, peek.version)
    weights = path.stat().st_size  # .pth checkpoints are stored in 16-bit floats
    return rwkv_strategy.choose(weights, peek.n_layer, peek.version, rwkv_strategy.machine_memory())


def _open_model(path: Path, strategy: str, version: float) -> Any:
    """rwkv reads its switches from the environment at import time: JIT on, CUDA kernels off unless set."""
    os.environ.setdefault("RWKV_JIT_ON", "1")
    os.environ.setdefault("RWKV_CUDA_ON", "0")  # "1" compiles a CUDA extension at import (needs nvcc)
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its loading log
        if version >= 7:
            return _rwkv7_class()(str(path.with_suffix("")), strategy)
        return _rwkv_class()(str(path), strategy, verbose=False)


def _rwkv_class() -> Any:
    """rwkv.model.RWKV for v4–v6; with RWKV_V7_ON=1 the module would bind that name to the v7 class."""
    with _environment("RWKV_V7_ON", None):
        from rwkv.model import RWKV
    return RWKV


def _rwkv7_class() -> Any:
    """RWKV-7 lives in the same file behind RWKV_V7_ON=1; import a second copy of it with the switch on."""
    name = "danlu_rwkv7_model"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, importlib.util.find_spec("rwkv.model").origin)
        module = importlib.util.module_from_spec(spec)
        with _environment("RWKV_V7_ON", "1"), contextlib.redirect_stdout(io.StringIO()):
            spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name].RWKV_x070


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """Set (or unset, for None) one environment variable for the duration of an import."""
    saved = os.environ.pop(name, None)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if saved is not None:
            os.environ[name] = saved


# --- tokenizers -------------------------------------------------------------------------------------
class WorldTokenizer:
    """The World vocabulary (65,529 byte strings, greedy longest match), from the rwkv package."""

    def __init__(self) -> None:
        origin = Path(importlib.util.find_spec("rwkv").submodule_search_locations[0])
        from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

        self.trie = TRIE_TOKENIZER(str(origin / f"{WORLD_VOCAB}.txt"))
        self.name = WORLD_VOCAB

    def encode(self, text: str, special: bool) -> list[int]:
        return self.trie.encodeBytes(text.encode("utf-8")) if text else []  # no control tokens in this vocabulary

    def piece(self, token_id: int) -> bytes:
        return self.trie.idx2token.get(token_id, b"")  # 0 (end of text) has no bytes


class JsonTokenizer:
    """A `tokenizers` JSON file: the GPT-NeoX 20B tokenizer of RWKV-4 Pile/Raven models."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.name = path.name
        self.special = {i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special}

    def encode(self, text: str, special: bool) -> list[int]:
        self.tokenizer.encode_special_tokens = not special  # typed "<|endoftext|>" stays text
        return self.tokenizer.encode(text, add_special_tokens=False).ids if text else []

    def piece(self, token_id: int) -> bytes:
        if token_id in self.special:
            return b""
        token = self.tokenizer.id_to_token(token_id) or ""
        alphabet = byte_level_alphabet()
        return bytes(alphabet[c] for c in token) if all(c in alphabet for c in token) else token.encode("utf-8")


@lru_cache(maxsize=1)
def world_tokenizer() -> WorldTokenizer:
    """Building the trie takes ~2 s and it never changes: one per process."""
    return WorldTokenizer()


def choose_tokenizer(path: Path, vocab_size: int, explicit: str | None = None) -> WorldTokenizer | JsonTokenizer:
    """An explicit file, else a tokenizer JSON next to the weights, else World for a 65k vocabulary."""
    if explicit:
        return world_tokenizer() if explicit == WORLD_VOCAB else JsonTokenizer(Path(explicit).expanduser())
    for name in ("20B_tokenizer.json", "tokenizer.json"):
        if (path.parent / name).exists():
            return JsonTokenizer(path.parent / name)
    if vocab_size >= 65529:
        return world_tokenizer()
    if vocab_size in PILE_VOCAB_SIZES:
        raise DanluError(
            f"这是 Pile/Raven 模型（词表 {vocab_size}），需要 20B_tokenizer.json：它随 ChatRWKV 仓库（v2/20B_tokenizer.json）"
            f"发布，不在 rwkv 包里；请放到 {path.parent} / this Pile/Raven model (vocabulary {vocab_size}) needs "
            f"20B_tokenizer.json, which ships with the ChatRWKV repository (v2/20B_tokenizer.json), not with the rwkv "
            f"package: put it in {path.parent}"
        )
    raise DanluError(f"不认识的 RWKV 词表大小 {vocab_size} / unknown RWKV vocabulary size {vocab_size}: put its tokenizer.json next to the weights")


# --- chat rules ----------------------------------------------------------------------------------------
@dataclass
class ChatRules:
    """ChatRWKV's chat-turn logit rules (v2/chat.py): no newline at first, discouraged under 40 tokens,
    pushed after 150 so the reply ends at a blank line; end-of-text banned; '，：？！' never twice in a row."""

    newline_id: int
    avoid_repeat: set[int] = field(default_factory=set)
    short: int = 40
    long: int = 150

    @classmethod
    def for_tokenizer(cls, tokenizer: WorldTokenizer | JsonTokenizer) -> "ChatRules":
        single = [tokenizer.encode(ch, False) for ch in "，：？！"]
        return cls(tokenizer.encode("\n", False)[0], {ids[0] for ids in single if len(ids) == 1})

    def newline_bias(self, index: int) -> float:
        i = index - 1  # ChatRWKV adjusts the logits of token i+1 with the bias of step i
        if i <= 0:
            return float("-inf")
        if i <= self.short:
            return (i - self.short) / 10
        return 0.0 if i <= self.long else (i - self.long) * 0.25

    def __call__(self, index: int, logits: torch.Tensor, out: list[int]) -> None:
        logits[self.newline_id] += self.newline_bias(index)
        logits[EOT] = float("-inf")
        if out and out[-1] in self.avoid_repeat:
            logits[out[-1]] = float("-inf")


# --- the engine -----------------------------------------------------------------------------------------
@dataclass
class RwkvState:
    """A saved recurrent state: the ids it has read, the state tensors, the logits after them."""

    ids: list[int]
    state: list[torch.Tensor] | None
    logits: torch.Tensor | None


def _extends(ids: list[int], prefix: list[int]) -> bool:
    return len(ids) >= len(prefix) and ids[: len(prefix)] == prefix


class RwkvEngine(CachedPrefixEngine):
    """A loaded RWKV model; see the Engine protocol in base.py."""

    def __init__(self, model: Any, tokenizer: WorldTokenizer | JsonTokenizer, spec: ModelSpec | None, n_ctx: int,
                 version: float, strategy: str):
        self.model, self.tokenizer, self.spec, self.n_ctx = model, tokenizer, spec, n_ctx
        self.version, self.strategy = version, strategy
        self.chat_rules: ChatRules | None = None  # set for chat turns; free generation (+gen) runs without
        self.penalty_decay = 0.996  # ChatRWKV fades presence/frequency penalties per token
        self._ids: list[int] = []
        self._state: list[torch.Tensor] | None = None
        self._logits: torch.Tensor | None = None
        self._checkpoint: RwkvState | None = None  # the state after the last prompt, before its reply
        self.capabilities = Capabilities(logits=True, state=True, gpu="cuda" in strategy)

    # --- tokens ---------------------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = False) -> list[int]:
        return self.tokenizer.encode(text, special)  # RWKV vocabularies have no BOS

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return b"".join(self.tokenizer.piece(i) for i in ids)

    def token_to_piece(self, token_id: int) -> bytes:
        return self.tokenizer.piece(token_id)

    def eos_token_ids(self) -> set[int]:
        return {EOT} | set(self.spec.stop_token_ids if self.spec else ())

    def bos_token_id(self) -> int | None:
        return None

    def chat_template(self) -> str | None:
        return None

    # --- generation -------------------------------------------------------------------------------------
    def generate(self, ids: Sequence[int], params: GenerationParams) -> Iterator[Chunk]:
        """Stream chunks; when `ids` extend what the state has read, only the new suffix is run."""
        ids = list(ids)
        if not ids:
            raise DanluError("提示为空 / empty prompt: generation needs at least one token")
        if params.constraint is not None:
            raise DanluError("RWKV 后端不支持 JSON schema / 语法约束：请改用 GGUF 或 transformers 模型 / the RWKV backend "
                             "cannot enforce a JSON schema or grammar: use a GGUF or transformers model for that")
        run = Run(
            prompt_tokens=len(ids), cached_tokens=0, budget=params.max_tokens,
            stop_ids=self.eos_token_ids() | set(params.stop_token_ids), piece=self.token_to_piece,
            prefill=lambda: self._prefill(run, ids), step=lambda token: self._feed([token]),
            adjust=self.chat_rules, penalty_decay=self.penalty_decay,
        )
        return stream(run, params, ids)

    # --- state ------------------------------------------------------------------------------------------
    def save_state(self) -> RwkvState:
        """A deep copy of the state list and the ids it covers (restorable any number of times)."""
        return RwkvState(list(self._ids), copy.deepcopy(self._state), self._logits)

    def restore_state(self, state: RwkvState) -> None:
        self._ids, self._state, self._logits = list(state.ids), copy.deepcopy(state.state), state.logits

    def cached_ids(self) -> list[int]:
        return list(self._ids)

    def export_state(self) -> bytes:
        """The state as bytes, saved with a chat session so a resumed chat need not re-read its history."""
        buf = io.BytesIO()
        torch.save({"ids": self._ids, "state": self._state, "logits": self._logits}, buf)
        return buf.getvalue()

    def import_state(self, blob: bytes) -> None:
        """Restore exported bytes; tensors only (weights_only=True), never arbitrary pickles."""
        saved = torch.load(io.BytesIO(blob), weights_only=True)
        self.restore_state(RwkvState(list(saved["ids"]), saved["state"], saved["logits"]))

    def state_bytes(self) -> int:
        """Bytes the recurrent state holds (flat in the conversation's length)."""
        return sum(t.numel() * t.element_size() for t in self._state or [])

    def close(self) -> None:
        self.model, self._state = None, None

    def _sync(self, ids: list[int]) -> tuple[torch.Tensor, int]:
        """Bring the state to cover `ids`: (next-token logits, how many ids were already read)."""
        if not _extends(ids, self._ids) and self._checkpoint and _extends(ids, self._checkpoint.ids):
            self.restore_state(self._checkpoint)  # the reply was re-tokenized differently: back to the prompt
        n = len(self._ids)
        if ids == self._ids and self._logits is not None:
            return self._logits, n
        if not (n and _extends(ids, self._ids) and len(ids) > n):
            self._ids, self._state, self._logits, n = [], None, None, 0  # an RNN state cannot be cut back
        logits = self._feed(ids[n:])
        self._checkpoint = self.save_state()  # a state at the prompt's end: the next turn can resume here
        return logits, n

    def _feed(self, tokens: list[int], all_logits: bool = False) -> torch.Tensor:
        """Run tokens through the RNN in chunks; the next-token logits (or every position's)."""
        rows = []
        for start in range(0, len(tokens), CHUNK_LEN):
            part = tokens[start : start + CHUNK_LEN]
            with torch.no_grad():
                out, self._state = self.model.forward(part, self._state, full_output=all_logits)
            self._ids.extend(part)
            rows.append(out.reshape(-1, out.shape[-1]) if all_logits else out)
        self._logits = (rows[-1][-1] if all_logits else rows[-1]).float()
        return torch.cat(rows) if all_logits else self._logits
