"""Ollama's /api/chat against OpenAI's /v1/chat/completions on the same danlu server, model and prompt: streaming
decode tokens/s, counted from the first to the last text piece (prefill left out), runs alternating between the
two APIs, `--tokens` tokens each (`ignore_eos`, greedy). Goal: /api/chat ≥ 0.97× /v1. Both are read with bare
httpx so the client costs the same; what differs is only the server's protocol layer (NDJSON vs SSE).

    python -m bench.ollama_vs_openai [--models gemma-3-270m,qwen2.5-coder-1.5b-instruct] [--tokens 128] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import httpx2 as httpx

from bench import _machine
from danlu.config import get_settings
from danlu.server import ServerSettings
from danlu.server.app import background_server

GOAL = 0.97
MESSAGES = [{"role": "user", "content": "请详细介绍一下长城的历史、结构和文化意义。"}]
RESULTS = Path(__file__).parent / "results"


def rate(marks: list[float]) -> float:
    """Text pieces after the first over the time they took (one piece is one token here, or a few for UTF-8)."""
    return (len(marks) - 1) / max(marks[-1] - marks[0], 1e-9)


def openai_stream(client: httpx.Client, model: str, n: int) -> list[float]:
    body = {"model": model, "messages": MESSAGES, "max_tokens": n, "temperature": 0, "stream": True, "ignore_eos": True}
    marks = []
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                marks.append(time.perf_counter())
    return marks


def ollama_stream(client: httpx.Client, model: str, n: int) -> list[float]:
    body = {"model": model, "messages": MESSAGES, "stream": True,
            "options": {"num_predict": n, "temperature": 0, "ignore_eos": True}}
    marks = []
    with client.stream("POST", "/api/chat", json=body) as response:
        for line in response.iter_lines():
            if line and not json.loads(line).get("done") and json.loads(line)["message"]["content"]:
                marks.append(time.perf_counter())
    return marks


def measure(url: str, model: str, tokens: int, repeat: int) -> dict:
    with httpx.Client(base_url=url, timeout=600) as client:
        openai_stream(client, model, 8)  # load and warm up
        runs = {"v1": [], "api": []}
        for _ in range(repeat):
            runs["v1"].append(rate(openai_stream(client, model, tokens)))
            runs["api"].append(rate(ollama_stream(client, model, tokens)))
    v1, api = statistics.median(runs["v1"]), statistics.median(runs["api"])
    return {"model": model, "v1_tps": round(v1, 2), "api_chat_tps": round(api, 2), "ratio": round(api / v1, 3),
            "runs": runs}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["v1_tps"] for r in rows], 0.4, label="/v1/chat/completions (SSE)")
    ax.bar([i + 0.2 for i in x], [r["api_chat_tps"] for r in rows], 0.4, label="/api/chat (NDJSON)")
    for i, r in enumerate(rows):
        ax.text(i, max(r["v1_tps"], r["api_chat_tps"]) * 1.02, f"{r['ratio']:.2f}×", ha="center")
    ax.set_xticks(list(x), [r["model"] for r in rows], fontsize=8)
    ax.set_ylabel("decode tokens/s")
    ax.set_title(f"Ollama API vs OpenAI API, streaming · {_machine.label(result['machine'])}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gemma-3-270m,qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    base = get_settings().model_copy(update={"threads": args.threads})
    result = {"machine": _machine.info(), "goal": GOAL, "tokens": args.tokens, "rows": []}
    with background_server(ServerSettings(base=base, port=0, n_ctx=1024, keep_alive_s=-1)) as url:
        for model in args.models.split(","):
            result["rows"].append(measure(url, model, args.tokens, args.repeat))
            print(json.dumps({k: v for k, v in result["rows"][-1].items() if k != "runs"}))
    result["machine"]["load_avg_at_end"] = _machine.load_now()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ollama_vs_openai.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    plot(result, RESULTS / "ollama_vs_openai.png")


if __name__ == "__main__":
    main()
