"""What a model reference is for: chat (generates text), embedding (vectors) or rerank (relevance scores).

A catalog entry says so in its `kind`; a bare GGUF file says so in its header: an encoder (BERT,
XLM-RoBERTa: `<arch>.attention.causal` false) or a file that declares a pooling type is an embedding
model, and one with a classification head (`cls.output.weight`) is a reranker. Chat paths call
`require_chat` before loading, so an embedding model is refused with what to use instead.
"""

from __future__ import annotations

from pathlib import Path

from danlu.errors import DanluError

#: llama.cpp's `<arch>.pooling_type` values, by the names the catalog uses
POOLING_TYPES = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
CLASSIFIER_TENSORS = ("cls.output.weight", "cls.weight")


class NotAChatModel(DanluError):
    """An embedding or rerank model given to a command or route that chats."""


def kind_of(ref: str) -> str:
    """'chat', 'embedding' or 'rerank' for a catalog id (`id` or `id:variant`) or a local GGUF file;
    'chat' for anything else (a transformers folder, a remote endpoint, an unknown name)."""
    path = Path(ref).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return gguf_kind(path)
    from danlu import catalog

    model_id = ref.split(":", 1)[0]
    spec = next((s for s in catalog.all_models() if s.id == model_id), None)
    return spec.kind if spec else "chat"


def gguf_kind(path: Path) -> str:
    """The kind a GGUF header implies; an unreadable header counts as chat (loading will say what is wrong)."""
    from danlu.gguf_info import read_gguf

    try:
        info = read_gguf(path)
    except (DanluError, OSError, ValueError):
        return "chat"
    if info.pooling_type == POOLING_TYPES["rank"] or any(t.name in CLASSIFIER_TENSORS for t in info.tensors):
        return "rerank"
    return "embedding" if not info.causal or info.pooling_type > 0 else "chat"


def require_chat(ref: str) -> None:
    """Raise NotAChatModel for an embedding or rerank model, saying what to use instead."""
    kind = kind_of(ref)
    if kind != "chat":
        raise not_chat(ref, kind)


def not_chat(label: str, kind: str) -> NotAChatModel:
    """The refusal for chatting with an embedding or rerank model, with what to use instead."""
    if kind == "rerank":
        return NotAChatModel(f"{label} 是重排模型，不能对话：用 /v1/rerank / "
                             f"{label} is a rerank model, not a chat model: use /v1/rerank")
    return NotAChatModel(f"{label} 是嵌入模型，不能对话：用 `danlu embed {label} 文本` 或 /v1/embeddings / "
                         f"{label} is an embedding model, not a chat model: use `danlu embed {label} TEXT` or /v1/embeddings")
