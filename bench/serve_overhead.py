"""What `danlu serve` costs over calling its engine directly, and its request latency under load.

(a) Streaming decode tokens/s of one chat completion through a real uvicorn server on 127.0.0.1
    (`background_server`) read with the official `openai` client, against the same engine built the same
    way (`scheduler.load_served`) and driven in this process through `submit`. Both generate exactly
    `--tokens` tokens (`ignore_eos`, greedy) from the same rendered prompt; tokens/s is counted from the
    first to the last text chunk (so prefill is left out), runs alternate HTTP / in-process. To say where
    a gap comes from, the same request is also read with bare httpx (`http_raw`: no openai client), and
    each run records the CPU time the whole process spent per token.
(b) p50 / p99 latency of whole (non-streaming) chat completions with 1, 4 and 16 concurrent clients,
    each sending the same short prompt for a fixed `--latency-tokens` greedy tokens, with the server's
    default `parallel` decode lanes and queue; requests/s alongside.

    python -m bench.serve_overhead [--models gemma-3-270m,qwen2.5-coder-1.5b-instruct] [--threads 2]
                                   [--tokens 128] [--repeat 5] [--clients 1,4,16] [--requests 48]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx  # the HTTP client the openai package is built on here
import numpy as np
import psutil
from openai import OpenAI

from bench import _machine
from danlu.backends.base import GenerationParams
from danlu.config import get_settings
from danlu.loader import resolve
from danlu.server import ServerSettings
from danlu.server.app import background_server
from danlu.backends.requests import SubmitOptions
from danlu.server.scheduler import load_served

GOAL = 0.95
STREAM_PROMPT = [{"role": "user", "content": "请详细介绍一下长城的历史、结构和文化意义。"}]
SHORT_PROMPT = [{"role": "user", "content": "你好，请用一句话介绍你自己。"}]


def decode_tps(marks: list[tuple[float, int]]) -> dict:
    """From (time, tokens) per text chunk: tokens after the first chunk over the time they took."""
    first, last = marks[0][0], marks[-1][0]
    tokens = sum(n for _, n in marks)
    return {"tokens": tokens, "decode_tps": (tokens - marks[0][1]) / max(last - first, 1e-9)}


def http_stream(client: OpenAI, model: str, n: int) -> dict:
    """One streamed chat completion; marks each text chunk (one token, or several held for UTF-8)."""
    marks, usage = [], None
    stream = client.chat.completions.create(model=model, messages=STREAM_PROMPT, max_tokens=n, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            marks.append((time.perf_counter(), 1))
        usage = chunk.usage or usage
    result = decode_tps(marks)
    result["tokens"] = usage.completion_tokens  # chunks may carry more than one token
    return result


def raw_stream(url: str, model: str, n: int) -> dict:
    """The same request read with bare httpx and json.loads: separates the openai client's cost from the server's."""
    marks, usage = [], None
    body = {"model": model, "messages": STREAM_PROMPT, "max_tokens": n, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                marks.append((time.perf_counter(), 1))
            usage = chunk.get("usage") or usage
    return {**decode_tps(marks), "tokens": usage["completion_tokens"]}


def thread_cpu() -> dict[str, float]:
    """CPU seconds per thread of this process, keyed `name-native_id` (uvicorn, decode threads, the client)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    return {f"{names.get(t.id, 'native')}-{t.id}": t.user_time + t.system_time for t in psutil.Process().threads()}


def with_cpu(run) -> dict:
    """A run's result plus CPU ms per token: the whole process, and each thread that used any (10 ms ticks)."""
    start, threads = time.process_time(), thread_cpu()
    result = run()
    tokens, after = max(result["tokens"], 1), thread_cpu()
    result["cpu_ms_per_token"] = (time.process_time() - start) * 1000 / tokens
    result["thread_cpu_ms_per_token"] = {k: v - threads.get(k, 0) for k, v in after.items() if v > threads.get(k, 0)}
    result["thread_cpu_ms_per_token"] = {k: round(v * 1000 / tokens, 3) for k, v in result["thread_cpu_ms_per_token"].items()}
    return result


def engine_stream(served, n: int) -> dict:
    """The same generation through the engine's `submit`, in this process."""
    marks, done = [], threading.Event()

    def sink(event) -> None:
        if event.chunk is not None and event.chunk.text:
            marks.append((time.perf_counter(), len(event.chunk.token_ids)))
        if event.error or (event.chunk and event.chunk.finish_reason):
            done.set()

    params = GenerationParams(max_tokens=n, temperature=0.0, top_k=1)
    served.runner.submit(served.chat_ids(STREAM_PROMPT), params, sink, SubmitOptions(ignore_eos=True))
    done.wait()
    return decode_tps(marks)


def overhead(url: str, server: ServerSettings, args) -> list[dict]:
    """(a) for every model: HTTP and in-process runs alternated, medians and their ratio."""
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    rows = []
    for model in args.models.split(","):
        served = load_served(model, resolve(model, settings=server.base), server, 0)
        try:
            http_stream(client, model, 8), engine_stream(served, 8)  # warm both up
            samples = {"http": [], "http_raw": [], "in_process": []}
            for _ in range(args.repeat):
                samples["http"].append(with_cpu(lambda: http_stream(client, model, args.tokens)))
                samples["http_raw"].append(with_cpu(lambda: raw_stream(url, model, args.tokens)))
                samples["in_process"].append(with_cpu(lambda: engine_stream(served, args.tokens)))
                print(json.dumps({"model": model, **{k: v[-1] for k, v in samples.items()}}), flush=True)
        finally:
            served.runner.close()
        rows.append(summarize_overhead(model, samples))
    return rows


