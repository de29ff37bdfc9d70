"""Which grammar library danlu enforces JSON schemas with: coverage of JSON Schema keywords and decode speed.

Candidates: llama.cpp's own GBNF sampler fed by llama-cpp-python's `json_schema_to_gbnf` (the Python port of
llama.cpp's converter), llguidance, xgrammar. Each sits behind the same Matcher interface (outputs/guide.py) and
the same sampling (backends/llamacpp_grammar.py: draw, check the one token, mask only on refusal), so the only
difference measured is the library.

Coverage: for each keyword a schema, an instance that obeys it and one that breaks only that keyword, fed token by
token through the model's vocabulary. "enforced": the good one passes and the bad one is refused; "ignored": the
keyword compiles but the bad one passes too (silently not enforced); "refused": the schema does not compile
(good: the caller is told); "wrong": the good instance is refused. Speed: bench/json_speed.py's prompt and
schema, free text vs each library, alternating, in the server's batched engine.

xgrammar is not a danlu dependency (it pulls torch, transformers, triton, apache-tvm-ffi); to include it:
    pip install --no-deps --target /tmp/grammar_cand xgrammar==0.2.8 apache-tvm-ffi && export XGRAMMAR_PATH=/tmp/grammar_cand
    python -m bench.grammar_choice [--models qwen2.5-coder-1.5b-instruct] [--repeat 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
from pathlib import Path

import llama_cpp
import numpy as np

from bench import _machine
from bench.json_speed import SCHEMA, SampleTimer, chat_ids, one_stream_engine
from danlu.backends.base import GenerationParams, complete
from danlu.backends.llamacpp_grammar import Candidates
from danlu.outputs import grammar, guide

OBJ = {"type": "object"}
CASES = [  # keyword, schema, an instance that obeys it, one that breaks only it
    ("properties", {**OBJ, "properties": {"a": {"type": "integer"}}}, {"a": 1}, {"a": "x"}),
    ("required", {**OBJ, "properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"a": 1}, {}),
    ("additionalProperties", {**OBJ, "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
     {"a": 1}, {"a": 1, "b": 2}),
    ("enum", {"enum": ["红", "绿"]}, "红", "蓝"),
    ("const", {"const": "北京"}, "北京", "上海"),
    ("anyOf", {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, True, "x"),
    ("oneOf", {"oneOf": [{"type": "integer"}, {"type": "string"}]}, 3, [3]),
    ("allOf", {"allOf": [{**OBJ, "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                         {**OBJ, "properties": {"b": {"type": "integer"}}, "required": ["b"]}]}, {"a": 1, "b": 2}, {"a": 1}),
    ("$ref/$defs", {"$defs": {"P": {**OBJ, "properties": {"n": {"type": "integer"}}, "required": ["n"],
                                   "additionalProperties": False}}, "type": "array", "items": {"$ref": "#/$defs/P"}},
     [{"n": 1}], [{"n": "x"}]),
    ("type list", {"type": ["integer", "null"]}, None, "x"),
    ("pattern", {"type": "string", "pattern": "^[0-9]{3}$"}, "123", "12a"),
    ("format: date", {"type": "string", "format": "date"}, "2025-01-31", "31/01/2025"),
    ("format: email", {"type": "string", "format": "email"}, "a@b.cn", "not-an-email"),
    ("minLength", {"type": "string", "minLength": 3}, "你好吗", "你好"),
    ("maxLength", {"type": "string", "maxLength": 2}, "你好", "你好吗"),
    ("minItems", {"type": "array", "items": {"type": "integer"}, "minItems": 2}, [1, 2], [1]),
    ("maxItems", {"type": "array", "items": {"type": "integer"}, "maxItems": 1}, [1], [1, 2]),
    ("prefixItems", {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
     [1, "a"], ["a", 1]),
    ("minimum", {"type": "integer", "minimum": 5}, 5, 4),
    ("maximum", {"type": "integer", "maximum": 5}, 5, 6),
    ("exclusiveMinimum", {"type": "number", "exclusiveMinimum": 0}, 0.5, 0),
    ("multipleOf", {"type": "integer", "multipleOf": 5}, 10, 7),
    ("minProperties", {**OBJ, "minProperties": 1}, {"a": 1}, {}),
    ("patternProperties", {**OBJ, "patternProperties": {"^x": {"type": "integer"}}, "additionalProperties": False},
     {"x1": 1}, {"y": 1}),
    ("uniqueItems", {"type": "array", "uniqueItems": True}, [1, 2], [1, 1]),
    ("not", {"not": {"type": "string"}}, 1, "x"),
    ("if/then", {**OBJ, "if": {"required": ["a"]}, "then": {"required": ["b"]}}, {"a": 1, "b": 2}, {"a": 1}),
    ("contains", {"type": "array", "contains": {"type": "string"}}, [1, "a"], [1, 2]),
]


# --- the candidates behind outputs/guide.py's Matcher interface -----------------------------------
class GbnfMatcher:
    """llama.cpp's grammar sampler; a full pass applies it to every vocabulary entry (no token trie)."""

    def __init__(self, vocab, schema: dict, n_vocab: int, eos: int):
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        self._g = llama_cpp.llama_sampler_init_grammar(vocab, json_schema_to_gbnf(json.dumps(schema)).encode(),
                                                       b"root")
        if not self._g:
            raise ValueError("llama.cpp could not parse the converted grammar")
        self._one, self._cand, self._eos = (llama_cpp.llama_token_data * 1)(), Candidates(n_vocab), eos
        self._one_array = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)

    def allows(self, token: int) -> bool:
        self._one[0].id, self._one[0].logit, self._one_array.size = token, 1.0, 1
        llama_cpp.llama_sampler_apply(self._g, ctypes.byref(self._one_array))
        return self._one[0].logit != -np.inf

    def consume(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self._g, token)

    def allowed(self) -> np.ndarray:
        self._cand.fill(np.zeros(len(self._cand.rows), dtype=np.float32))
        llama_cpp.llama_sampler_apply(self._g, ctypes.byref(self._cand.array))
        return np.isfinite(self._cand.rows["logit"])

    def accepting(self) -> bool:
        return self.allows(self._eos)

    def stopped(self) -> bool:
        return False  # no way to ask; once complete only end tokens pass, and the model draws one

    def feed_bytes(self, data: bytes) -> None:
        pass


