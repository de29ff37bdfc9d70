"""Decode tokens/s with a JSON schema vs free text on the same prompt, in the server's batched llama.cpp engine.

Each model answers one Chinese prompt two ways, alternating run by run so both see the same machine noise:
constrained by a JSON schema (eight cities with names, populations and one-line notes; it ends when the grammar
does) and free text (`ignore_eos`, exactly as many new tokens as the JSON answer had, so both decode over the
same KV lengths). Both read decode tokens/s from the engine's own `Timings` (first token to last); the result is
the ratio of medians, goal ≥ 0.9×. Sampling is greedy with no penalties, so the only extra work is the grammar's.
On a shared machine the ratio is noisy, so the time spent choosing each token (the engine's `sample` call: the
whole grammar cost) is also timed, in ms/token, and so are the draws the grammar refused (each costs one
full-vocabulary mask and a second draw).

    python -m bench.json_speed [--models gemma-3-270m,qwen2.5-coder-1.5b-instruct] [--threads 1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench import _machine
from danlu.backends.base import GenerationParams, complete
from danlu.config import get_settings
from danlu.loader import make_plan, resolve
from danlu.outputs import grammar, guide

PROMPT = "用 JSON 列出中国人口最多的八个城市，每个城市写名字、人口（万）和一句简介。"
SCHEMA = {"type": "object", "properties": {"cities": {"type": "array", "minItems": 8, "maxItems": 8, "items": {
    "type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                     "population_wan": {"type": "integer", "minimum": 1, "maximum": 10000},
                                     "note": {"type": "string", "maxLength": 40}},
    "required": ["name", "population_wan", "note"], "additionalProperties": False}}},
    "required": ["cities"], "additionalProperties": False}


class SampleTimer:
    """Times the batched engine's per-token `sample` call (chain, and grammar when there is one)."""

    def __init__(self):
        from danlu.backends import llamacpp_batched

        self.seconds, self.calls, self._module = 0.0, 0, llamacpp_batched
        self._sample = llamacpp_batched.sample

    def __enter__(self):
        def timed(*args):
            start = time.perf_counter()
            token = self._sample(*args)
            self.seconds, self.calls = self.seconds + time.perf_counter() - start, self.calls + 1
            return token

        self._module.sample = timed
        return self

    def __exit__(self, *exc):
        self._module.sample = self._sample

    @property
    def ms_per_token(self) -> float:
        return 1e3 * self.seconds / max(self.calls, 1)


class RefusalCounter:
    """Counts the draws a grammar refused (Guide.mask calls) while it is installed."""

    def __init__(self):
        self.count, self._mask = 0, guide.Guide.mask

    def __enter__(self):
        counter = self

        def mask(self_, logits):
            counter.count += 1
            return counter._mask(self_, logits)

        guide.Guide.mask = mask
        return self

    def __exit__(self, *exc):
        guide.Guide.mask = self._mask


def chat_ids(engine, model: str) -> list[int]:
    """The prompt as one user turn in the model's own chat markup (gemma's turns, else ChatML)."""
    if model.startswith("gemma"):
        return engine.tokenize(f"<start_of_turn>user\n{PROMPT}<end_of_turn>\n<start_of_turn>model\n", special=True,
                               add_bos=True)
    return engine.tokenize(f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n", special=True)


def one_run(engine, ids: list[int], constrained: bool, free_tokens: int) -> dict:
    from danlu.backends.requests import SubmitOptions

    with SampleTimer() as timer, RefusalCounter() as refused:
        if constrained:
            params = GenerationParams(max_tokens=600, temperature=0, constraint=grammar.json_schema(SCHEMA))
            text, last = complete(engine, ids, params)
            json.loads(text)  # the bench is void if the output did not parse
        else:
            params = GenerationParams(max_tokens=free_tokens, temperature=0)
            last = list(engine.generate(ids, params, SubmitOptions(ignore_eos=True)))[-1]
    return {"tps": last.timings.decode_tps, "tokens": last.timings.completion_tokens, "refused": refused.count,
            "sample_ms_per_token": timer.ms_per_token}


def one_stream_engine(model: str, threads: int):
    """The server's batched llama.cpp engine for `model`, one stream of 2,048 tokens (what these benches drive)."""
    from danlu.backends import llamacpp_batched

    settings = get_settings().model_copy(update={"threads": threads})
    resolved = resolve(model, settings=settings)
    return llamacpp_batched.load(resolved.spec, resolved.variant, make_plan(resolved, settings, 2048, parallel=1, slots=2))


def bench_model(model: str, args) -> dict:
    engine = one_stream_engine(model, args.threads)
    try:
        ids = chat_ids(engine, model)
        # warm-up: builds the grammar tokenizer, touches the weights, and sets how long the free answers run
        free_tokens = one_run(engine, ids, True, 0)["tokens"]
        one_run(engine, ids, False, free_tokens)
        runs = {"free": [], "json": []}
        for _ in range(args.repeat):
            for way in ("json", "free"):
                runs[way].append(one_run(engine, ids, way == "json", free_tokens))
                print(json.dumps({"model": model, "way": way, **runs[way][-1]}), flush=True)
    finally:
        engine.close()
    return summarize(model, runs)


def summarize(model: str, runs: dict) -> dict:
    median = {way: statistics.median(r["tps"] for r in rs) for way, rs in runs.items()}
    sampling = {way: statistics.median(r["sample_ms_per_token"] for r in rs) for way, rs in runs.items()}
    tokens = sum(r["tokens"] for r in runs["json"])
    return {"model": model, "median_decode_tps": median, "ratio_json_vs_free": median["json"] / median["free"],
            "median_sample_ms_per_token": sampling,
            "grammar_ms_per_token": sampling["json"] - sampling["free"],
            "json_tokens_per_run": tokens / len(runs["json"]),
            "refused_draws_per_token": sum(r["refused"] for r in runs["json"]) / max(tokens, 1), "runs": runs}


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["models"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    x = range(len(rows))
    for offset, way in ((-0.2, "free"), (0.2, "json")):
        ax.bar([i + offset for i in x], [r["median_decode_tps"][way] for r in rows], width=0.4,
               label="free text" if way == "free" else "JSON schema")
    for i, r in enumerate(rows):
        ax.text(i, max(r["median_decode_tps"].values()) * 1.02, f"{r['ratio_json_vs_free']:.2f}×", ha="center")
    ax.set_xticks(list(x), [r["model"] for r in rows], fontsize=8)
    ax.set_ylabel("decode tokens/s (median)")
    ax.set_title(_machine.label(result["machine"]) + f" · {result['threads']} threads", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gemma-3-270m,qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="json_speed")
    args = parser.parse_args()
    machine = _machine.info()
    rows = [bench_model(m, args) for m in args.models.split(",")]
    result = {"machine": machine, "threads": args.threads, "repeat": args.repeat, "prompt": PROMPT, "schema": SCHEMA,
              "models": rows, "load_avg_at_end": _machine.load_now()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    plot(result, args.out / f"{args.name}.png")
    print(json.dumps([{k: v for k, v in r.items() if k != "runs"} for r in rows], indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
