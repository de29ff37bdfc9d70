"""Memory arithmetic per runtime: weights, KV cache or recurrent state, compute buffers, runtime overhead.

Every function here is pure: shapes and byte counts in, a `Estimate` out, split by device (GPU and
host RAM) and by part. The numbers are "what the process will hold at its peak after filling the
context", measured the way danlu.memory measures it (resident pages on CPU, device memory on GPU);
the constants below were fitted to measurements with llama-cpp-python 0.3.36 on this project's
machines and are named where they are used. Formulas: shared/reference/evaluation-and-memory.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from danlu.fit.shape import Shape, Weights

MiB = 1024**2
# ---- llama.cpp, measured (see README "predicted vs measured")
LLAMA_HOST_BASE = 8 * MiB  # context, graph metadata, thread pool, llama-cpp-python's own objects
LLAMA_PER_VOCAB = 175  # bytes per vocabulary entry: token strings, id maps, piece cache, sampler arrays
LLAMA_COMPUTE_SLACK = 6 * MiB  # hidden states, norms, small work buffers around the big tensors
CACHE_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
                    "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32}
CELL_PAD = 256  # llama.cpp pads n_ctx (and the SWA cache) to a multiple of 256 cells
# ---- GPUs (not measurable here: no GPU on the development machines; literature values)
CUDA_CONTEXT = 500 * MiB  # device memory the CUDA context and cuBLAS take before any tensor
CUDA_HOST_RUNTIME = 300 * MiB  # resident host memory of the CUDA runtime libraries
TORCH_ALLOCATOR_SLACK = 0.10  # the caching allocator's fragmentation on top of live tensors
# ---- transformers and RWKV (torch)
TORCH_HOST_BASE = 24 * MiB  # kernel code pages first touched by a forward, thread pools, module objects
RWKV_CHUNK = 256  # rwkv's PIPELINE feeds the prompt in chunks of this many tokens
# int8 weights carry per-row and per-column scales: ~2% more than one byte per weight
RWKV_DTYPE_BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp16i8": 1.02, "bf16i8": 1.02, "fp32i8": 1.02}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "fp32": 4, "fp16": 2, "bf16": 2}


@dataclass(frozen=True)
class Breakdown:
    """Bytes on one device, by what holds them."""

    weights: int = 0
    kv_cache: int = 0
    compute: int = 0
    overhead: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.overhead

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


@dataclass(frozen=True)
class Estimate:
    """Predicted peak memory of one model at one context size and placement."""

    backend: str
    n_ctx: int
    gpu: Breakdown
    host: Breakdown
    gpu_layers: int = 0
    n_layers: int = 0
    source: str = "catalog"  # "GGUF header" | "catalog" | "config.json"
    notes: tuple[str, ...] = field(default_factory=tuple)
    # resident host bytes the kernel may drop without harm: mapped pages of tensors llama.cpp
    # repacked into its own buffer are read once at load and never again
    reclaimable: int = 0

    @property
    def total(self) -> int:
        return self.gpu.total + self.host.total

    @property
    def host_needed(self) -> int:
        """RAM the run cannot do without: the resident peak less the reclaimable pages."""
        return self.host.total - self.reclaimable

    def to_dict(self) -> dict:
        return {"backend": self.backend, "n_ctx": self.n_ctx, "gpu_layers": self.gpu_layers,
                "n_layers": self.n_layers, "source": self.source, "total": self.total,
                "host_needed": self.host_needed,
                "gpu": self.gpu.to_dict(), "host": self.host.to_dict(), "notes": list(self.notes)}


@dataclass(frozen=True)
class LlamaOptions:
    """The llama.cpp context settings memory depends on, at llama-cpp-python 0.3.36's defaults."""

    n_ubatch: int = 512
    type_k: str = "f16"
    type_v: str = "f16"
    swa_full: bool = True  # llama.cpp's default: sliding-window layers get n_ctx cells like the others
    flash_attn: bool = False  # llama-cpp-python passes DISABLED unless asked
    n_seq: int = 1
    # embedding mode (backends/llamacpp_embed.py): every token is an output, so a decoder also computes and
    # keeps a row of logits per token of the micro-batch (llama.cpp runs the LM head even when only pooled
    # vectors are read: gemma-3-270m's 262k-row head is most of its work there)
    embedding: bool = False

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> "LlamaOptions":
        """From the `llama_kwargs` a LoadPlan passes to `llama_cpp.Llama` (type_k as ggml enum or name)."""
        names = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0", 20: "iq4_nl", 30: "bf16"}
        pick = lambda key, default: names.get(kwargs[key], default) if isinstance(kwargs.get(key), int) \
            else kwargs.get(key) or default  # noqa: E731
        return cls(n_ubatch=int(kwargs.get("n_ubatch", 512)), type_k=pick("type_k", "f16"),
                   type_v=pick("type_v", "f16"), swa_full=bool(kwargs.get("swa_full", True)),
                   flash_attn=bool(kwargs.get("flash_attn", False)), n_seq=int(kwargs.get("n_seq", 1)),
                   embedding=bool(kwargs.get("embedding", False)))


