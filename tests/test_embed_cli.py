"""`danlu embed` as a user runs it (real subprocesses, a tiny BERT GGUF converted with llama.cpp's converter),
and the catalog side: embedding and rerank entries, their kind in `danlu models` / `danlu show`, how `danlu fit`
plans them, and chat paths refusing them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import embed_models as em
from danlu import catalog
from danlu.fit import check_fits, fit_catalog
from danlu.hardware import GiB, Hardware


def danlu(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "danlu.cli", "--lang", "en", *args], input=stdin or "",
                          capture_output=True, text=True, env={**os.environ, "DANLU_THREADS": "1"}, timeout=600)


@pytest.fixture(scope="module")
def bert_gguf(tmp_path_factory) -> Path:
    folder = em.tiny_bert(tmp_path_factory.mktemp("cli-bert") / "hf")
    return em.convert(folder, folder.parent / "bert-f32.gguf")


def test_embed_prints_one_compact_line_per_text(bert_gguf):
    out = danlu("embed", str(bert_gguf), "你好，世界", "hello world")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("[0] ") and "…" in lines[0]
    assert "2 texts, 32 dims, mean pooling, normalised" in out.stderr


def test_embed_json_is_openai_shaped_with_the_models_dimension(bert_gguf):
    out = danlu("embed", str(bert_gguf), "--json", "a cat", "the dog", "a cat")
    body = json.loads(out.stdout)
    vectors = [d["embedding"] for d in body["data"]]
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1, 2]
    assert body["dimensions"] == 32 and all(len(v) == 32 for v in vectors)
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-5 and vectors[0] == vectors[2] != vectors[1]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == 4 + 4 + 4  # [CLS] a cat [SEP]


def test_embed_reads_stdin_one_text_per_line_and_full_prints_every_value(bert_gguf):
    out = danlu("embed", str(bert_gguf), "--full", "--digits", "3", stdin="first line\n\nsecond line\n")
    rows = [line.split() for line in out.stdout.splitlines()]
    assert out.returncode == 0 and len(rows) == 2 and all(len(r) == 32 for r in rows)
    assert all(len(v.split(".")[1]) == 3 for v in rows[0])


def test_dimensions_and_no_normalize_reach_the_vectors(bert_gguf):
    body = json.loads(danlu("embed", str(bert_gguf), "--json", "--no-normalize", "a cat").stdout)
    short = json.loads(danlu("embed", str(bert_gguf), "--json", "--dimensions", "8", "a cat").stdout)
    assert not body["normalized"] and abs(sum(x * x for x in body["data"][0]["embedding"]) - 1) > 1e-3
    assert short["dimensions"] == 8 and len(short["data"][0]["embedding"]) == 8


@pytest.mark.parametrize("args, stdin, message", [
    (["", "x"], None, "text 0 is empty"),
    (["--pooling", "max", "x"], None, "unknown pooling"),
    (["--ctx", "16", "the weather is lovely today and it is sunny outside, let us go to the park"], None, "limit of 16"),
])
def test_bad_embed_input_is_one_line_and_exit_1(bert_gguf, args, stdin, message):
    out = danlu("embed", str(bert_gguf), *args, stdin=stdin)
    assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr


def test_embed_refuses_what_it_cannot_embed(bert_gguf):
    not_pulled = danlu("embed", "bge-small-zh-v1.5", "x")
    assert not_pulled.returncode == 1 and "danlu pull bge-small-zh-v1.5" in not_pulled.stderr
    no_text = danlu("embed", "bge-small-zh-v1.5")
    assert no_text.returncode == 1 and "no texts" in no_text.stderr
    not_gguf = danlu("embed", str(bert_gguf.parent / "hf"), "x")  # the transformers folder it was converted from
    assert not_gguf.returncode == 1 and "run on GGUF models" in not_gguf.stderr


def test_chat_and_run_refuse_an_embedding_model_before_loading(bert_gguf):
    for args in (["chat", "bge-m3"], ["run", "bge-reranker-v2-m3", "你好"], ["run", str(bert_gguf), "你好"]):
        out = danlu(*args)
        assert out.returncode == 1 and "not a chat model" in out.stderr, args


# ---------------------------------------------------------------- the catalog

EMBEDDING_IDS = {"bge-small-zh-v1.5", "bge-large-zh-v1.5", "bge-m3", "qwen3-embedding-0.6b", "bge-reranker-v2-m3"}


def test_embedding_entries_carry_their_facts():
    specs = {s.id: s for s in catalog.all_models() if s.kind != "chat"}
    assert set(specs) == EMBEDDING_IDS
    for spec in specs.values():
        facts = spec.embedding
        assert facts.max_tokens == spec.context_length and spec.backend == "llamacpp"
        assert all(v.format == "gguf" and any(s.kind == "hf" for s in v.sources) for v in spec.variants)
        assert (facts.pooling == "rank") == (spec.kind == "rerank") and facts.normalized == (spec.kind != "rerank")
    assert specs["bge-m3"].embedding.pooling == "cls" and specs["qwen3-embedding-0.6b"].embedding.pooling == "last"
    assert specs["bge-small-zh-v1.5"].embedding.dimensions == 512 and specs["bge-m3"].embedding.dimensions == 1024
    assert specs["bge-small-zh-v1.5"].embedding.query_prefix == "为这个句子生成表示以用于检索相关文章："
    assert specs["qwen3-embedding-0.6b"].embedding.query_prefix.startswith("Instruct: ")


def test_a_chat_model_needs_no_embedding_table_and_an_embedding_model_needs_one():
    from pydantic import ValidationError

    gemma = catalog.get("gemma-3-270m").model_dump()
    with pytest.raises(ValidationError, match="embedding"):
        type(catalog.get("gemma-3-270m")).model_validate({**gemma, "kind": "embedding"})
    assert catalog.get("gemma-3-270m").kind == "chat" and catalog.kind_of("qwen2.5-coder-1.5b-instruct:q4_k_m") == "chat"
    catalog.require_chat("gemma-3-270m")  # no error
    with pytest.raises(catalog.NotAChatModel, match="/v1/rerank"):
        catalog.require_chat("bge-reranker-v2-m3:q8_0")


def test_models_and_show_say_the_kind():
    rows = {r["id"]: r for r in json.loads(danlu("models", "--json").stdout)}
    assert rows["bge-m3"]["kind"] == "embedding" and rows["gemma-3-270m"]["kind"] == "chat"
    shown = danlu("show", "bge-small-zh-v1.5").stdout
    assert "kind: embedding · pooling cls · dimensions 512 · max 512 tokens · normalised" in shown


# ---------------------------------------------------------------- fit

def machine(ram_gb: float = 16) -> Hardware:
    """A CPU-only machine with this much RAM free."""
    return Hardware(cpu_cores=8, cpu_flags=frozenset({"avx2"}), machine="x86_64", ram_total_bytes=int(ram_gb * GiB),
                    ram_available_bytes=int(ram_gb * GiB))


def test_fit_plans_an_encoder_without_a_kv_cache_and_with_its_whole_batch_in_one_micro_batch():
    results = {(r.model_id, r.variant): r for r in fit_catalog(machine(), 512)}
    small, chat = results[("bge-small-zh-v1.5", "q8_0")], results[("qwen2.5-coder-1.5b-instruct", "q4_k_m")]
    assert small.kind == "embedding" and small.fits and small.estimate.host.kv_cache == 0
    assert small.estimate.host.weights <= catalog.get("bge-small-zh-v1.5").variant().size_bytes  # no LM head added
    assert chat.estimate.host.kv_cache > 0 and chat.kind == "chat"
    m3_short = results[("bge-m3", "q8_0")].estimate.host.compute
    m3_long = {(r.model_id, r.variant): r for r in fit_catalog(machine(), 4096)}[("bge-m3", "q8_0")].estimate.host.compute
    assert m3_long > 30 * m3_short  # n tokens in one micro-batch: an n × n score matrix per head


def test_fit_ranks_embedding_models_after_the_chat_models_that_fit_and_suggests_only_chat_instead():
    results = fit_catalog(machine(), 4096)
    usable = [r for r in results if r.fits and r.tokens_per_s >= 2]
    kinds = [r.kind != "chat" for r in usable]
    assert kinds == sorted(kinds) and any(kinds) and not all(kinds)
    from danlu.fit import DoesNotFit

    with pytest.raises(DoesNotFit) as refused:
        check_fits(catalog.get("qwen-14b-chat"), None, machine(ram_gb=4), 4096)
    assert refused.value.alternatives and all(a.kind == "chat" for a in refused.value.alternatives)


def test_fit_counts_a_decoders_logits_for_every_token_it_embeds():
    """llama.cpp runs a decoder's LM head over every token in embedding mode: Qwen3-Embedding's 151,669-row
    head writes a row of logits per token (output buffer and graph tensor); an encoder has no head."""
    results = {(r.model_id, r.variant): r for r in fit_catalog(machine(), 4096)}
    qwen3, m3 = results[("qwen3-embedding-0.6b", "q8_0")].estimate.host, results[("bge-m3", "q8_0")].estimate.host
    logits = 151669 * 4 * 4096
    assert qwen3.overhead > logits and qwen3.compute > logits and qwen3.kv_cache > 0
    assert m3.overhead < logits / 10
