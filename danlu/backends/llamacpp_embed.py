"""llama.cpp in embedding mode: vectors for texts (mean, cls or last-token pooling) and rerank scores.

What it knows: one context created with `embeddings=True` and the pooling type the GGUF declares
(`<arch>.pooling_type`, applied by llama.cpp inside the graph), else the catalog's, else mean. Several
texts go into one llama_decode, each under its own sequence id, as llama.cpp's `embedding` example and
llama-server do. llama.cpp pools per micro-batch and an encoder cannot split a sequence, so every text
must fit in one: n_batch = n_ubatch = the longest input allowed, and a longer text is refused (or cut,
when asked). A reranker scores query–document pairs built the way llama-server builds them (the GGUF's
`rerank` template, else BOS query EOS [SEP] document EOS) under rank pooling; a score is the
classification head's raw logit. User text is tokenized as text: it never becomes control tokens.
What it doesn't: generation, logits or state — it is not a chat engine (those calls raise).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Callable, Sequence

import llama_cpp
import numpy as np
from llama_cpp import _internals, _logger
from llama_cpp._utils import suppress_stdout_stderr

from danlu.catalog.kinds import POOLING_TYPES, NotAChatModel, gguf_kind
from danlu.catalog.schema import ModelSpec, Variant
from danlu.errors import DanluError

from .base import Capabilities, EmbeddingResult, LoadPlan
from .llamacpp import _check_gguf_magic

MAX_SEQUENCES = 64  # texts in one decode (llama.cpp allows up to llama_max_parallel_sequences())
#: Tokens packed into one decode when the texts are short. Packed sequences share one micro-batch, and an
#: encoder's attention is computed over the whole micro-batch (masked per sequence), so its cost and its
#: score buffer grow with the square of the packed tokens: 4096 packed tokens of bge-m3 hold a 1 GiB
#: score matrix where 512 hold 16 MiB. A text longer than this still goes whole into its own decode.
PACK_TOKENS = 512
RANK = POOLING_TYPES["rank"]
POOLING_NAMES = {v: k for k, v in POOLING_TYPES.items()}
Progress = Callable[[int, int], None]  # (texts done, texts in all)


def load(spec: ModelSpec | None, variant: Variant | None, plan: LoadPlan) -> "EmbeddingEngine":
    """Open a GGUF for embeddings (or, for a reranker, scores); `plan.extra` may set `pooling` (mean, cls,
    last, rank), `rerank=True`, `max_tokens` (at most the context the model was trained on) and
    `pack_tokens` (how many tokens of short texts one decode takes)."""
    _check_gguf_magic(plan.path)
    _logger.set_verbose(False)
    try:
        model = _internals.LlamaModel(path_model=str(plan.path), params=_model_params(plan), verbose=False)
    except ValueError as exc:
        raise DanluError(f"llama.cpp 无法加载 {plan.path} / llama.cpp could not load {plan.path}: {exc}") from exc
    try:
        pooling, max_tokens = choose_pooling(model, spec, plan), _max_tokens(model, spec, plan)
        # llama-cpp-python 0.3.36 maps ggml's log levels one off (WARN passes as ERROR), so context warnings
        # (a pooling override, a context padded past a tiny model's training length) would reach the terminal
        with suppress_stdout_stderr(disable=False):
            ctx = _internals.LlamaContext(model=model, params=_context_params(plan, pooling, max_tokens), verbose=False)
    except DanluError:
        model.close()
        raise
    except ValueError as exc:
        model.close()
        raise DanluError(f"llama.cpp 无法创建嵌入上下文 / could not create an embedding context: {exc}") from exc
    return EmbeddingEngine(model, ctx, spec, max_tokens=max_tokens,
                           pack_tokens=int(plan.extra.get("pack_tokens", PACK_TOKENS)))


def choose_pooling(model: _internals.LlamaModel, spec: ModelSpec | None, plan: LoadPlan) -> int:
    """The plan's `pooling` if given; rank for a reranker; the GGUF's own; the catalog's; else mean.

    Mean is the fallback for a chat (decoder) GGUF that declares none: its last token's state is shaped
    to predict the next token, not to sum up the text, so the average over all positions is the usual
    choice for a decoder that was not trained for embeddings. Measured on 4 Chinese paraphrase triplets
    (cosine of the pair minus the closest unrelated one; bench/embed_speed.py): qwen2.5-coder-1.5b 0.28
    with mean, 0.24 with last; gemma-3-270m 0.054 and 0.058 — no worse, and better on the larger model."""
    pooling = _pooling(model, spec, plan)
    if pooling == RANK and gguf_kind(plan.path) != "rerank":
        raise DanluError(f"{plan.path.name} 没有分类头，不能重排 / {plan.path.name} has no classification head to rerank "
                         "with: use a reranker such as bge-reranker-v2-m3")
    return pooling


def _pooling(model: _internals.LlamaModel, spec: ModelSpec | None, plan: LoadPlan) -> int:
    named = plan.extra.get("pooling")
    if named:
        if named not in POOLING_TYPES or named == "none":
            raise DanluError(f"未知的池化方式 {named!r} / unknown pooling {named!r}: use mean, cls, last or rank")
        return POOLING_TYPES[named]
    if plan.extra.get("rerank") or (spec and spec.kind == "rerank") or (spec is None and gguf_kind(plan.path) == "rerank"):
        return RANK
    declared = int(model.metadata().get(f"{_architecture(model)}.pooling_type", -1))
    if declared > 0:
        return declared
    if spec and spec.embedding:
        return POOLING_TYPES[spec.embedding.pooling]
    return POOLING_TYPES["mean"]


def _architecture(model: _internals.LlamaModel) -> str:
    return model.metadata().get("general.architecture", "")


def _max_tokens(model: _internals.LlamaModel, spec: ModelSpec | None, plan: LoadPlan) -> int:
    """The longest input: the plan's context (or `max_tokens`), capped by the model's trained length and
    the catalog's maximum."""
    limits = [int(plan.extra.get("max_tokens") or plan.n_ctx), model.n_ctx_train() or plan.n_ctx]
    if spec and spec.embedding:
        limits.append(spec.embedding.max_tokens)
    return max(8, min(limits))


