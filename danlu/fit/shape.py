"""What the estimate knows about a model before placing it: its shape and how its weights split up.

Two sources give the same two objects: a local GGUF header (exact tensor sizes, which tensors
llama.cpp will repack on this CPU) or the catalog (size on disk and the shape facts in models.md,
with the split into embeddings / layers / output estimated). A Hugging Face `config.json` is a
third source, for a local transformers directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from danlu.catalog.schema import ModelSpec, Variant
from danlu.errors import DanluError
from danlu.gguf_info import OUTPUT, TOKEN_EMBD, GGUFInfo, TensorInfo, swa_pattern, SWA_PATTERNS

# Types ggml's CPU backend copies into an interleaved "repacked" buffer at load (ggml-cpu/repack.cpp,
# ggml_repack_get_optimal_repack_type). With mmap the original pages stay resident too, so a
# repacked tensor costs its size twice in RAM. x86 needs AVX2 (Q2_K: AVX-512); ARM needs dot-product.
X86_REPACK = frozenset({"q4_0", "q4_k", "iq4_nl", "mxfp4"})
ARM_REPACK = frozenset({"q4_0", "q4_k", "q5_k", "q6_k", "iq4_nl", "mxfp4", "q8_0"})
# architectures whose attention is bidirectional: llama.cpp keeps no KV cache for them
ENCODER_ARCHITECTURES = frozenset({"bert", "xlm-roberta", "roberta", "nomic-bert", "jina-bert-v2", "modern-bert"})
# share of layer weights a catalog variant (no local header) has in repackable types; Q4_K_M mixes
# Q4_K with Q6_K/Q5_0, so about half (gemma-3-270m: 5% because of its odd dims; qwen2.5-1.5b: ~60%)
CATALOG_REPACK_SHARE = {"q4_0": 1.0, "iq4_nl": 1.0, "q4_k": 0.6}
#: Catalog architectures with an encoder and a decoder of `n_layers` blocks each.
ENCODER_DECODER = frozenset({"t5", "eva2"})


@dataclass(frozen=True)
class Shape:
    """The dimensions memory depends on; per-layer tuples where layers differ."""

    architecture: str
    n_layers: int
    n_embd: int
    n_ff: int
    n_heads: int
    n_kv_heads: tuple[int, ...]
    head_dim_k: int
    head_dim_v: int
    n_vocab: int
    sliding_window: int = 0
    swa_layers: tuple[bool, ...] = ()
    encoder: bool = False  # bidirectional attention (BERT, XLM-RoBERTa): no KV cache

    @property
    def kv_width(self) -> tuple[int, ...]:
        """Elements of K plus V per token, per layer."""
        return tuple(h * (self.head_dim_k + self.head_dim_v) for h in self.n_kv_heads)


@dataclass(frozen=True)
class Weights:
    """Weight bytes by where llama.cpp puts them; `repack_*` are extra copies made on the CPU."""

    embedding: int
    output: int  # 0 when the output projection reuses the embeddings
    layers: tuple[int, ...]
    other: int
    repack_layers: tuple[int, ...]
    repack_output: int = 0
    tied_output: bool = False
    exact: bool = False  # from a header, not arithmetic

    @property
    def total(self) -> int:
        return self.embedding + self.output + sum(self.layers) + self.other


def repack_types(flags: frozenset[str], machine: str) -> frozenset[str]:
    """The tensor types llama.cpp's CPU backend repacks on a CPU with these features."""
    if machine.lower() in ("x86_64", "amd64", "i686", "x86"):
        if "avx2" not in flags:
            return frozenset()
        return X86_REPACK | ({"q2_k"} if "avx512f" in flags else frozenset())
    if machine.lower() in ("aarch64", "arm64") and flags & {"asimddp", "dotprod", "i8mm"}:
        return ARM_REPACK
    return frozenset()


# ---------------------------------------------------------------- from a GGUF header

def shape_from_gguf(info: GGUFInfo) -> Shape:
    return Shape(info.architecture, info.n_layers, info.n_embd, info.n_ff, info.n_heads, info.n_kv_heads,
                 info.head_dim_k, info.head_dim_v, info.n_vocab, info.sliding_window, info.swa_layers,
                 encoder=not info.causal)


def weights_from_gguf(info: GGUFInfo, repackable: frozenset[str]) -> Weights:
    def repacks(t: TensorInfo) -> bool:
        # token_embd is read with get_rows, which the repacked layout does not serve
        return t.type_name in repackable and t.name != TOKEN_EMBD and len(t.shape) == 2 and t.shape[1] % 8 == 0

    repack = [0] * info.n_layers
    for t in info.tensors:
        if t.layer is not None and t.layer < info.n_layers and repacks(t):
            repack[t.layer] += t.n_bytes
    layers = tuple(info.layer_bytes())
    embedding = info.bytes_where(lambda t: t.name == TOKEN_EMBD)
    output = info.bytes_where(lambda t: t.name == OUTPUT)
    return Weights(embedding=embedding, output=output, layers=layers,
                   other=info.weight_bytes - embedding - output - sum(layers), repack_layers=tuple(repack),
                   repack_output=info.bytes_where(lambda t: t.name == OUTPUT and repacks(t)),
                   tied_output=info.tied_output, exact=True)


# ---------------------------------------------------------------- from the catalog