def summarize_overhead(model: str, samples: dict) -> dict:
    """Ratio of medians (the goal), the paired ratio, and CPU ms per token for each way."""
    med = {via: statistics.median(s["decode_tps"] for s in runs) for via, runs in samples.items()}
    cpu = {via: statistics.median(s["cpu_ms_per_token"] for s in runs) for via, runs in samples.items()}
    paired = [h["decode_tps"] / e["decode_tps"] for h, e in zip(samples["http"], samples["in_process"])]
    ratio = med["http"] / med["in_process"]
    return {"model": model, "median_decode_tps": med, "ratio": ratio, "raw_http_ratio": med["http_raw"] / med["in_process"],
            "paired_ratio_median": statistics.median(paired), "meets_goal": ratio >= GOAL,
            "median_cpu_ms_per_token": cpu, "samples": samples}


def timed_request(client: OpenAI, model: str, n: int) -> float:
    start = time.perf_counter()
    client.chat.completions.create(model=model, messages=SHORT_PROMPT, max_tokens=n, temperature=0,
                                   extra_body={"ignore_eos": True})
    return time.perf_counter() - start


def latency_level(client: OpenAI, model: str, clients: int, requests: int, n: int) -> dict:
    """`clients` threads, each sending its share of `requests` one after another."""
    per_client = max(requests // clients, 1)

    def one_client(_):
        return [timed_request(client, model, n) for _ in range(per_client)]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [s for part in pool.map(one_client, range(clients)) for s in part]
    wall = time.perf_counter() - start
    p50, p99 = np.percentile(latencies, [50, 99])
    return {"clients": clients, "requests": len(latencies), "p50_s": float(p50), "p99_s": float(p99),
            "max_s": max(latencies), "requests_per_s": len(latencies) / wall, "latencies_s": latencies}


def latency(url: str, args) -> list[dict]:
    """(b): the levels in order, one after another, on the model `--latency-model`."""
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    timed_request(client, args.latency_model, 4)  # warm up
    rows = []
    for clients in (int(c) for c in args.clients.split(",")):
        rows.append(latency_level(client, args.latency_model, clients, args.requests, args.latency_tokens))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "latencies_s"}), flush=True)
    return rows


def server_settings(args) -> ServerSettings:
    models = sorted(set(args.models.split(",")) | {args.latency_model})
    base = get_settings().model_copy(update={"threads": args.threads})
    return ServerSettings(host="127.0.0.1", port=0, models=models, max_loaded=len(models), keep_alive_s=-1,
                          n_ctx=args.ctx, base=base)


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    rows = result["overhead"]
    xs = range(len(rows))
    for offset, via in ((-0.27, "in_process"), (0, "http_raw"), (0.27, "http")):
        left.bar([x + offset for x in xs], [r["median_decode_tps"][via] for r in rows], width=0.27, label=via)
    left.set_xticks(list(xs), [f"{r['model'].split('-instruct')[0]}\n{r['ratio']:.3f}×" for r in rows], fontsize=8)
    left.set_ylabel("streamed decode tokens/s (median)")
    left.legend(fontsize=8)
    lat = result["latency"]
    for key in ("p50_s", "p99_s") if lat else ():  # (b) skipped with --clients ""
        right.plot([r["clients"] for r in lat], [r[key] for r in lat], "o-", label=key[:3])
    right.set_xscale("log", base=2)
    right.set_xlabel("concurrent clients")
    right.set_ylabel(f"request latency (s), {result['latency_tokens']} tokens")
    right.legend(fontsize=8)
    fig.suptitle(_machine.label(result["machine"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gemma-3-270m,qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--latency-model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels for (b); empty: skip (b)")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--latency-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default=None, help="result file stem; default serve_overhead_t<threads>")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval (s): how long a thread may hold the GIL while the decode thread waits")
    return parser.parse_args()


def report(args, server: ServerSettings, machine: dict, rows: list[dict], lat: list[dict]) -> dict:
    return {"machine": machine, "threads": args.threads, "gil_switch_interval_s": sys.getswitchinterval(),
            "tokens": args.tokens, "repeat": args.repeat, "parallel": server.parallel, "max_queue": server.max_queue,
            "latency_model": args.latency_model, "latency_tokens": args.latency_tokens, "goal": GOAL,
            "load_avg_at_end": _machine.load_now(), "overhead": rows, "latency": lat}


def main() -> None:
    args = parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    machine, server = _machine.info(), server_settings(args)
    with background_server(server) as url:
        rows = overhead(url, server, args)
        lat = latency(url, args) if args.clients else []
    result = report(args, server, machine, rows, lat)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"serve_overhead_t{args.threads}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    plot(result, args.out / f"{name}.png")
    for r in rows:
        print(f"{r['model']}: HTTP/in-process {r['ratio']:.3f}x (bare httpx {r['raw_http_ratio']:.3f}x)")


if __name__ == "__main__":
    main()