def _model_params(plan: LoadPlan):
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0x7FFFFFFF if plan.gpu_layers == -1 else plan.gpu_layers
    params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if plan.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
    return params


def _context_params(plan: LoadPlan, pooling: int, max_tokens: int):
    params = llama_cpp.llama_context_default_params()
    # one text must fit in one micro-batch; a decoder's KV cache holds one batch of texts, shared by all
    # sequences (unified: per-sequence streams would split the cells and cap each text at cells/sequences)
    params.n_ctx = params.n_batch = params.n_ubatch = max_tokens
    # llama.cpp reserves an output row per sequence and asserts (aborts) when that exceeds n_batch
    params.n_seq_max = min(MAX_SEQUENCES, llama_cpp.llama_max_parallel_sequences(), max_tokens)
    params.kv_unified = True
    params.embeddings = True
    params.pooling_type = pooling
    params.n_threads = params.n_threads_batch = plan.n_threads
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as the other llama.cpp engines and fit
    params.no_perf = True
    return params


class EmbeddingEngine:
    """A GGUF model loaded for vectors (`embed`) or, with rank pooling, for scores (`rerank`)."""

    def __init__(self, model: _internals.LlamaModel, ctx: _internals.LlamaContext, spec: ModelSpec | None, *,
                 max_tokens: int, pack_tokens: int = PACK_TOKENS):
        self.spec, self.max_tokens, self.n_ctx, self.pack_tokens = spec, max_tokens, max_tokens, pack_tokens
        self._model, self._ctx, self._vocab = model, ctx, model.vocab
        self._mem = llama_cpp.llama_get_memory(ctx.ctx)  # None for encoders: they keep no cache
        self._batch = _internals.LlamaBatch(n_tokens=max_tokens, embd=0, n_seq_max=1, verbose=False)
        self._max_seqs = int(llama_cpp.llama_n_seq_max(ctx.ctx))
        self.pooling = POOLING_NAMES.get(llama_cpp.llama_pooling_type(ctx.ctx), "none")
        self.dimensions = int(llama_cpp.llama_model_n_embd_out(model.model))
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        facts = spec.embedding if spec else None
        self.normalize_default = facts.normalized if facts else True
        self.query_prefix = facts.query_prefix if facts else ""
        is_rank = self.pooling == "rank"
        self.capabilities = Capabilities(streaming=False, embeddings=not is_rank, rerank=is_rank,
                                         gpu=bool(llama_cpp.llama_supports_gpu_offload()))
        self._lock = threading.Lock()  # one decode at a time: the context and batch are shared

    # --- embeddings -------------------------------------------------------------------------
    def embed(self, texts: Sequence[str], *, normalize: bool | None = None, truncate: bool = False,
              dimensions: int | None = None, on_progress: Progress | None = None) -> EmbeddingResult:
        """One vector per text, in order. `normalize` defaults to what the model's vectors are meant to be
        (L2 for bge and Qwen3-Embedding); `dimensions` keeps the first N values (Matryoshka models) and
        normalises again unless told not to; a text over `max_tokens` is an error unless `truncate`."""
        if not self.capabilities.embeddings:
            raise DanluError("重排模型只给相关性分数，不给向量：用 rerank() / a rerank model gives relevance scores, "
                             "not vectors: use rerank()")
        ids, cut = self._encode_all(checked_texts(texts), truncate)
        vectors = self._run(ids, on_progress)
        vectors = _first_dims(vectors, dimensions)
        norm = (self.normalize_default or dimensions is not None) if normalize is None else normalize
        if norm:
            vectors = l2_normalize(vectors)
        return EmbeddingResult(vectors, [len(x) for x in ids], normalized=norm, truncated=cut)

    def as_queries(self, texts: Sequence[str]) -> list[str]:
        """Texts with the model's query prefix (bge-zh's instruction, Qwen3-Embedding's `Instruct: …\\nQuery:`)."""
        return [self.query_prefix + t for t in texts]

    # --- rerank -----------------------------------------------------------------------------
    def rerank(self, query: str, documents: Sequence[str], *, truncate: bool = False,
               on_progress: Progress | None = None) -> list[float]:
        """A relevance score for each document (the head's raw logit: higher is more relevant). With
        `truncate`, a pair over `max_tokens` keeps the whole query and the start of the document."""
        if not self.capabilities.rerank:
            raise DanluError("这不是重排模型（没有分类头）/ not a rerank model (no classification head): "
                             "load bge-reranker-v2-m3, or pass rerank=True for a GGUF that has one")
        if not isinstance(query, str) or not query.strip():
            raise DanluError("查询为空 / the query is empty")
        docs = checked_texts(documents, what="文档 / document")
        ids = [self._pair(query, d, truncate, i) for i, d in enumerate(docs)]
        return [float(row[0]) for row in self._run(ids, on_progress)]

    # --- tokens -----------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = False) -> list[int]:
        return self._model.tokenize(text.encode("utf-8"), add_bos, special) if text else []

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return b"".join(self.token_to_piece(t) for t in ids)

    def token_to_piece(self, token_id: int) -> bytes:
        if not 0 <= token_id < self.n_vocab:  # llama.cpp aborts the process on an unknown id
            return b""
        buf = (ctypes.c_char * 64)()
        n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, False)
        if n < 0:
            buf = (ctypes.c_char * -n)()
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, False)
        return bytes(buf[:n])

    def eos_token_ids(self) -> set[int]:
        return {t for t in (self._model.token_eos(),) if t >= 0}

    def bos_token_id(self) -> int | None:
        bos = self._model.token_bos()
        return bos if bos >= 0 else None

    def chat_template(self) -> str | None:
        return None

    # --- what a chat engine does and this one does not ----------------------------------------
    def _not_chat(self, *args, **kwargs):
        raise NotAChatModel("嵌入/重排模型不能生成文本 / an embedding or rerank model does not generate text: "
                            "use embed() or rerank()")

    generate = next_token_logits = loglikelihood = save_state = restore_state = _not_chat

    def close(self) -> None:
        with self._lock:
            self._ctx.close()
            self._model.close()

    # --- internals --------------------------------------------------------------------------
    def _encode_all(self, texts: list[str], truncate: bool) -> tuple[list[list[int]], list[bool]]:
        encoded = [self._encode(t, truncate, i) for i, t in enumerate(texts)]
        return [ids for ids, _ in encoded], [cut for _, cut in encoded]

    def _encode(self, text: str, truncate: bool, index: int) -> tuple[list[int], bool]:
        """The text's ids with the special tokens the GGUF adds (CLS/SEP, BOS/EOS), cut to fit if asked."""
        ids = self._model.tokenize(text.encode("utf-8"), True, False)
        if len(ids) <= self.max_tokens:
            return ids, False
        if not truncate:
            raise _too_long(index, len(ids), self.max_tokens)
        lead, trail = self._special_counts()
        body = ids[lead:len(ids) - trail][: self.max_tokens - lead - trail]
        return ids[:lead] + body + ids[len(ids) - trail:], True

    def _special_counts(self) -> tuple[int, int]:
        """How many special tokens tokenization puts before and after the text."""
        plain = len(self._model.tokenize(b"a", False, False))
        wrapped = len(self._model.tokenize(b"a", True, False))
        lead = int(bool(llama_cpp.llama_vocab_get_add_bos(self._vocab)) and self.bos_token_id() is not None)
        return lead, max(0, wrapped - plain - lead)

    def _pair(self, query: str, doc: str, truncate: bool, index: int) -> list[int]:
        """query + document as llama-server's format_prompt_rerank lays them out."""
        text = lambda s: self._model.tokenize(s.encode("utf-8"), False, False)  # noqa: E731  user text, no specials
        template = llama_cpp.llama_model_chat_template(self._model.model, b"rerank")
        if template:
            head, query_ids, mid, doc_ids, tail = self._template_parts(template.decode("utf-8"), text(query), text(doc))
        else:
            head, query_ids, mid, doc_ids, tail = self._plain_parts(text(query), text(doc))
        room = self.max_tokens - len(head) - len(query_ids) - len(mid) - len(tail)
        if len(doc_ids) > room:
            if not truncate or room < 1:
                raise _too_long(index, len(head + query_ids + mid + doc_ids + tail), self.max_tokens, pair=True)
            doc_ids = doc_ids[:room]
        return head + query_ids + mid + doc_ids + tail

    def _plain_parts(self, query_ids: list[int], doc_ids: list[int]):
        vocab = self._vocab
        eos = llama_cpp.llama_vocab_eos(vocab)
        eos = eos if eos >= 0 else llama_cpp.llama_vocab_sep(vocab)
        head = [llama_cpp.llama_vocab_bos(vocab)] if llama_cpp.llama_vocab_get_add_bos(vocab) else []
        end = [eos] if llama_cpp.llama_vocab_get_add_eos(vocab) else []
        sep = [llama_cpp.llama_vocab_sep(vocab)] if llama_cpp.llama_vocab_get_add_sep(vocab) else []
        return head, query_ids, end + sep, doc_ids, end

    def _template_parts(self, template: str, query_ids: list[int], doc_ids: list[int]):
        """The model's own rerank template (Qwen3-Reranker style, with {query} and {document}); its text is
        the model's and may hold control tokens, the user's parts are tokenized as plain text."""
        special = lambda s: self._model.tokenize(s.encode("utf-8"), False, True) if s else []  # noqa: E731
        before, _, rest = template.partition("{query}")
        middle, _, after = rest.partition("{document}")
        return special(before), query_ids, special(middle), doc_ids, special(after)

    def _run(self, ids: list[list[int]], on_progress: Progress | None) -> np.ndarray:
        """Decode the sequences in batches of whole texts; one row of pooled output per text."""
        width = self.dimensions if self.pooling != "rank" else max(1, llama_cpp.llama_model_n_cls_out(self._model.model))
        out = np.zeros((len(ids), width), dtype=np.float32)
        with self._lock:
            done = 0
            lengths = list(map(len, ids))
            budget = min(self.max_tokens, max(self.pack_tokens, max(lengths)))  # never over n_ubatch: llama.cpp aborts
            for group in pack(lengths, budget, self._max_seqs):
                out[group] = self._decode([ids[i] for i in group], width)
                done += len(group)
                if on_progress:
                    on_progress(done, len(ids))
        return out

    def _decode(self, sequences: list[list[int]], width: int) -> np.ndarray:
        if self._mem:  # a decoder keeps a KV cache: each batch starts from an empty one
            llama_cpp.llama_memory_clear(self._mem, True)
        self._batch.reset()
        for seq_id, tokens in enumerate(sequences):
            self._batch.add_sequence(tokens, seq_id, True)  # pooling needs every token marked as an output
        try:
            self._ctx.decode(self._batch)
        except RuntimeError as exc:
            raise DanluError(f"llama.cpp 计算嵌入失败 / llama.cpp failed to compute embeddings: {exc}") from exc
        rows = [llama_cpp.llama_get_embeddings_seq(self._ctx.ctx, s) for s in range(len(sequences))]
        if any(not row for row in rows):
            raise DanluError("llama.cpp 没有给出池化后的向量 / llama.cpp returned no pooled vector")
        return np.stack([np.ctypeslib.as_array(row, shape=(width,)).copy() for row in rows])


