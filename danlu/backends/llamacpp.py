"""llama.cpp backend: GGUF files through llama-cpp-python (pinned to 0.3.36).

What it knows: one sequence per engine; `Llama.generate` already reuses the longest common token
prefix of its KV cache, so a chat turn only decodes its new tokens. Logits for evaluation are read
from the context after a decode (0.3.36 no longer stores them unless `logits_all=True`, which would
cost n_ctx × n_vocab × 4 bytes). A constraint (`params.constraint`) is kept by a sampler of llamacpp_grammar.py in a loop of danlu's own, as in
the batched engine. What it doesn't: batching several sequences (the server's job).
The private attributes used here (`_ctx`, `_batch`, `input_ids`, `n_tokens`) are pinned by the version.
"""

from __future__ import annotations

import ctypes
import time
from typing import Iterator, Sequence

import numpy as np

import llama_cpp
from danlu.catalog.schema import ModelSpec, Variant
from danlu.errors import DanluError
from danlu.streaming import TextStream

from .base import Capabilities, Chunk, GenerationParams, LoadPlan, Timings, common_prefix
from .llamacpp_grammar import ConstrainedSampler, has_penalties, llama_guides


def load(spec: ModelSpec | None, variant: Variant | None, plan: LoadPlan) -> "LlamaCppEngine":
    """Open a GGUF file; a corrupt or truncated file gives a DanluError, not a crash."""
    _check_gguf_magic(plan.path)
    try:
        llm = llama_cpp.Llama(
            model_path=str(plan.path), n_ctx=plan.n_ctx, n_threads=plan.n_threads,
            n_gpu_layers=plan.gpu_layers, use_mmap=plan.use_mmap, verbose=False, seed=0,
            # prefill with the same threads: llama-cpp-python's default is every logical CPU, which made
            # `--threads 1` prefill on 2 threads, ~6x slower on a busy 2-core machine (bench/raw_speed.py)
            **{"n_threads_batch": plan.n_threads, **plan.extra.get("llama_kwargs", {})},
        )
    except (ValueError, RuntimeError) as exc:
        raise DanluError(
            f"llama.cpp 无法加载 {plan.path}（文件可能损坏或不完整，请重新 `danlu pull`）/ "
            f"llama.cpp could not load {plan.path} (corrupt or incomplete? re-run `danlu pull`): {exc}"
        ) from exc
    return LlamaCppEngine(llm, spec)


def _check_gguf_magic(path) -> None:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise DanluError(f"读不到模型文件 / cannot read model file {path}: {exc.strerror}") from exc
    if magic != b"GGUF":
        raise DanluError(f"{path} 不是 GGUF 文件 / is not a GGUF file (magic {magic!r})")


