"""The model catalog: one TOML file per model in `models/`, validated by `schema.ModelSpec`."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources

from danlu.catalog.aliases import Target, alias_table, normalize
from danlu.catalog.schema import ModelSpec, Variant
from danlu.errors import DanluError

__all__ = ["ModelSpec", "Variant", "all_models", "get", "resolve_alias", "UnknownModel", "NotAChatModel", "kind_of",
           "require_chat"]


class UnknownModel(DanluError):
    """A model id that is neither in the catalog nor a path."""


@lru_cache(maxsize=1)
def all_models() -> tuple[ModelSpec, ...]:
    """Every catalog entry, sorted by id; raises if any file is invalid."""
    folder = resources.files("danlu.catalog") / "models"
    specs = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            specs.append(_load(entry.name, entry.read_text(encoding="utf-8")))
    return tuple(specs)


def _load(filename: str, text: str) -> ModelSpec:
    spec = ModelSpec.model_validate(tomllib.loads(text))
    if filename != f"{spec.id}.toml":
        raise ValueError(f"catalog file {filename} holds id {spec.id!r}; name it {spec.id}.toml")
    return spec


def get(model_id: str) -> ModelSpec:
    """The entry for an id (or a full alias such as `qwen3:8b`), with a hint listing close ids when it is unknown.
    A bare alias name (`qwen3`) is not taken here: callers that split `id:variant` first must still get an error."""
    for spec in all_models():
        if spec.id == model_id:
            return spec
    alias = resolve_alias(model_id) if ":" in model_id else None
    if alias is not None:
        return get(alias[0])
    close = [s.id for s in all_models() if model_id.lower() in s.id or s.id in model_id.lower()]
    hint = f"；相近的有 / did you mean: {', '.join(close)}" if close else "；用 `danlu models` 查看全部 / see `danlu models`"
    raise UnknownModel(f"目录里没有模型 {model_id!r} / unknown model {model_id!r}{hint}")


@lru_cache(maxsize=1)
def _aliases() -> dict[str, Target]:
    return alias_table(all_models())


def resolve_alias(name: str) -> Target | None:
    """An Ollama-style name (`qwen3:8b`, `qwen3:8b-q8_0`, `qwen3`) as (catalog id, variant or None);
    None when no entry claims it."""
    return _aliases().get(normalize(name))


from danlu.catalog.kinds import NotAChatModel, kind_of, require_chat  # noqa: E402  (kinds looks models up here)
