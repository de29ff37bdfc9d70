"""A named registry: what prompt formats, reasoning splitters and tool-call parsers are looked up in.

Each kind registers its entries by name once (a second registration is a bug), and an unknown name is a user
error, in Chinese and English, that lists the known names. The catalog refers to entries by these names.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from danlu.errors import DanluError

T = TypeVar("T")


class Registry(Generic[T]):
    """`add(name, entry)`, `get(name)`, `names()`; `what` names the kind in errors, as (Chinese, English)."""

    def __init__(self, what: tuple[str, str]):
        self.what = what
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.what[1]} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names())
            zh, en = self.what
            raise DanluError(f"未知的{zh} '{name}'，可用的有：{known} / unknown {en} '{name}'; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)