def shape_from_spec(spec: ModelSpec) -> Shape:
    """The catalog's shape facts; missing ones are filled from the parameter count."""
    s = spec.shape
    n_layers = s.n_layers or 1
    n_embd = s.n_embd or _embd_from_params(spec.params_b, n_layers)
    n_heads = s.n_heads or max(1, n_embd // 128)
    head_dim = s.head_dim or n_embd // n_heads
    n_kv = s.n_kv_heads or n_heads
    window = s.sliding_window or 0
    swa = swa_pattern(n_layers, *SWA_PATTERNS[spec.architecture]) if window and spec.architecture in SWA_PATTERNS \
        else (False,) * n_layers
    ffn = encoder_decoder_ffn if spec.architecture in ENCODER_DECODER else ffn_from_params
    return Shape(spec.architecture, n_layers, n_embd, ffn(spec, n_layers, n_embd, n_heads, n_kv, head_dim),
                 n_heads, (n_kv,) * n_layers, head_dim, head_dim, spec.vocab_size, window, swa,
                 encoder=spec.architecture in ENCODER_ARCHITECTURES)


def _embd_from_params(params_b: float, n_layers: int) -> int:
    # a transformer block holds about 12·d² parameters
    return int((params_b * 1e9 / n_layers / 12) ** 0.5)


def ffn_from_params(spec: ModelSpec, n_layers: int, n_embd: int, n_heads: int, n_kv: int, head_dim: int) -> int:
    """The feed-forward width the parameter count implies for a gated MLP (three n_embd × n_ff matrices).

    For an ungated MLP (GPT-2, T5) this gives 2/3 of the true width, but its activations (two
    tensors instead of three) then come out the same, which is all the estimate uses it for."""
    per_layer = (spec.params_b * 1e9 - 2 * spec.vocab_size * n_embd) / n_layers
    attention = n_embd * head_dim * (2 * n_heads + 2 * n_kv)
    n_ff = int((per_layer - attention) / (3 * n_embd))
    return n_ff if n_ff >= n_embd else 4 * n_embd


def encoder_decoder_ffn(spec: ModelSpec, n_layers: int, n_embd: int, n_heads: int, n_kv: int, head_dim: int) -> int:
    """The same for an encoder–decoder: per encoder block one attention and per decoder block two, each
    2·n_embd·(heads + kv heads)·head_dim, plus a gated MLP in every block; an embedding and an output
    matrix. (EVA2.0-base: 0.3B, 12 + 12 × 768 gives 3,055 for the true 3,072.)"""
    attention = n_embd * head_dim * (2 * n_heads + 2 * n_kv)
    rest = spec.params_b * 1e9 - 2 * spec.vocab_size * n_embd - 3 * n_layers * attention
    n_ff = int(rest / (6 * n_layers * n_embd))
    return n_ff if n_ff >= n_embd else 4 * n_embd


def weights_from_spec(spec: ModelSpec, variant: Variant, shape: Shape, repackable: frozenset[str]) -> Weights:
    """Split the catalog's size into embeddings, layers and output by the shape's arithmetic."""
    total = weight_bytes_for(spec, variant)
    per_param = total / max(spec.params_b * 1e9, 1)
    embedding = int(shape.n_vocab * shape.n_embd * per_param)
    # most seed models keep a separate output matrix; embedding and rerank models have no LM head
    output = embedding if spec.kind == "chat" else 0
    per_layer = max(0, (total - embedding - output) // shape.n_layers)
    share = _catalog_repack_share(variant.name, repackable) if variant.format == "gguf" else 0.0
    return Weights(embedding=embedding, output=output, layers=(per_layer,) * shape.n_layers,
                   other=max(0, total - embedding - output - per_layer * shape.n_layers),
                   repack_layers=(int(per_layer * share),) * shape.n_layers, repack_output=int(output * share))


def weight_bytes_for(spec: ModelSpec, variant: Variant) -> int:
    """Bytes of weights in memory: the files, except a LoRA, which runs merged into its fp16 base."""
    if variant.format == "lora":
        return int(spec.params_b * 1e9 * 2)
    return variant.size_bytes


def _catalog_repack_share(variant_name: str, repackable: frozenset[str]) -> float:
    name = variant_name.lower()
    for prefix, share in CATALOG_REPACK_SHARE.items():
        if name.startswith(prefix) and prefix in repackable:
            return share
    return 0.0


# ---------------------------------------------------------------- from a Hugging Face config.json

def shape_from_hf_config(config: dict) -> Shape:
    """A transformers model directory's config.json (Llama-style names; GPT-2 names as fallback)."""
    n_layers = int(config.get("num_hidden_layers") or config.get("n_layer"))
    n_embd = int(config.get("hidden_size") or config.get("n_embd"))
    n_heads = int(config.get("num_attention_heads") or config.get("n_head"))
    n_kv = int(config.get("num_key_value_heads") or n_heads)
    head_dim = int(config.get("head_dim") or n_embd // n_heads)
    window = int(config.get("sliding_window") or 0) if config.get("use_sliding_window", True) else 0
    return Shape(str(config.get("model_type", "")), n_layers, n_embd,
                 int(config.get("intermediate_size") or config.get("n_inner") or 4 * n_embd), n_heads,
                 (n_kv,) * n_layers, head_dim, head_dim, int(config["vocab_size"]), window, (False,) * n_layers)


@dataclass(frozen=True)
class HFDir:
    """What a local transformers directory says about itself."""

    shape: Shape
    size_bytes: int
    dtype: str
    tied: bool
    safetensors: bool


def read_hf_dir(path: Path) -> HFDir:
    """Shape, weight bytes on disk, dtype and embedding tie of a local transformers model directory."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DanluError(f"{path} 里没有可读的 config.json / no readable config.json in {path}: {exc}") from exc
    files = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file()]
    return HFDir(shape_from_hf_config(config), sum(p.stat().st_size for p in files),
                 str(config.get("dtype") or config.get("torch_dtype") or "float32"),
                 bool(config.get("tie_word_embeddings", True)), all(p.suffix == ".safetensors" for p in files))
