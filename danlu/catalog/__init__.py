"""The model catalog: one TOML file per model in `models/`, validated by `schema.ModelSpec`."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources

from danlu.catalog.schema import ModelSpec, Variant
from danlu.errors import DanluError

__all__ = ["ModelSpec", "Variant", "all_models", "get", "UnknownModel", "NotAChatModel", "kind_of", "require_chat"]


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
    """The entry for an id, with a hint listing close ids when it is unknown."""
    for spec in all_models():
        if spec.id == model_id:
            return spec
    close = [s.id for s in all_models() if model_id.lower() in s.id or s.id in model_id.lower()]
    hint = f"；相近的有 / did you mean: {', '.join(close)}" if close else "；用 `danlu models` 查看全部 / see `danlu models`"
    raise UnknownModel(f"目录里没有模型 {model_id!r} / unknown model {model_id!r}{hint}")


from danlu.catalog.kinds import NotAChatModel, kind_of, require_chat  # noqa: E402  (kinds looks models up here)
