"""Scripted token streams for the output parsers: one reply cut at every position, into single characters, at
random multi-way points, and at random UTF-8 byte positions decoded incrementally (as the engines' TextStream
does), so a tag or a Chinese character can fall across pieces anywhere."""

from __future__ import annotations

import codecs
import random
from collections.abc import Iterator


def two_way(text: str) -> Iterator[list[str]]:
    """Every cut into two pieces, the empty ends included."""
    for index in range(len(text) + 1):
        yield [text[:index], text[index:]]


def random_pieces(text: str, rng: random.Random) -> list[str]:
    """`text` cut at a random number of random character positions."""
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12)))) if len(text) > 1 else []
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def byte_pieces(text: str, rng: random.Random) -> list[str]:
    """`text` as UTF-8 cut at random byte positions (inside characters too), decoded piece by piece: what a
    byte-level tokenizer's stream looks like after the incremental decoder (empty pieces included)."""
    data = text.encode("utf-8")
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 24)))) if len(data) > 1 else []
    bounds = [0, *cuts, len(data)]
    decoder = codecs.getincrementaldecoder("utf-8")()
    pieces = [decoder.decode(data[a:b]) for a, b in zip(bounds, bounds[1:])]
    pieces.append(decoder.decode(b"", final=True))
    return pieces


def every_cut(text: str, seed: int = 0, rounds: int = 40) -> Iterator[list[str]]:
    """All two-way cuts, one character per piece, then random character and byte cuts."""
    yield from two_way(text)
    yield list(text)
    rng = random.Random(seed)
    for _ in range(rounds):
        yield random_pieces(text, rng)
        yield byte_pieces(text, rng)
