"""The unified KV pool of the batched engine: conversations share the cells of a common prefix, eviction under
pressure gives up the least recently used caches by cells, and fit predicts the served pool's peak memory.

The cell counting itself (runs, shared prefixes, cuts) is checked without a model; the rest on gemma-3-270m."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from danlu.backends.base import GenerationParams, LoadPlan
from danlu.backends.slots import Slot, SlotTable, cells_used

PREFIX = "以下是一段关于中国历史的长篇介绍，请仔细阅读并回答后面的问题。"
STORIES = ["秦朝统一了六国，建立了中央集权的国家。", "唐朝的诗歌繁荣，李白和杜甫是代表。",
           "宋朝的科技发达，活字印刷术广为流传。", "明朝修建了今天看到的大部分长城。"]


def table(n_slots: int = 4, cells: int = 100) -> SlotTable:
    return SlotTable(n_slots, cells, lambda seq, keep: True, lambda src, dst, n: True)


def test_a_shared_prefix_counts_once_and_a_cut_frees_only_its_own_cells():
    slots = table()
    first = slots.slots[0]
    first.append(list(range(30)))
    second = slots.slots[1]
    second.share_from(first, 20)
    second.append([99] * 5)
    assert cells_used(slots.slots) == 35  # 30 of the first, 5 of the second's own; the 20 shared once
    first.cut(10)
    assert cells_used(slots.slots) == 25  # the first's cells 10–19 are still the second's
    first.append([7] * 3)  # after a cut, new tokens are new cells even where positions repeat
    assert cells_used(slots.slots) == 28


def test_placing_a_prompt_shares_its_prefix_instead_of_cutting_another_conversation():
    slots = table(cells=100)
    first, _ = slots.place(list(range(60)), 65, 0)
    first.append(list(range(60)))
    second, cached = slots.place(list(range(30)) + [500, 501], 40, 0)
    assert second is not first and cached == 30 and len(first.tokens) == 60  # the other's tail is kept
    assert slots.used() == 60  # the prefix is the first's cells


def eng(gemma_path, n_ctx: int, cells: int, slots: int):
    from danlu.backends import llamacpp_batched

    extra = {"parallel": 1, "slots": slots, "kv_unified": True, "kv_cells": cells}
    return llamacpp_batched.load(None, None, LoadPlan(gemma_path, n_ctx=n_ctx, n_threads=2, extra=extra))


def reply(engine, ids: list[int], n: int = 8):
    """Run one greedy request; its final chunk's timings."""
    chunks = list(engine.generate(ids, GenerationParams(max_tokens=n, temperature=0)))
    return chunks[-1].timings


def ids_of(engine, text: str, n: int) -> list[int]:
    ids = engine.tokenize("<bos>" + text * 40, special=True)[:n]
    assert len(ids) == n
    return ids


@pytest.mark.weights
def test_two_conversations_share_the_cells_of_their_common_prefix(gemma_path):
    engine = eng(gemma_path, n_ctx=400, cells=512, slots=3)
    try:
        shared = ids_of(engine, PREFIX, 300)
        a = shared + ids_of(engine, STORIES[0], 21)[1:]
        b = shared + ids_of(engine, STORIES[1], 21)[1:]
        reply(engine, a)
        second = reply(engine, b)
        assert second.cached_tokens >= 299  # b read only its own 20 tokens
        info = engine.load_info()
        held = sum(len(s.tokens) for s in engine.slots.slots)
        assert info["cached_slots"] == 2 and held > 512  # without sharing both could not be cached in 512 cells
        assert info["kv_cells_used"] == held - 300 and info["kv_cells_used"] <= 512
        again = reply(engine, a + ids_of(engine, STORIES[2], 9)[1:])
        assert again.cached_tokens >= len(a)  # a's cache survived b: nothing was evicted
    finally:
        engine.close()


@pytest.mark.weights
def test_eviction_under_pressure_keeps_the_most_recently_used_prefixes(gemma_path):
    engine = eng(gemma_path, n_ctx=256, cells=512, slots=4)
    try:
        talks = {name: ids_of(engine, story, 150) for name, story in zip("ABCD", STORIES)}
        for name in "ABC":
            reply(engine, talks[name])
        talks["A"] = talks["A"] + ids_of(engine, PREFIX, 21)[1:]
        assert reply(engine, talks["A"]).cached_tokens >= 150  # A is used again: now B is the oldest
        reply(engine, talks["D"])  # 158 more cells than the pool has free
        held = [s.tokens for s in engine.slots.slots if s.tokens]
        kept = {name for name, ids in talks.items() if any(t[:150] == ids[:150] for t in held)}
        assert kept == {"A", "C", "D"}, kept
        assert engine.load_info()["kv_cells_used"] <= 512
    finally:
        engine.close()


@pytest.mark.weights
@pytest.mark.slow
def test_fit_predicts_the_peak_of_a_served_pool_within_ten_percent(home_with_models):
    """`danlu fit --parallel 8 --ctx 4096 --measure`: eight lanes fill their 4,096 tokens of one 32,768-cell pool
    in a fresh process (minutes on 2 cores), against fit's prediction for that pool."""
    from danlu.cli import app

    out = CliRunner().invoke(app, ["fit", "gemma-3-270m", "--parallel", "8", "--ctx", "4096", "--measure", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["n_ctx"] == 8 * 4096 and report["measurement"]["tokens"] == 8 * 4095
    assert abs(report["error"]) <= 0.10, report["error"]
