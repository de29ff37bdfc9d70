"""Read a GGUF file's header: tensor sizes and types, architecture keys, context, layers, KV heads, sliding window.

The memory estimate needs the header, not the weights. llama.cpp's own parser (`gguf_init_from_file`
in the ggml library that llama-cpp-python ships) reads it in milliseconds and is by definition what
the loader will see, so it is tried first through ctypes; the `gguf` PyPI package (`GGUFReader`) is
the fallback — it is correct but builds a Python object per vocabulary entry (~9 s for a 262k vocab).
Nothing here reads tensor data.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from danlu.errors import DanluError

# llama.cpp's sliding-window layout per architecture when the file has no explicit pattern
# (src/models/<arch>.cpp: load_swa_pattern(ml, n, dense_first)). n=6 → layers 5, 11, 17 … are full.
SWA_PATTERNS: dict[str, tuple[int, bool]] = {
    "gemma2": (2, False), "gemma3": (6, False), "gemma3n": (5, False), "gemma-embedding": (6, False),
    "cohere2": (4, False), "llama4": (4, False), "openai-moe": (2, False), "gpt-oss": (2, False),
    "exaone4": (4, False), "olmo2": (4, False), "plamo3": (8, False), "smallthinker": (4, True),
}

# the tensor that holds the token embeddings; llama.cpp reads it with get_rows, never with a matmul
TOKEN_EMBD = "token_embd.weight"
OUTPUT = "output.weight"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file: its name, ggml type name in lower case (q4_k, f16 …), shape (ne0, rows) and bytes."""

    name: str
    type_name: str
    shape: tuple[int, ...]
    n_bytes: int

    @property
    def layer(self) -> int | None:
        """The block index for `blk.N.*` tensors, None for embeddings, output and norms."""
        parts = self.name.split(".")
        return int(parts[1]) if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit() else None


@dataclass(frozen=True)
class GGUFInfo:
    """What the memory estimate needs from a GGUF header."""

    path: Path
    file_size: int
    architecture: str
    n_layers: int
    n_embd: int
    n_ff: int
    n_heads: int
    n_kv_heads: tuple[int, ...]  # per layer; most models repeat one value
    head_dim_k: int
    head_dim_v: int
    context_length: int
    sliding_window: int  # 0: none
    swa_layers: tuple[bool, ...]  # per layer: True where the layer attends to the window only
    n_vocab: int
    tensors: tuple[TensorInfo, ...]
    pooling_type: int = -1  # `<arch>.pooling_type`: 0 none, 1 mean, 2 cls, 3 last, 4 rank; -1 not declared
    causal: bool = True  # `<arch>.attention.causal`: False for encoders (BERT, XLM-RoBERTa)

    @property
    def weight_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def tied_output(self) -> bool:
        """No `output.weight`: the output projection reuses the token embeddings."""
        return all(t.name != OUTPUT for t in self.tensors)

    def bytes_where(self, keep: Callable[[TensorInfo], bool]) -> int:
        return sum(t.n_bytes for t in self.tensors if keep(t))

    def layer_bytes(self) -> list[int]:
        """Bytes of each repeating block `blk.N`, in order."""
        sizes = [0] * self.n_layers
        for t in self.tensors:
            if t.layer is not None and t.layer < self.n_layers:
                sizes[t.layer] += t.n_bytes
        return sizes

    def bytes_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.type_name] = out.get(t.type_name, 0) + t.n_bytes
        return out


def read_gguf(path: str | Path) -> GGUFInfo:
    """The header of a GGUF file; a file that is not GGUF or is truncated gives a DanluError."""
    path = Path(path)
    stat = path.stat()
    return _read_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def gguf_metadata(path: str | Path) -> dict[str, Any]:
    """The header's key/value pairs (string arrays as their length), e.g. `tokenizer.chat_template`."""
    try:
        return _read_with_llamacpp(str(path))[0]
    except (OSError, AttributeError):
        return _read_with_gguf_package(str(path))[0]


def _read_cached(path: str, size: int, mtime_ns: int) -> GGUFInfo:
    """Keyed by size and mtime so a re-pulled file is read again."""
    try:
        keys, tensors = _read_with_llamacpp(path)
    except (OSError, AttributeError, ImportError):
        keys, tensors = _read_with_gguf_package(path)
    return _summarize(Path(path), size, keys, tensors)