class XgrammarMatcher:
    """xgrammar's matcher; its tokenizer is built from the same llama.cpp token pieces."""

    def __init__(self, compiler, schema: dict, n_vocab: int):
        import torch
        import xgrammar

        compiled = compiler.compile_json_schema(json.dumps(schema), any_whitespace=True, max_whitespace_cnt=22)
        self._m = xgrammar.GrammarMatcher(compiled, terminate_without_stop_token=True, max_rollback_tokens=2)
        self._mask, self._n, self._torch = xgrammar.allocate_token_bitmask(1, n_vocab), n_vocab, torch

    def allows(self, token: int) -> bool:
        if self._m.accept_token(token):
            self._m.rollback(1)
            return True
        return False

    def consume(self, token: int) -> None:
        self._m.accept_token(token)

    def allowed(self) -> np.ndarray:
        self._m.fill_next_token_bitmask(self._mask)
        bits = self._mask[0].numpy().view(np.uint8)
        return np.unpackbits(bits, bitorder="little")[: self._n].astype(bool)

    def accepting(self) -> bool:
        return self._m.is_completed()

    def stopped(self) -> bool:
        return self._m.is_terminated()

    def feed_bytes(self, data: bytes) -> None:
        pass


class Library:
    """How to make a Matcher for a schema over one engine's vocabulary, per library."""

    def __init__(self, name: str, engine):
        self.name, self.engine, self.n_vocab = name, engine, engine.n_vocab
        self.eos = min(engine.eos_token_ids())
        if name == "xgrammar":
            import xgrammar

            pieces = [engine.token_to_piece(t) for t in range(self.n_vocab)]
            info = xgrammar.TokenizerInfo(pieces, vocab_type=xgrammar.VocabType.RAW,
                                          stop_token_ids=sorted(engine.eos_token_ids()))
            self._compiler = xgrammar.GrammarCompiler(info)

    def matcher(self, schema: dict):
        if self.name == "llguidance":
            return guide.Matcher(self.engine._guides.tokenizer(), grammar.json_schema(schema).grammar())
        if self.name == "llama.cpp":
            return GbnfMatcher(self.engine._model.vocab, schema, self.n_vocab, self.eos)
        return XgrammarMatcher(self._compiler, schema, self.n_vocab)

    def guide(self, schema: dict) -> guide.Guide:
        return guide.Guide(self.matcher(schema), None, self.engine.eos_token_ids(), self.engine.token_to_piece)


