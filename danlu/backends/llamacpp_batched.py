"""llama.cpp with several sequences decoded together: the server's engine for GGUF models.

What it knows: concurrent requests to one model share one `llama_batch` per step (one decode reads the
weights once for all of them, as llama.cpp's own server and `llama-batched-bench` do), each with its own
sampler chain (penalties, top-k, top-p, min-p, temperature, seeded dist)
and its own grammar when it has a constraint (llamacpp_grammar.py). The KV cache is one pool of `kv_cells`
cells shared by `slots` sequence ids (llama.cpp's unified cache, as llama-server runs it): a finished request
leaves its tokens in its slot, and the next request continues from the slot with the longest common token
prefix (`SlotTable`; the cache operations in kv_cells.py), so interleaved conversations each keep their cache
and a shared prefix is held once; when cells run short, the least recently used idle slot is given up first.
Flash attention is on: with a
pooled cache every decode spans the used part of the pool, and llama.cpp's CPU flash attention skips the
cells a sequence cannot see, where the plain path computes them and masks them out (measured: decode of
gemma-3-270m with 8,000 other cells cached fell to 0.65× without it and stayed at 1.0× with it). Sliding-
window layers keep only their window (llama.cpp's default, as llama-server): a cache of such a model is
continued only where it ends, never cut back or shared mid-way. Prompts are read in steps of up to `N_BATCH`
tokens; while other requests are decoding, a step is cut to about `STEP_TARGET_S` (at least `MIN_CHUNK` tokens) so
their next tokens are not held up long. Small steps cost: every step reads the attention cells again, and at a
depth of 4,096 cells 64-token steps ran at 0.67× of 512-token ones (llama-bench, gemma-3-270m), so a prompt alone
takes full steps, as llama-server does.
What it doesn't: logits for evaluation, save/restore of state, LoRA (use backends/llamacpp.py for those).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from typing import Callable, Iterator, Sequence

import llama_cpp
import numpy as np
from llama_cpp import _internals, _logger

from danlu.backends.requests import (
    EngineFault,
    Event,
    Overloaded,
    Request,
    SeqHandle,
    SubmitOptions,
    TokenLogprob,
)
from danlu.backends.kv_cells import KvCells, pad_cells, pool_cells
from danlu.backends.slots import SlotTable
from danlu.catalog.schema import ModelSpec, Variant
from danlu.errors import DanluError
from danlu.streaming import TextStream

from .base import Capabilities, Chunk, GenerationParams, LoadPlan
from .llamacpp import _check_gguf_magic, control_token_texts
from .llamacpp_grammar import ConstrainedSampler, grammar_complete, has_penalties, llama_guides, sample

log = logging.getLogger(__name__)

PARALLEL = 4  # sequences decoded together
N_BATCH = 512  # most tokens in one llama_decode
STEP_TARGET_S = 1.0  # while others decode, a prefill chunk is sized so a step takes about this long
MIN_CHUNK = 128  # ... but never fewer prompt tokens than this in a step
PENALTY_LAST_N = 64  # as llama.cpp's default penalty window
#: One pool of cells for every slot (llama-server's `--kv-unified`): memory is `parallel × n_ctx` cells however
#: many conversations are cached, and a shared prefix is held once. False: one stream of n_ctx cells per slot.
KV_UNIFIED = True
FLASH_ATTN = True
#: Sliding-window layers hold every position (True) or only their window (False, llama.cpp's default: for
#: gemma-3 the KV cache is ~4× smaller, but such a cache can only be continued where it ends).
SWA_FULL = False


def load(spec: ModelSpec | None, variant: Variant | None, plan: LoadPlan) -> "BatchedLlamaEngine":
    """Open a GGUF file with `parallel` decode lanes, `slots` cached sequences and `kv_cells` KV cells."""
    _check_gguf_magic(plan.path)
    _logger.set_verbose(False)
    parallel = int(plan.extra.get("parallel", PARALLEL))
    slots = min(int(plan.extra.get("slots", 2 * parallel)), llama_cpp.llama_max_parallel_sequences())
    unified = bool(plan.extra.get("kv_unified", KV_UNIFIED))
    cells = pool_cells(plan.n_ctx, parallel, plan.extra.get("kv_cells")) if unified else pad_cells(plan.n_ctx) * slots
    try:
        model = _internals.LlamaModel(path_model=str(plan.path), params=_model_params(plan), verbose=False)
        ctx = _internals.LlamaContext(model=model, params=_context_params(plan, cells, slots, unified), verbose=False)
    except ValueError as exc:
        raise DanluError(f"llama.cpp 无法加载 {plan.path} / llama.cpp could not load {plan.path}: {exc}") from exc
    return BatchedLlamaEngine(model, ctx, spec, n_ctx=plan.n_ctx, parallel=parallel, slots=slots, cells=cells,
                              unified=unified)


def _model_params(plan: LoadPlan):
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0x7FFFFFFF if plan.gpu_layers == -1 else plan.gpu_layers
    params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if plan.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
    return params


def _context_params(plan: LoadPlan, cells: int, slots: int, unified: bool):
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = cells, N_BATCH, N_BATCH, slots
    params.n_threads = int(plan.extra.get("decode_threads") or plan.n_threads)  # one stream decoding alone
    params.n_threads_batch = plan.n_threads  # prompts, and several streams decoding together
    params.kv_unified = unified
    params.swa_full = bool(plan.extra.get("swa_full", SWA_FULL))
    params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if plan.extra.get("flash_attn", FLASH_ATTN)
                              else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    params.no_perf = True
    return params


class BatchedLlamaEngine:
    """A GGUF model serving several sequences at once; implements the token half of the Engine protocol."""

    def __init__(self, model: _internals.LlamaModel, ctx: _internals.LlamaContext, spec: ModelSpec | None, *,
                 n_ctx: int, parallel: int, slots: int, cells: int, unified: bool):
        self.spec, self.n_ctx, self.parallel, self.unified = spec, n_ctx, parallel, unified
        self._model, self._ctx, self._vocab = model, ctx, model.vocab
        self._batch = _internals.LlamaBatch(n_tokens=N_BATCH, embd=0, n_seq_max=1, verbose=False)
        self._kv = KvCells(ctx.ctx, model.model, unified=unified, swa_full=bool(ctx.params.swa_full))
        self.slots = SlotTable(slots, cells, self._kv.forget, self._kv.share, shared_cells=unified, intact=self._kv.intact)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._eos = self.eos_token_ids()
        self._guides = llama_guides(model.vocab, self._eos, self.token_to_piece,
                                    lambda text: self.tokenize(text, special=True))
        self.capabilities = Capabilities(chat_template=self.chat_template() is not None,
                                         gpu=bool(llama_cpp.llama_supports_gpu_offload()))
        self._planned: list[tuple[Request, list[int]]] = []  # what the batch being decoded holds, per request
        self._pending: list[Request] = []
        self._active: list[Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._s_per_token = 0.01  # prefill cost, learnt from each prefill step
        self._worker = threading.Thread(target=self._run, name="danlu-batched-decode", daemon=True)
        self._worker.start()

    # --- tokens -----------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = False) -> list[int]:
        if not text:
            return [self.bos_token_id()] if add_bos and self.bos_token_id() is not None else []
        return self._model.tokenize(text.encode("utf-8"), add_bos, special)

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return b"".join(self.token_to_piece(t) for t in ids)

    def token_to_piece(self, token_id: int) -> bytes:
        if not 0 <= token_id < self.n_vocab:  # llama.cpp aborts the process on an unknown id
            return b""
        buf = (llama_cpp.ctypes.c_char * 64)()
        n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, False)
        if n < 0:
            buf = (llama_cpp.ctypes.c_char * -n)()
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, False)
        return bytes(buf[:n])

    def eos_token_ids(self) -> set[int]:
        ids = {t for t in (self._model.token_eos(), self._model.token_eot()) if t >= 0}
        if self.spec:
            ids |= {t for t in self.spec.stop_token_ids if t < self.n_vocab}
        return ids

    def bos_token_id(self) -> int | None:
        bos = self._model.token_bos()
        return bos if bos >= 0 else None

    def adds_bos(self) -> bool:
        """Whether a plain-text prompt (no template) should start with BOS, as the GGUF says."""
        return bool(llama_cpp.llama_vocab_get_add_bos(self._vocab)) and self.bos_token_id() is not None

    def chat_template(self) -> str | None:
        return self._model.metadata().get("tokenizer.chat_template")

    def control_tokens(self) -> tuple[str, ...]:
        return control_token_texts(self._vocab, self.n_vocab, self.token_text)

    def token_text(self, token_id: int) -> str:
        return self._model.token_get_text(token_id)

    # --- requests ---------------------------------------------------------------------------
    def submit(self, ids: Sequence[int], params: GenerationParams, sink: Callable[[Event], None],
               options: SubmitOptions = SubmitOptions()) -> SeqHandle:
        """Queue a generation; events go to `sink` from the decode thread. Errors arrive as events too."""
        ids = list(ids)
        request = Request(ids, params, options, sink, budget=min(params.max_tokens, self.n_ctx - len(ids)))
        if (error := self._constraint_error(params)) is not None:
            sink(Event(error=error))
            return SeqHandle(request, self._wake)
        with self._cond:  # checked under the lock: a request queued after close() would never be answered
            problem = self._problem(ids)
            if not problem:
                self._pending.append(request)
                self._cond.notify()
        if problem:
            sink(Event(error=Overloaded(problem) if self._closed else DanluError(problem)))
        return SeqHandle(request, self._wake)

    def _problem(self, ids: list[int]) -> str | None:
        if self._closed:
            return "模型已卸载，请重试 / the model was unloaded: retry"
        if not ids:
            return "提示为空 / the prompt is empty"
        if len(ids) >= self.n_ctx:
            return (f"提示有 {len(ids)} 个 token，超过上下文 {self.n_ctx} / prompt of {len(ids)} tokens exceeds "
                    f"the context of {self.n_ctx}: shorten it")
        if any(not 0 <= t < self.n_vocab for t in ids):
            return f"token id 超出词表 / token ids must be in [0, {self.n_vocab})"
        return None

    def _constraint_error(self, params: GenerationParams) -> DanluError | None:
        """Compile the request's grammar in the caller's thread: one that fails does so before it is queued."""
        if params.constraint is None:
            return None
        try:
            self._guides.start(params.constraint)
        except DanluError as exc:
            return exc
        return None

    def generate(self, ids: Sequence[int], params: GenerationParams,
                 options: SubmitOptions = SubmitOptions()) -> Iterator[Chunk]:
        """The Engine contract: a blocking stream of chunks; closing the iterator cancels the request."""
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        handle = self.submit(ids, params, events.put, options)
        try:
            while True:
                event = events.get()
                if event.error:
                    raise event.error
                yield event.chunk
                if event.chunk.finish_reason:
                    return
        finally:
            handle.cancel()

    def load_info(self) -> dict:
        """For /api/ps: requests in flight, cached slots and KV cells in use."""
        return {"active": len(self._active), "waiting": len(self._pending), "parallel": self.parallel,
                **self.slots.info()}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._worker.join(timeout=30)
        for request in self._active + self._pending:
            request.sink(Event(error=Overloaded("模型已卸载，请重试 / the model was unloaded: retry")))
        self._batch.close()
        self._ctx.close()
        self._model.close()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # --- the decode thread ------------------------------------------------------------------
    def _run(self) -> None:
        while self._round():
            pass

    def _round(self) -> bool:
        """One scheduling round and one decode step; False once the engine is closed. A failure that belongs to
        one request (its sampler, its grammar, its text) ends that request only (`_guarded`); one in the shared
        decode ends the requests in that batch, and the waiting ones still get their turn."""
        with self._cond:
            while not self._closed and not self._pending and not self._active:
                self._cond.wait()
            if self._closed:
                return False
            self._admit()
        self._drop_cancelled()
        try:
            self._step()
        except Exception as exc:  # noqa: BLE001 — a bug must end the requests, never hang them
            log.exception("batched decode failed")
            self._drop(list(self._active), EngineFault(f"解码失败 / decoding failed: {type(exc).__name__}: {exc}"))
        return True

    def _guarded(self, request: Request, work: Callable[[], None]) -> bool:
        """Run one request's own work; a failure ends that request with an EngineFault, not the others."""
        try:
            work()
            return True
        except Exception as exc:  # noqa: BLE001 — one request's bug must not end its neighbours
            log.exception("request failed in the batched engine")
            self._drop([request], EngineFault(f"生成失败 / generation failed: {type(exc).__name__}: {exc}"))
            return False

    def _admit(self) -> None:
        """Move waiting requests to slots, first come first served, while lanes and KV cells allow."""
        for request in [r for r in self._pending if r.cancelled]:
            self._pending.remove(request)
            self._finish(request, "cancelled")
        while self._pending and len(self._active) < self.parallel:
            request = self._pending[0]
            reserved = sum(len(r.prompt) + r.budget - len(r.slot.tokens) for r in self._active)
            try:
                placed = self.slots.place(request.prompt, len(request.prompt) + request.budget, reserved)
            except Exception as exc:  # noqa: BLE001 — answered with its own error; the queue goes on
                log.exception("placing a request failed")
                self._pending.pop(0)
                self._finish(request, None, EngineFault(f"排队失败 / admission failed: {type(exc).__name__}: {exc}"))
                continue
            if placed is None and self._active:
                return  # not enough KV cells until an active request ends
            self._pending.pop(0)
            if placed is None:
                self._finish(request, None, DanluError("KV 缓存放不下这个请求 / the request does not fit in the KV "
                                                       "cache: lower max_tokens or shorten the prompt"))
                continue
            request.slot, request.cached = placed
            self._active.append(request)
            self._guarded(request, lambda: self._start(request))  # a start that fails is answered, not lost

    def _start(self, request: Request) -> None:
        request.sampler = make_sampler(request.params, request.options, self.n_vocab)
        if request.params.constraint is not None:  # each request its own grammar, so different ones share a batch
            guide = self._guides.start(request.params.constraint)
            request.sampler = ConstrainedSampler(request.sampler, guide, self.n_vocab, has_penalties(request.params))
        request.text = TextStream(stop=list(request.params.stop))
        request.slot.request = request

    def _drop_cancelled(self) -> None:
        for request in [r for r in self._active if r.cancelled]:
            self._finish(request, "cancelled")

    def _step(self) -> None:
        outputs, n_prefill = self._fill_batch()
        if not outputs and not n_prefill:
            return
        started = time.perf_counter()
        status = llama_cpp.llama_decode(self._ctx.ctx, self._batch.batch)
        if status != 0:
            self._recover(status)
            return
        if n_prefill >= 16:
            per_token = (time.perf_counter() - started) / self._batch.batch.n_tokens
            self._s_per_token = 0.7 * self._s_per_token + 0.3 * per_token
        self._commit()
        for request, index in outputs:
            self._guarded(request, lambda: self._sample(request, index))

    def _fill_batch(self) -> tuple[list[tuple[Request, int]], int]:
        """Decoding requests add their last token; prefilling ones a chunk of prompt within the step budget."""
        self._batch.reset()
        self._planned = []
        outputs = [(r, self._add(r, [r.next_token], True)) for r in self._active if not r.prefilling]
        room = N_BATCH - len(outputs)
        if outputs:  # streams wait on this step: keep it short
            room = min(room, max(MIN_CHUNK, int(STEP_TARGET_S / max(self._s_per_token, 1e-5))))
        n_prefill = 0
        for request in (r for r in self._active if r.prefilling):
            todo = request.prompt[len(request.slot.tokens):]
            take = todo[:max(room, 0)]
            if not take:
                break
            last = len(take) == len(todo)
            index = self._add(request, take, last)
            if last:
                outputs.append((request, index))
            room, n_prefill = room - len(take), n_prefill + len(take)
        return outputs, n_prefill

    def _add(self, request: Request, tokens: list[int], want_logits: bool) -> int:
        """Append tokens of one sequence to the batch; returns the batch index of the last one."""
        b, start, pos = self._batch.batch, self._batch.batch.n_tokens, len(request.slot.tokens)
        for i, token in enumerate(tokens):
            j = start + i
            b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = token, pos + i, 1, False
            b.seq_id[j][0] = request.slot.seq_id
        b.logits[start + len(tokens) - 1] = want_logits
        b.n_tokens = start + len(tokens)
        self._planned.append((request, tokens))
        return start + len(tokens) - 1

    def _commit(self) -> None:
        """After a successful decode the slots hold the tokens just decoded."""
        for request, tokens in self._planned:
            request.slot.append(tokens)
            request.slot.touch()

    def _recover(self, status: int) -> None:
        """No KV room (1): give up an idle cache, else the newest request; other codes end every request."""
        if status == 1 and self.slots.evict_idle():
            return
        if status == 1:
            self._drop(self._active[-1:], Overloaded("KV 缓存已满，请稍后重试或减少 max_tokens / out of KV cache memory: "
                                                     "retry later or lower max_tokens"))
        else:
            self._drop(list(self._active), EngineFault(f"llama_decode 失败 / llama_decode failed with {status}"))

    def _sample(self, request: Request, index: int) -> None:
        token = sample(request.sampler, self._ctx.ctx, index)
        request.first = request.first or time.perf_counter()
        if request.options.logprobs is not None:
            request.pending_lp.append(self._logprob(index, token, request.options.logprobs))
        if self._ends(request, token):
            self._finish(request, "stop")
            return
        request.out.append(token)
        request.pending.append(token)
        piece = request.text.feed(self.token_to_piece(token))
        if piece.text:
            self._emit(request, piece.text)
        if piece.stopped:
            self._finish(request, "stop")
        elif grammar_complete(request.sampler):  # the grammar takes nothing more: the reply is whole
            if tail := request.text.flush():
                self._emit(request, tail)
            self._finish(request, "stop")
        elif len(request.out) >= request.budget:
            self._finish(request, "length")
        else:
            request.next_token = token

    def _ends(self, request: Request, token: int) -> bool:
        if request.options.ignore_eos:
            return False
        return llama_cpp.llama_vocab_is_eog(self._vocab, token) or token in request.params.stop_token_ids \
            or token in self._eos

    def _logprob(self, index: int, token: int, top_n: int) -> TokenLogprob:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx.ctx, index), shape=(self.n_vocab,))
        shifted = logits.astype(np.float64) - logits.max()
        logp = shifted - np.log(np.exp(shifted).sum())
        best = np.argpartition(-logp, top_n)[:top_n] if top_n else []
        top = tuple(sorted(((self._piece_text(int(t)), self.token_to_piece(int(t)), float(logp[t])) for t in best),
                           key=lambda x: -x[2]))
        return TokenLogprob(self._piece_text(token), self.token_to_piece(token), float(logp[token]), top)

    def _piece_text(self, token: int) -> str:
        return self.token_to_piece(token).decode("utf-8", "replace")

    def _emit(self, request: Request, text: str, **final) -> None:
        chunk = Chunk(text, request.pending, **final)
        request.sink(Event(chunk=chunk, logprobs=tuple(request.pending_lp)))
        request.pending, request.pending_lp = [], []

    def _finish(self, request: Request, reason: str | None, error: DanluError | None = None) -> None:
        """End a request: last chunk (or the error) to its sink; its slot stays behind as a cache."""
        if request in self._active:
            self._active.remove(request)
        if request.slot is not None:
            request.slot.request = None
            request.slot.touch()
        if request.sampler is not None:
            request.sampler.close()
        if error is not None:
            request.sink(Event(error=error))
            return
        tail = request.text.flush() if request.text and reason == "length" else ""
        self._emit(request, tail, finish_reason=reason, timings=request.timings())

    def _drop(self, requests: list[Request], error: DanluError) -> None:
        """End requests with an error; their slots are cleared, as a failed decode may have left them partial."""
        for request in requests:
            if request not in self._active:
                continue  # already finished (its error, or its reply, went out)
            self._finish(request, None, error)
            if request.slot is not None:
                self._kv.forget(request.slot.seq_id)
                request.slot.cut(0)


def make_sampler(params: GenerationParams, options: SubmitOptions, n_vocab: int) -> _internals.LlamaSampler:
    """A llama.cpp sampler chain in llama.cpp's order: bias, penalties, top-k, top-p, min-p, temperature, draw."""
    chain = _internals.LlamaSampler()
    if options.logit_bias:
        chain.add_logit_bias(n_vocab, options.logit_bias)
    if params.repetition_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
        chain.add_penalties(n_vocab, PENALTY_LAST_N, params.repetition_penalty, params.frequency_penalty,
                            params.presence_penalty)
    if params.temperature <= 0:
        chain.add_greedy()
        return chain
    if params.top_k > 0:
        chain.add_top_k(params.top_k)
    if params.top_p < 1.0:
        chain.add_top_p(params.top_p, 1)
    if params.min_p > 0:
        chain.add_min_p(params.min_p, 1)
    chain.add_temp(params.temperature)
    chain.add_dist(params.seed if params.seed is not None else random.randrange(2**31))
    return chain