class LlamaCppEngine:
    """A loaded GGUF model; see the Engine protocol in base.py."""

    def __init__(self, llm: llama_cpp.Llama, spec: ModelSpec | None):
        self.llm = llm
        self.spec = spec
        # llama.cpp may pad the context (to 256); the Python-side token buffer keeps the requested size
        self.n_ctx = min(llm.n_ctx(), len(llm.input_ids))
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._guides = llama_guides(self._vocab, self.eos_token_ids(), self.token_to_piece,
                                    lambda text: self.tokenize(text, special=True))
        self.capabilities = Capabilities(
            chat_template=self.chat_template() is not None, logits=True, state=True,
            gpu=bool(llama_cpp.llama_supports_gpu_offload()),
        )

    # --- tokens -----------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = False) -> list[int]:
        if not text:
            return [self.bos_token_id()] if add_bos and self.bos_token_id() is not None else []
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return self.llm.detokenize(list(ids))

    def token_to_piece(self, token_id: int) -> bytes:
        """The token's bytes (may be part of a UTF-8 character); control tokens render as nothing."""
        buf = (ctypes.c_char * 64)()
        n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, False)
        if n < 0:  # piece longer than the buffer: ask again with the size llama.cpp reported
            buf = (ctypes.c_char * -n)()
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, False)
        return bytes(buf[:n])

    def eos_token_ids(self) -> set[int]:
        """End-of-generation ids from the GGUF vocabulary plus the catalog's own stop ids."""
        ids = {t for t in (self.llm.token_eos(), self.llm._model.token_eot()) if t >= 0}
        if self.spec:
            ids |= {t for t in self.spec.stop_token_ids if t < self.llm.n_vocab()}
        return ids

    def is_end_of_generation(self, token_id: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token_id))

    def bos_token_id(self) -> int | None:
        bos = self.llm.token_bos()
        return bos if bos >= 0 else None

    def chat_template(self) -> str | None:
        return self.llm.metadata.get("tokenizer.chat_template")

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry as text (special tokens included), for templates."""
        return self.llm._model.token_get_text(token_id)

    def control_tokens(self) -> tuple[str, ...]:
        """The texts that tokenize(special=True) turns into control tokens: what client text must never be."""
        return control_token_texts(self._vocab, self.llm.n_vocab(), self.token_text)

    # --- generation -------------------------------------------------------------------------
    #: speculative decoding (backends/speculative.py), attached by danlu.drafting; None: plain decoding
    speculator = None

    def generate(self, ids: Sequence[int], params: GenerationParams) -> Iterator[Chunk]:
        """Stream chunks; the KV cache of the longest common prefix with the last call is reused."""
        if self.speculator is not None and self.speculator.applies(params):
            yield from self.speculator.generate(ids, params)
            return
        ids = list(ids)
        self._check_room(ids, params)
        self.llm.set_seed(params.seed if params.seed is not None else int(time.time_ns() % 2**31))
        cached = self.common_prefix(ids)
        stream = TextStream(stop=list(params.stop))
        stops = self.eos_token_ids() | set(params.stop_token_ids)
        start, first, out = time.perf_counter(), None, []
        budget = min(params.max_tokens, self.n_ctx - len(ids))
        finish = "length"
        tokens, sampler = self._tokens(ids, params)
        for token in tokens:
            first = first or time.perf_counter()
            if token in stops or self.is_end_of_generation(token):
                finish = "stop"
                break
            out.append(token)
            piece = stream.feed(self.token_to_piece(token))
            if piece.stopped:
                finish = "stop"
                if piece.text:
                    yield Chunk(piece.text, [token])
                break
            if piece.text:
                yield Chunk(piece.text, [token])
            if sampler is not None and sampler.complete:  # the grammar takes nothing more
                finish = "grammar"
                break
            if len(out) >= budget:
                break
        if sampler is not None:
            sampler.close()
        tail = stream.flush() if finish in ("length", "grammar") else ""
        finish = "stop" if finish == "grammar" else finish
        timings = _timings(len(ids), cached, len(out), start, first or time.perf_counter())
        yield Chunk(tail, [], finish_reason=finish, timings=timings)

    def _tokens(self, ids: list[int], params: GenerationParams) -> tuple[Iterator[int], ConstrainedSampler | None]:
        """llama-cpp-python's own sampling loop, or with a constraint danlu's (see _constrained)."""
        if params.constraint is None:
            return self.llm.generate(ids, **self._sampling(params)), None
        from .llamacpp_batched import make_sampler  # that module imports this one
        from .requests import SubmitOptions

        chain = make_sampler(params, SubmitOptions(), self.llm.n_vocab())
        sampler = ConstrainedSampler(chain, self._guides.start(params.constraint), self.llm.n_vocab(),
                                     has_penalties(params))
        return self._constrained(ids, sampler), sampler

    def _constrained(self, ids: list[int], sampler: ConstrainedSampler) -> Iterator[int]:
        """Decode token by token, each drawn by the constrained sampler; the KV cache stays reusable."""
        self._sync(ids)
        while True:
            token = sampler.sample(self.llm._ctx.ctx, -1)
            yield token
            self.llm.eval([token])

    def _check_room(self, ids: list[int], params: GenerationParams) -> None:
        if len(ids) >= self.n_ctx:
            raise DanluError(
                f"提示有 {len(ids)} 个 token，超过上下文 {self.n_ctx} / prompt of {len(ids)} tokens "
                f"exceeds the context of {self.n_ctx}: shorten it or load with a larger --ctx"
            )

    @staticmethod
    def _sampling(params: GenerationParams) -> dict:
        return dict(
            temp=params.temperature, top_p=params.top_p, top_k=params.top_k, min_p=params.min_p,
            repeat_penalty=params.repetition_penalty, presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
        )

    def common_prefix(self, ids: Sequence[int]) -> int:
        """How many leading tokens of `ids` are already in the KV cache."""
        return common_prefix(self.llm._input_ids, ids)

    # --- evaluation -------------------------------------------------------------------------
    def next_token_logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (float32, n_vocab) for the token after `ids`, reusing the cached prefix."""
        self._sync(list(ids))
        ptr = self.llm._ctx.get_logits_ith(-1)
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).copy()

    def loglikelihood(self, context_ids: Sequence[int], continuation_ids: Sequence[int]) -> float:
        """Sum of log p(continuation | context): one batched decode over the continuation."""
        context_ids, continuation_ids = list(context_ids), list(continuation_ids)
        if not context_ids or not continuation_ids:
            raise ValueError("loglikelihood needs a non-empty context and continuation")
        self._sync(context_ids[:-1], allow_empty=True)
        rows = self._decode_all_logits([context_ids[-1]] + continuation_ids[:-1])
        return float(sum(_log_softmax(row)[tok] for row, tok in zip(rows, continuation_ids)))

    def _sync(self, ids: list[int], allow_empty: bool = False) -> None:
        """Make the KV cache hold exactly `ids`, decoding only what is not cached."""
        keep = self.common_prefix(ids)
        if keep == len(ids) and ids and not allow_empty:
            keep -= 1  # re-decode the last token so its logits are fresh
        self._truncate(keep)
        if len(ids) > keep:
            self.llm.eval(ids[keep:])

    def _truncate(self, keep: int) -> None:
        if keep == 0 or not self.llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            self.llm.reset()
            self.llm._ctx.kv_cache_clear()
            return
        self.llm.n_tokens = keep

    def _decode_all_logits(self, tokens: list[int]) -> list[np.ndarray]:
        """Decode `tokens` after the cached ones, keeping the logits of every position."""
        llm, rows = self.llm, []
        for i in range(0, len(tokens), llm.n_batch):
            batch = tokens[i : i + llm.n_batch]
            llm._batch.set_batch(batch=batch, n_past=llm.n_tokens, logits_all=True)
            llm._ctx.decode(llm._batch)  # raises RuntimeError on failure
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(batch), llm.n_vocab()))
            rows.extend(row.copy() for row in logits)
            llm.input_ids[llm.n_tokens : llm.n_tokens + len(batch)] = batch
            llm.n_tokens += len(batch)
        return rows

    # --- state ------------------------------------------------------------------------------
    def save_state(self) -> llama_cpp.LlamaState:
        return self.llm.save_state()

    def restore_state(self, state: llama_cpp.LlamaState) -> None:
        self.llm.load_state(state)

    def close(self) -> None:
        if self.speculator is not None:
            self.speculator.close()
        self.llm.close()


def _log_softmax(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float64)
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())


def _timings(n_prompt: int, cached: int, n_out: int, start: float, first: float) -> Timings:
    end = time.perf_counter()
    ttft = first - start
    decode_s = max(end - first, 1e-9)
    return Timings(
        prompt_tokens=n_prompt, cached_tokens=cached, completion_tokens=n_out, ttft_s=ttft,
        prompt_tps=(n_prompt - cached) / max(ttft, 1e-9), decode_tps=max(n_out - 1, 0) / decode_s,
    )


def control_token_texts(vocab, n_vocab: int, text_of) -> tuple[str, ...]:
    """Control and unknown tokens of a llama.cpp vocabulary (user-defined ones such as `<think>` parse the
    same with special tokens on or off, so they are not control text)."""
    mask = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
    return tuple(text_of(t) for t in range(n_vocab) if llama_cpp.llama_vocab_get_attr(vocab, t) & mask)