def libraries(engine) -> list[Library]:
    names = ["llguidance", "llama.cpp"]
    if os.environ.get("XGRAMMAR_PATH"):
        sys.path.insert(0, os.environ["XGRAMMAR_PATH"])
    try:
        import xgrammar  # noqa: F401

        names.append("xgrammar")
    except ImportError:
        print("xgrammar not importable: skipped (see the module docstring)", file=sys.stderr)
    return [Library(n, engine) for n in names]


# --- coverage ----------------------------------------------------------------------------------
def passes(lib: Library, schema: dict, value) -> bool:
    g = lib.guide(schema)
    for token in lib.engine.tokenize(json.dumps(value, ensure_ascii=False)):
        if not g.allows(token):
            return False
        g.accept(token)
    return g.matcher.accepting()


def coverage(lib: Library) -> dict[str, str]:
    table = {}
    for keyword, schema, good, bad in CASES:
        try:
            lib.matcher(schema)
        except Exception as exc:  # noqa: BLE001 — any library's refusal counts as "refused"
            table[keyword] = "refused"
            print(f"  {lib.name} {keyword}: refused ({str(exc).splitlines()[0][:80]})", file=sys.stderr)
            continue
        table[keyword] = ("wrong" if not passes(lib, schema, good) else
                          "ignored" if passes(lib, schema, bad) else "enforced")
    return table


# --- speed -------------------------------------------------------------------------------------
def speed_run(engine, ids: list[int], lib: Library | None, free_tokens: int) -> dict:
    from danlu.backends.requests import SubmitOptions

    with SampleTimer() as timer:
        if lib is None:
            text = "{}"
            last = list(engine.generate(ids, GenerationParams(max_tokens=free_tokens, temperature=0),
                                        SubmitOptions(ignore_eos=True)))[-1]
        else:
            text, last = constrained_run(engine, ids, lib)
    try:
        json.loads(text)
        parses = True
    except ValueError:
        parses = False
    return {"tps": last.timings.decode_tps, "tokens": last.timings.completion_tokens, "parses": parses,
            "sample_ms_per_token": timer.ms_per_token}


def constrained_run(engine, ids: list[int], lib: Library):
    original = engine._guides.start
    engine._guides.start = lambda constraint: lib.guide(SCHEMA)  # the same sampling path, another library
    try:
        return complete(engine, ids, GenerationParams(max_tokens=600, temperature=0,
                                                      constraint=grammar.json_schema(SCHEMA)))
    finally:
        engine._guides.start = original


def bench_model(model: str, args) -> dict:
    engine = one_stream_engine(model, args.threads)
    try:
        libs = libraries(engine)
        table = {lib.name: coverage(lib) for lib in libs}
        ids = chat_ids(engine, model)
        ways = [*libs, None]
        free_tokens = max(speed_run(engine, ids, way, 8)["tokens"] for way in libs)  # warm-up, and the length
        runs = {("free" if w is None else w.name): [] for w in ways}
        for _ in range(args.repeat):
            for way in ways:
                name = "free" if way is None else way.name
                runs[name].append(speed_run(engine, ids, way, free_tokens))
                print(json.dumps({"model": model, "way": name, **runs[name][-1]}), flush=True)
    finally:
        engine.close()
    median = {k: statistics.median(r["tps"] for r in v) for k, v in runs.items()}
    sampling = {k: statistics.median(r["sample_ms_per_token"] for r in v) for k, v in runs.items()}
    return {"model": model, "vocab": engine.n_vocab, "coverage": table, "median_decode_tps": median,
            "ratio_vs_free": {k: v / median["free"] for k, v in median.items() if k != "free"},
            "median_sample_ms_per_token": sampling,
            "grammar_ms_per_token": {k: v - sampling["free"] for k, v in sampling.items() if k != "free"},
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    machine = _machine.info()
    rows = [bench_model(m, args) for m in args.models.split(",")]
    result = {"machine": machine, "threads": args.threads, "cases": [c[:2] for c in CASES], "models": rows,
              "load_avg_at_end": _machine.load_now()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grammar_choice.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
