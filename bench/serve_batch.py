"""Total decode tokens/s of `danlu serve` with N concurrent streams vs one, next to llama.cpp's own
`llama-batched-bench` on the same model, threads and machine.

danlu is measured through HTTP (N streaming /v1/completions clients on 127.0.0.1, token-id prompts of
`--prompt` tokens, `--gen` new tokens each with `ignore_eos`) and, to separate the server's overhead, on
its batched engine directly. Decode tokens/s counts the tokens produced while all N streams are decoding
(the window from the last first token to the first finish), as llama-batched-bench's S_TG does. Runs
alternate between danlu and llama-batched-bench so both see the same machine noise; medians are reported.

    python -m bench.serve_batch [MODEL] [--threads 2] [--npl 1,4] [--repeat 3]
           [--batched-bench PATH/llama-batched-bench]   # built from the vendored llama.cpp; not shipped
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import threading
import time
from pathlib import Path

import httpx2 as httpx

from danlu.backends.base import GenerationParams
from danlu.config import get_settings
from danlu.loader import make_plan, resolve
from danlu.server import ServerSettings
from danlu.server.app import background_server
from danlu.backends.requests import SubmitOptions


def decode_tps(streams: list[list[tuple[float, int]]]) -> float:
    """Tokens per second while every stream is decoding; each stream is [(time, tokens)] per chunk."""
    start = max(s[0][0] for s in streams)
    end = min(s[-1][0] for s in streams)
    if end <= start:  # one stream, or streams that never overlapped: use the whole of each
        return sum(sum(n for _, n in s[1:]) for s in streams) / max(max(s[-1][0] for s in streams) - start, 1e-9)
    tokens = sum(n for s in streams for t, n in s if start < t <= end)
    return tokens / (end - start)


#: Ordinary ids in every vocabulary danlu ships (past the special tokens at the start).
TOKEN_RANGE = (1000, 30000)


def random_prompts(n: int, length: int, rng: random.Random) -> list[list[int]]:
    """Fresh random token ids per run, as llama-batched-bench uses, so no run reuses another's cache."""
    return [[rng.randrange(*TOKEN_RANGE) for _ in range(length)] for _ in range(n)]


def http_run(url: str, model: str, prompts: list[list[int]], gen: int) -> float:
    streams: list[list[tuple[float, int]]] = [[] for _ in prompts]

    def one(i: int) -> None:
        body = {"model": model, "prompt": prompts[i], "max_tokens": gen, "temperature": 0, "ignore_eos": True,
                "stream": True}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=600) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    streams[i].append((time.perf_counter(), 1))  # one chunk per token (held bytes aside)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return decode_tps(streams)


def engine_run(engine, prompts: list[list[int]], gen: int) -> float:
    streams: list[list[tuple[float, int]]] = [[] for _ in prompts]
    done = threading.Semaphore(0)

    def sink_for(i: int):
        def sink(event) -> None:
            if event.chunk is not None and event.chunk.token_ids:
                streams[i].append((time.perf_counter(), len(event.chunk.token_ids)))
            if event.error or (event.chunk and event.chunk.finish_reason):
                done.release()
        return sink

    params = GenerationParams(max_tokens=gen, temperature=0)
    for i, prompt in enumerate(prompts):
        engine.submit(prompt, params, sink_for(i), SubmitOptions(ignore_eos=True))
    for _ in prompts:
        done.acquire()
    return decode_tps(streams)


def batched_bench(path: Path, gguf: Path, threads: int, npl: list[int], prompt: int, gen: int) -> dict[int, float]:
    """S_TG (decode tokens/s) per parallel count from llama-batched-bench's table."""
    ctx = max(npl) * (prompt + gen) + 64
    cmd = [str(path), "-m", str(gguf), "-c", str(ctx), "-b", "512", "-ub", "512", "-npp", str(prompt),
           "-ntg", str(gen), "-npl", ",".join(map(str, npl)), "-t", str(threads), "-fa", "off"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    rows = [line.split("|")[1:-1] for line in (out.stdout + out.stderr).splitlines() if re.match(r"^\|\s+\d", line)]
    return {int(r[2]): float(r[7]) for r in rows}


def run(args) -> dict:
    settings = get_settings().model_copy(update={"threads": args.threads})
    resolved = resolve(args.model, settings=settings)
    npl = [int(n) for n in args.npl.split(",")]
    server = ServerSettings(host="127.0.0.1", port=0, base=settings, n_ctx=args.prompt + args.gen + 16,
                            parallel=max(npl), keep_alive_s=-1, max_queue=max(npl))
    rng, samples = random.Random(0), {"http": {n: [] for n in npl}, "engine": {n: [] for n in npl},
                                      "llama-batched-bench": {n: [] for n in npl}}
    engine = _direct_engine(args, resolved, settings, npl)
    try:
        with background_server(server) as url:
            httpx.post(url + "/v1/completions", json={"model": args.model, "prompt": "warm up", "max_tokens": 4},
                       timeout=600)
            engine_run(engine, random_prompts(1, 8, rng), 4)  # touch the weights
            for _ in range(args.repeat):  # interleaved, so each way sees the same machine noise
                for n in npl:
                    record(samples, "http", n, http_run(url, args.model, random_prompts(n, args.prompt, rng), args.gen))
                    record(samples, "engine", n, engine_run(engine, random_prompts(n, args.prompt, rng), args.gen))
                if args.batched_bench:
                    for n, tps in batched_bench(args.batched_bench, resolved.path, args.threads, npl, args.prompt,
                                                args.gen).items():
                        record(samples, "llama-batched-bench", n, tps)
    finally:
        engine.close()
    return summarize(args, npl, samples)


def record(samples: dict, via: str, streams: int, tps: float) -> None:
    samples[via][streams].append(tps)
    print(json.dumps({"via": via, "streams": streams, "decode_tps": round(tps, 2)}), flush=True)


def _direct_engine(args, resolved, settings, npl):
    """The server's batched engine without the server, to separate HTTP overhead from decoding."""
    from danlu.backends import llamacpp_batched

    plan = make_plan(resolved, settings, args.prompt + args.gen + 16, parallel=max(npl), slots=2 * max(npl))
    return llamacpp_batched.load(resolved.spec, resolved.variant, plan)


def summarize(args, npl: list[int], samples: dict) -> dict:
    medians = {via: {n: statistics.median(v) for n, v in per.items() if v} for via, per in samples.items()}
    result = {"model": args.model, "threads": args.threads, "prompt_tokens": args.prompt, "new_tokens": args.gen,
              "repeat": args.repeat, "median_decode_tps": medians, "samples": samples}
    top, one = max(npl), min(npl)
    for via, per in medians.items():
        if top in per and one in per:
            result[f"{via}_speedup_{top}_vs_{one}"] = per[top] / per[one]
    reference = medians.get("llama-batched-bench", {}).get(top)
    for via in ("http", "engine"):
        if reference and top in medians[via]:
            result[f"{via}_vs_llama_batched_bench_at_{top}"] = medians[via][top] / reference
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--npl", default="1,4")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batched-bench", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"serve_batch_{args.model.replace(':', '_')}_t{args.threads}.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