def pad(n: int, multiple: int = CELL_PAD) -> int:
    return -(-n // multiple) * multiple


# ---------------------------------------------------------------- llama.cpp

def kv_cells(shape: Shape, n_ctx: int, opts: LlamaOptions) -> tuple[int, ...]:
    """Cells per layer: n_ctx padded to 256; a sliding-window layer without swa_full holds
    min(n_ctx, window·n_seq + n_ubatch) padded (llama-kv-cache-iswa.cpp)."""
    full = pad(n_ctx)
    swa = full if opts.swa_full else min(full, pad(shape.sliding_window * opts.n_seq + opts.n_ubatch))
    flags = shape.swa_layers or (False,) * shape.n_layers
    return tuple(swa if is_swa else full for is_swa in flags)


def llamacpp_kv_bytes(shape: Shape, n_ctx: int, opts: LlamaOptions = LlamaOptions()) -> tuple[int, ...]:
    """Bytes of K and V per layer: cells × kv heads × (head_dim_k·bytes_k + head_dim_v·bytes_v)."""
    bk, bv = CACHE_TYPE_BYTES[opts.type_k], CACHE_TYPE_BYTES[opts.type_v]
    return tuple(int(cells * heads * (shape.head_dim_k * bk + shape.head_dim_v * bv))
                 for cells, heads in zip(kv_cells(shape, n_ctx, opts), shape.n_kv_heads))


def _mask_cells(shape: Shape, n_ctx: int, opts: LlamaOptions) -> int:
    """One KQ mask per kind of layer, as wide as that kind's cache: a model mixing window and full
    layers builds two (n_ctx wide, and the window cache's width)."""
    flags = shape.swa_layers or (False,) * shape.n_layers
    return sum({swa: cells for swa, cells in zip(flags, kv_cells(shape, n_ctx, opts))}.values())


def llamacpp_cpu_compute(shape: Shape, n_ctx: int, opts: LlamaOptions) -> int:
    """Compute-buffer bytes the CPU backend touches while filling the context, one ubatch at a time.

    llama.cpp reserves the worst case (with n_ubatch rows of logits), but only written pages are
    resident. The peak is the last ubatch, which attends to all n_ctx cells: f32 scores per head
    (softmax works in place) plus their f16 copy in the work buffer for the V product, the KQ
    mask(s), and the feed-forward gate and up activations."""
    tokens, cells = min(opts.n_ubatch, n_ctx), pad(n_ctx)
    scores = 0 if opts.flash_attn else cells * tokens * shape.n_heads * (4 + 2)
    masks = _mask_cells(shape, n_ctx, opts) * tokens * (2 if opts.flash_attn else 4)
    return scores + masks + 2 * tokens * shape.n_ff * 4 + LLAMA_COMPUTE_SLACK + _logit_rows(shape, opts) * shape.n_vocab * 4


def _logit_rows(shape: Shape, opts: LlamaOptions) -> int:
    """Rows of logits one decode writes beyond the last token's: every token's, for a decoder in embedding mode."""
    return opts.n_ubatch if opts.embedding and not shape.encoder else 0


def llamacpp_gpu_compute(shape: Shape, n_ctx: int, opts: LlamaOptions) -> int:
    """The GPU compute buffer is allocated whole at its worst case: the larger of n_ubatch rows of
    logits and one layer's attention scores, plus masks, the cuBLAS f16 copy of the scores, hidden states."""
    tokens, cells = min(opts.n_ubatch, n_ctx), pad(n_ctx)
    scores = 0 if opts.flash_attn else cells * tokens * shape.n_heads * 4
    biggest = max(shape.n_vocab * tokens * 4, scores, 2 * tokens * shape.n_ff * 4)
    masks = _mask_cells(shape, n_ctx, opts) * tokens * (2 if opts.flash_attn else 4)
    return biggest + masks + scores // 2 + 4 * tokens * shape.n_embd * 4


def llamacpp_host_overhead(shape: Shape, opts: LlamaOptions) -> int:
    """Vocabulary tables, the output (logits) buffer and fixed context state."""
    return LLAMA_HOST_BASE + LLAMA_PER_VOCAB * shape.n_vocab + shape.n_vocab * 4 * max(opts.n_seq, _logit_rows(shape, opts))


def llamacpp_estimate(shape: Shape, weights: Weights, n_ctx: int, gpu_layers: int = 0,
                      opts: LlamaOptions = LlamaOptions(), source: str = "catalog") -> Estimate:
    """llama.cpp with the last `gpu_layers` blocks offloaded (llama.cpp offloads from the end);
    all blocks offloaded moves the output projection too. The token embeddings stay on the host."""
    n = shape.n_layers
    k = max(0, min(gpu_layers, n))
    on_gpu = [il >= n - k for il in range(n)]
    kv = (0,) * n if shape.encoder else llamacpp_kv_bytes(shape, n_ctx, opts)
    output = weights.output or (weights.embedding if weights.tied_output else 0)
    gpu = _llamacpp_gpu_part(shape, weights, kv, on_gpu, output, n_ctx, opts) if k else Breakdown()
    host = _llamacpp_host_part(shape, weights, kv, on_gpu, n_ctx, opts)
    notes = ("SWA layers hold n_ctx cells (swa_full)",) if any(shape.swa_layers) and opts.swa_full else ()
    return Estimate("llamacpp", n_ctx, gpu, host, k, n, source, notes, _repacked_on_cpu(weights, on_gpu))


def _repacked_on_cpu(weights: Weights, on_gpu: list[bool]) -> int:
    repacked = sum(b for b, g in zip(weights.repack_layers, on_gpu) if not g)
    return repacked + (weights.repack_output if not all(on_gpu) else 0)


def _llamacpp_gpu_part(shape: Shape, weights: Weights, kv: tuple[int, ...], on_gpu: list[bool], output: int,
                       n_ctx: int, opts: LlamaOptions) -> Breakdown:
    layer_bytes = sum(b for b, g in zip(weights.layers, on_gpu) if g)
    all_on_gpu = all(on_gpu)
    return Breakdown(weights=layer_bytes + (output if all_on_gpu else 0),
                     kv_cache=sum(b for b, g in zip(kv, on_gpu) if g),
                     compute=llamacpp_gpu_compute(shape, n_ctx, opts), overhead=CUDA_CONTEXT)


def _llamacpp_host_part(shape: Shape, weights: Weights, kv: tuple[int, ...], on_gpu: list[bool],
                        n_ctx: int, opts: LlamaOptions) -> Breakdown:
    cpu_layers = [not g for g in on_gpu]
    output_on_cpu = not all(on_gpu)
    mapped = weights.embedding + weights.other + sum(b for b, c in zip(weights.layers, cpu_layers) if c)
    mapped += weights.output if output_on_cpu else 0
    repacked = _repacked_on_cpu(weights, on_gpu)
    any_cpu_layer, any_gpu = any(cpu_layers), any(on_gpu)
    compute = llamacpp_cpu_compute(shape, n_ctx, opts) if any_cpu_layer else 4 * opts.n_ubatch * shape.n_embd * 4
    overhead = llamacpp_host_overhead(shape, opts) + (CUDA_HOST_RUNTIME if any_gpu else 0)
    return Breakdown(weights=mapped + repacked, kv_cache=sum(b for b, c in zip(kv, cpu_layers) if c),
                     compute=compute, overhead=overhead)


# ---------------------------------------------------------------- transformers (PyTorch)

@dataclass(frozen=True)
class TorchWeights:
    """Weight bytes of a transformers model, and whether they are memory-mapped: transformers 5 maps
    safetensors zero-copy on CPU when the dtype is unchanged, so a page is resident only once read."""

    total: int
    embedding: int = 0
    lm_head: int = 0  # a separate output projection; 0 when tied to the embeddings
    mapped: bool = False


def transformers_kv_bytes(shape: Shape, n_ctx: int, dtype_bytes: int) -> int:
    """HF's cache keeps K and V for every token of every layer in the activation dtype."""
    return sum(w * n_ctx * dtype_bytes for w in shape.kv_width)


def transformers_activations(shape: Shape, n_ctx: int, dtype_bytes: int) -> int:
    """Peak activations of one forward over the whole prompt (what `generate` does with it).

    Alive through every layer: the input embeddings, the hidden state, its residual and normalised
    copy (4·n_embd per token) and RoPE's cos/sin (2·head_dim). On top, inside the MLP: gate·act, up
    and their product (3·n_ff); inside attention: q, k, v and the rotated copies (~5·n_embd); SDPA on
    CPU never builds the n_ctx² score matrix. Plus one row of fp32 logits (`logits_to_keep=1`)."""
    per_token = 4 * shape.n_embd + 2 * shape.head_dim_k + max(3 * shape.n_ff, 5 * shape.n_embd)
    return n_ctx * per_token * dtype_bytes + shape.n_vocab * 4


def transformers_estimate(shape: Shape, weights: TorchWeights, n_ctx: int, dtype_bytes: int, on_gpu: bool,
                          source: str = "catalog") -> Estimate:
    kv = transformers_kv_bytes(shape, n_ctx, dtype_bytes)
    acts = transformers_activations(shape, n_ctx, dtype_bytes)
    if on_gpu:
        gpu = Breakdown(weights.total, kv, acts, CUDA_CONTEXT + int((kv + acts) * TORCH_ALLOCATOR_SLACK))
        host = Breakdown(overhead=TORCH_HOST_BASE + CUDA_HOST_RUNTIME)
        return Estimate("transformers", n_ctx, gpu, host, shape.n_layers, shape.n_layers, source)
    resident, compute = weights.total, acts
    if weights.mapped and weights.lm_head:
        # untied embeddings are read one row per distinct token; the output projection's pages are
        # read last, after the layers' activations are freed, so the peak holds one or the other
        resident -= int(weights.embedding * (1 - min(1.0, n_ctx / max(shape.n_vocab, 1))))
        compute = max(acts, weights.lm_head) - weights.lm_head
    host = Breakdown(resident, kv, compute, TORCH_HOST_BASE)
    return Estimate("transformers", n_ctx, Breakdown(), host, 0, shape.n_layers, source)


# ---------------------------------------------------------------- encoder–decoder (T5, EVA2.0)

def encoder_decoder_kv_bytes(shape: Shape, n_enc: int, n_dec: int, beams: int, dtype_bytes: int) -> int:
    """The decoder's cache: self-attention K/V for each beam's tokens, plus cross-attention K/V over the
    encoder output, computed once per prompt and shared by the beams (`shape.n_layers` counts one stack)."""
    return sum(shape.kv_width) * (n_dec * beams + n_enc) * dtype_bytes


def encoder_activations(shape: Shape, n_enc: int, dtype_bytes: int) -> int:
    """One encoder pass over the prompt: per token the hidden state, its residual and normalised copy
    (3·n_embd), q, k, v and the attention output (4·heads·head_dim), the gated feed-forward (3·n_ff);
    and one layer's attention scores with their softmax (2·heads·n_enc²: the port builds them whole)."""
    per_token = 3 * shape.n_embd + 4 * shape.n_heads * shape.head_dim_k + 3 * shape.n_ff
    return (n_enc * per_token + 2 * shape.n_heads * n_enc * n_enc) * dtype_bytes


def encoder_decoder_estimate(shape: Shape, weight_bytes: int, n_ctx: int, n_reply: int, dtype_bytes: int,
                             on_gpu: bool, beams: int = 1, source: str = "catalog") -> Estimate:
    """An encoder–decoder with an n_ctx-token prompt and n_reply reply tokens per beam: weights, the
    decoder cache, the encoder's activations or a decoding step's fp32 logits (whichever is larger)."""
    kv = encoder_decoder_kv_bytes(shape, n_ctx, n_reply, beams, dtype_bytes)
    step = 3 * beams * shape.n_vocab * 4  # logits, log-probs and the beams' summed scores
    acts = max(encoder_activations(shape, n_ctx, dtype_bytes), step)
    if on_gpu:
        gpu = Breakdown(weight_bytes, kv, acts, CUDA_CONTEXT + int((kv + acts) * TORCH_ALLOCATOR_SLACK))
        host = Breakdown(overhead=TORCH_HOST_BASE + CUDA_HOST_RUNTIME)
        return Estimate("transformers", n_ctx, gpu, host, shape.n_layers, shape.n_layers, source)
    host = Breakdown(weight_bytes, kv, acts, TORCH_HOST_BASE)
    return Estimate("transformers", n_ctx, Breakdown(), host, 0, shape.n_layers, source)


# ---------------------------------------------------------------- RWKV (the rwkv package)

def rwkv_state_bytes(architecture: str, shape: Shape, dtype_bytes: float) -> int:
    """The recurrent state, constant in context length. v4: 2 vectors in the model dtype and 3 in
    fp32 per layer; v5–v7: 2 vectors plus an n_embd × head_size fp32 matrix per layer."""
    if architecture in ("rwkv4", "rwkv"):
        per_layer = 2 * shape.n_embd * dtype_bytes + 3 * shape.n_embd * 4
    else:
        per_layer = 2 * shape.n_embd * dtype_bytes + shape.n_embd * (shape.head_dim_k or 64) * 4
    return int(per_layer * shape.n_layers)


def rwkv_compute(shape: Shape) -> int:
    """Activations of one prompt chunk: the residual, time-mix and 4×-wide channel-mix tensors, fp32."""
    return RWKV_CHUNK * shape.n_embd * (4 + 2 * 4) * 4


def rwkv_estimate(architecture: str, shape: Shape, params: float, n_ctx: int, gpu_layers: int,
                  gpu_dtype: str = "fp16", cpu_dtype: str = "fp32") -> Estimate:
    """Weights split by layer (the rwkv package counts the head as one more layer), state and chunk
    activations on the device that runs the first layer."""
    slots = shape.n_layers + 1
    k = max(0, min(gpu_layers, slots))
    per_slot = params / slots
    gpu_w = int(per_slot * k * RWKV_DTYPE_BYTES[gpu_dtype])
    host_w = int(per_slot * (slots - k) * RWKV_DTYPE_BYTES[cpu_dtype])
    state_dtype = 2 if k else 4
    state, compute = rwkv_state_bytes(architecture, shape, state_dtype), rwkv_compute(shape)
    if not k:
        return Estimate("rwkv", n_ctx, Breakdown(), Breakdown(host_w, state, compute, TORCH_HOST_BASE), 0, slots)
    gpu = Breakdown(gpu_w, state, compute, CUDA_CONTEXT + int(compute * TORCH_ALLOCATOR_SLACK))
    host = Breakdown(host_w, 0, 0, TORCH_HOST_BASE + CUDA_HOST_RUNTIME)
    return Estimate("rwkv", n_ctx, gpu, host, k, slots)