def pack(lengths: list[int], max_tokens: int, max_seqs: int) -> list[list[int]]:
    """Consecutive texts grouped so each group has at most `max_tokens` tokens and `max_seqs` texts."""
    groups: list[list[int]] = []
    used = 0
    for i, n in enumerate(lengths):
        if not groups or used + n > max_tokens or len(groups[-1]) >= max_seqs:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += n
    return groups


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def _first_dims(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    if dimensions is None:
        return vectors
    if not 1 <= dimensions <= vectors.shape[1]:
        raise DanluError(f"dimensions 应在 1 到 {vectors.shape[1]} 之间 / dimensions must be 1 to {vectors.shape[1]}")
    return np.ascontiguousarray(vectors[:, :dimensions])


def checked_texts(texts: Sequence[str], what: str = "文本 / text") -> list[str]:
    zh, _, en = what.partition(" / ")
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise DanluError(f"没有{zh} / no {en}s given: pass a non-empty list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DanluError(f"第 {i} 条{zh}不是字符串 / {en} {i} is not a string")
        if not text.strip():
            raise DanluError(f"第 {i} 条{zh}为空 / {en} {i} is empty")
    return list(texts)


def _too_long(index: int, n: int, limit: int, pair: bool = False) -> DanluError:
    what_zh, what_en = ("查询加第 {i} 篇文档", "query plus document {i}") if pair else ("第 {i} 条文本", "text {i}")
    return DanluError(f"{what_zh.format(i=index)}有 {n} 个 token，超过模型上限 {limit} / {what_en.format(i=index)} has "
                      f"{n} tokens, over the model's limit of {limit}: shorten it, or ask for truncation")