def _summarize(path: Path, size: int, keys: dict[str, Any], tensors: list[TensorInfo]) -> GGUFInfo:
    arch = str(keys.get("general.architecture", "llama"))
    get = lambda name, default=0: keys.get(f"{arch}.{name}", default)  # noqa: E731
    n_layers = int(get("block_count"))
    n_embd, n_heads = int(get("embedding_length")), _first(get("attention.head_count", 1))
    head_dim_k = int(get("attention.key_length", 0)) or n_embd // max(n_heads, 1)
    window = int(get("attention.sliding_window", 0))
    return GGUFInfo(
        path=path, file_size=size, architecture=arch, n_layers=n_layers, n_embd=n_embd,
        n_ff=_largest(get("feed_forward_length", 4 * n_embd)), n_heads=n_heads,
        n_kv_heads=_per_layer(get("attention.head_count_kv", n_heads), n_layers),
        head_dim_k=head_dim_k, head_dim_v=int(get("attention.value_length", 0)) or head_dim_k,
        context_length=int(get("context_length", 0)), sliding_window=window,
        swa_layers=_swa_layers(arch, n_layers, window, get("attention.sliding_window_pattern", None)),
        n_vocab=int(keys.get("tokenizer.ggml.tokens", 0)) or _vocab_from_embeddings(tensors),
        tensors=tuple(tensors), pooling_type=int(get("pooling_type", -1)),
        causal=bool(get("attention.causal", True)),
    )


def _first(value: Any) -> int:
    return int(value[0]) if isinstance(value, (list, tuple)) else int(value)


def _largest(value: Any) -> int:
    return int(max(value)) if isinstance(value, (list, tuple)) else int(value)


def _per_layer(value: Any, n_layers: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value[:n_layers])
    return (int(value),) * n_layers


def _swa_layers(arch: str, n_layers: int, window: int, pattern: Any) -> tuple[bool, ...]:
    """Which layers attend to the window only, the way llama.cpp's `set_swa_pattern` decides."""
    if not window:
        return (False,) * n_layers
    if isinstance(pattern, (list, tuple)):
        return tuple(bool(p) for p in pattern[:n_layers])
    if pattern:
        return swa_pattern(n_layers, int(pattern))
    if arch not in SWA_PATTERNS:  # llama.cpp ignores a window the architecture's code does not use
        return (False,) * n_layers
    return swa_pattern(n_layers, *SWA_PATTERNS[arch])


def swa_pattern(n_layers: int, n_pattern: int, dense_first: bool = False) -> tuple[bool, ...]:
    """llama_hparams::set_swa_pattern: n=0 makes every layer SWA; otherwise one full layer in each n."""
    if dense_first:
        return tuple(n_pattern == 0 or il % n_pattern != 0 for il in range(n_layers))
    return tuple(n_pattern == 0 or il % n_pattern < n_pattern - 1 for il in range(n_layers))


def _vocab_from_embeddings(tensors: list[TensorInfo]) -> int:
    embd = next((t for t in tensors if t.name == TOKEN_EMBD), None)
    return embd.shape[1] if embd and len(embd.shape) > 1 else 0


# ---------------------------------------------------------------- llama.cpp's parser through ctypes

class _InitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]


_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "gguf_init_from_file": (ctypes.c_void_p, [ctypes.c_char_p, _InitParams]),
    "gguf_free": (None, [ctypes.c_void_p]),
    "gguf_get_n_kv": (ctypes.c_int64, [ctypes.c_void_p]),
    "gguf_get_key": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
    "gguf_get_kv_type": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
    "gguf_get_arr_type": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
    "gguf_get_arr_n": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
    "gguf_get_arr_data": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int64]),
    "gguf_get_val_data": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int64]),
    "gguf_get_val_str": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
    "gguf_get_n_tensors": (ctypes.c_int64, [ctypes.c_void_p]),
    "gguf_get_tensor_name": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
    "gguf_get_tensor_type": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
    "gguf_get_tensor_size": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
    "ggml_get_tensor": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
    "ggml_n_dims": (ctypes.c_int, [ctypes.c_void_p]),
    "ggml_nelements": (ctypes.c_int64, [ctypes.c_void_p]),
    "ggml_nrows": (ctypes.c_int64, [ctypes.c_void_p]),
    "ggml_type_name": (ctypes.c_char_p, [ctypes.c_int]),
    "ggml_free": (None, [ctypes.c_void_p]),
}

# gguf_type → ctypes scalar (gguf.h); strings (8) and arrays (9) are handled apart
_SCALARS = {0: ctypes.c_uint8, 1: ctypes.c_int8, 2: ctypes.c_uint16, 3: ctypes.c_int16, 4: ctypes.c_uint32,
            5: ctypes.c_int32, 6: ctypes.c_float, 7: ctypes.c_bool, 10: ctypes.c_uint64, 11: ctypes.c_int64,
            12: ctypes.c_double}
