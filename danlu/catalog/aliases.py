"""Ollama-style names for catalog models: `qwen3:8b` is qwen3-8b, `qwen3:8b-q8_0` its q8_0 variant.

A catalog entry lists its aliases (`aliases = ["qwen3:8b"]`). Each alias names the default variant; the
alias followed by `-VARIANT` (Ollama's `qwen3:8b-q4_K_M`, case-insensitive) names that variant. A bare
`NAME` means `NAME:latest`, as in Ollama. Every name must resolve to one model: `alias_table` refuses
duplicates, so a catalog with two owners for one name fails at load and in the tests.
"""

from __future__ import annotations

from collections.abc import Iterable

from danlu.catalog.schema import ModelSpec

Target = tuple[str, "str | None"]  # (catalog id, variant name or None for the default)


def alias_table(specs: Iterable[ModelSpec]) -> dict[str, Target]:
    """Every accepted name, lowercased, with the (id, variant) it stands for."""
    table: dict[str, Target] = {}
    for spec in specs:
        for alias in spec.aliases:
            _claim(table, alias, (spec.id, None))
            for variant in spec.variants:
                _claim(table, f"{alias}-{variant.name.lower()}", (spec.id, variant.name))
    return table


def _claim(table: dict[str, Target], name: str, target: Target) -> None:
    if table.get(name, target) != target:
        raise ValueError(f"alias {name!r} names both {table[name]} and {target}")
    table[name] = target


def normalize(name: str) -> str:
    """What a user typed, as the table keys it: lowercase, with `:latest` for a bare name."""
    key = name.strip().lower()
    return key if ":" in key else f"{key}:latest"