_STRING, _ARRAY = 8, 9


@lru_cache(maxsize=1)
def _ggml() -> ctypes.CDLL:
    import llama_cpp  # the library ships inside the wheel, next to libllama

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _read_with_llamacpp(path: str) -> tuple[dict[str, Any], list[TensorInfo]]:
    lib = _ggml()
    ggml_ctx = ctypes.c_void_p()
    ctx = lib.gguf_init_from_file(path.encode(), _InitParams(True, ctypes.pointer(ggml_ctx)))
    if not ctx:
        raise DanluError(f"读不了 GGUF 头（文件不是 GGUF 或已损坏）/ cannot read the GGUF header of {path} "
                         "(not a GGUF file, or corrupt)")
    try:
        keys = {lib.gguf_get_key(ctx, i).decode(): _ctypes_value(lib, ctx, i) for i in range(lib.gguf_get_n_kv(ctx))}
        return keys, [_ctypes_tensor(lib, ctx, ggml_ctx, i) for i in range(lib.gguf_get_n_tensors(ctx))]
    finally:
        lib.gguf_free(ctx)
        if ggml_ctx:
            lib.ggml_free(ggml_ctx)


def _ctypes_value(lib: ctypes.CDLL, ctx: int, i: int) -> Any:
    """A scalar, a string, a list of numbers, or the length of a string array (tokens, merges)."""
    kind = lib.gguf_get_kv_type(ctx, i)
    if kind == _STRING:
        return lib.gguf_get_val_str(ctx, i).decode("utf-8", "replace")
    if kind in _SCALARS:
        return ctypes.cast(lib.gguf_get_val_data(ctx, i), ctypes.POINTER(_SCALARS[kind]))[0]
    n, item = lib.gguf_get_arr_n(ctx, i), lib.gguf_get_arr_type(ctx, i)
    if item not in _SCALARS:  # arrays of strings: only their length matters here (the vocabulary size)
        return n
    return list((_SCALARS[item] * n).from_address(lib.gguf_get_arr_data(ctx, i)))


def _ctypes_tensor(lib: ctypes.CDLL, ctx: int, ggml_ctx: ctypes.c_void_p, i: int) -> TensorInfo:
    name = lib.gguf_get_tensor_name(ctx, i)
    tensor = lib.ggml_get_tensor(ggml_ctx, name)
    rows, elements = lib.ggml_nrows(tensor), lib.ggml_nelements(tensor)
    # ne1..ne3 collapse into rows; the estimate only needs (ne0, rows) of 1-D and 2-D weights
    shape = (elements,) if lib.ggml_n_dims(tensor) == 1 else (elements // max(rows, 1), rows)
    type_name = _ggml_type_name(lib.ggml_type_name(lib.gguf_get_tensor_type(ctx, i)).decode())
    return TensorInfo(name.decode(), type_name, shape, int(lib.gguf_get_tensor_size(ctx, i)))


# ---------------------------------------------------------------- fallback: the gguf package

def _read_with_gguf_package(path: str) -> tuple[dict[str, Any], list[TensorInfo]]:
    try:
        import gguf
    except ImportError as exc:
        raise DanluError("读 GGUF 头需要 llama-cpp-python 或 gguf 包 / reading a GGUF header needs "
                         "llama-cpp-python or `pip install gguf`") from exc
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise DanluError(f"读不了 GGUF 头 / cannot read the GGUF header of {path}: {exc}") from exc
    keys = {name: _field_value(field) for name, field in reader.fields.items()}
    tensors = [TensorInfo(t.name, _ggml_type_name(t.tensor_type.name), _gguf_shape(t), int(t.n_bytes))
               for t in reader.tensors]
    return keys, tensors


def _field_value(field: Any) -> Any:
    if field.types and field.types[0].name == "ARRAY" and len(field.types) > 1 and field.types[1].name == "STRING":
        return len(field.data)
    return field.contents()


def _gguf_shape(tensor: Any) -> tuple[int, ...]:
    dims = [int(d) for d in tensor.shape]
    if len(dims) <= 1:
        return tuple(dims)
    rows = 1
    for d in dims[1:]:
        rows *= d
    return (dims[0], rows)


def _ggml_type_name(name: str) -> str:
    """Type names are kept lower-case (q4_k, f16) whichever reader produced them."""
    return name.lower()
