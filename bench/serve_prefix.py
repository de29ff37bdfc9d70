"""Time to first token with several conversations interleaved on one model, through `danlu serve`.

The API is stateless: every turn sends the whole history. N conversations take turns (1A, 1B, 1C, 1D,
2A, …) so each request follows a different conversation. With danlu's prefix cache each conversation
finds its own cached tokens and only the new turn is read; with one cached sequence (`--slots 1`, what
llama-cpp-python's server keeps: the last prompt) every request re-reads its whole history. Both runs
use the same questions and greedy decoding, in the same process, one after the other.

    python -m bench.serve_prefix [MODEL] [--conversations 4] [--turns 8] [--max-tokens 48] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import httpx2 as httpx

from bench.chat_turns import QUESTIONS
from danlu.config import get_settings
from danlu.server import ServerSettings
from danlu.server.app import background_server


def ask(url: str, model: str, messages: list[dict], max_tokens: int) -> tuple[float, str, dict]:
    """(time to the first streamed token, the reply, usage) for one streamed chat completion."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    start, first, parts, usage = time.perf_counter(), None, [], {}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            first = first or time.perf_counter()
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            parts += [c["delta"].get("content") or "" for c in chunk["choices"]]
    return first - start, "".join(parts), usage


def interleaved(url: str, model: str, conversations: int, turns: int, max_tokens: int) -> list[dict]:
    """Per turn: the mean TTFT, prompt and cached tokens over the conversations."""
    talks = [[] for _ in range(conversations)]
    rows = []
    for turn in range(turns):
        samples = []
        for c, messages in enumerate(talks):
            messages.append({"role": "user", "content": QUESTIONS[(turn + 5 * c) % len(QUESTIONS)]})
            ttft, reply, usage = ask(url, model, messages, max_tokens)
            messages.append({"role": "assistant", "content": reply})
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            samples.append((ttft, usage.get("prompt_tokens", 0), cached))
        rows.append({"turn": turn + 1, "ttft_s": statistics.mean(s[0] for s in samples),
                     "prompt_tokens": statistics.mean(s[1] for s in samples),
                     "cached_tokens": statistics.mean(s[2] for s in samples)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def run(args, slots: int | None) -> dict:
    settings = get_settings().model_copy(update={"threads": args.threads})
    server = ServerSettings(host="127.0.0.1", port=0, base=settings, n_ctx=args.ctx, keep_alive_s=-1,
                            parallel=args.conversations if slots is None else 1, cache_slots=slots)
    with background_server(server) as url:
        ask(url, args.model, [{"role": "user", "content": "你好"}], 2)  # load and touch the weights
        rows = interleaved(url, args.model, args.conversations, args.turns, args.max_tokens)
    return {"slots": slots or 2 * args.conversations, "turns": rows,
            "last_over_first": rows[-1]["ttft_s"] / rows[0]["ttft_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-cached-sequence run")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    result = {"model": args.model, "conversations": args.conversations, "threads": args.threads,
              "max_tokens": args.max_tokens, "danlu": run(args, None)}
    if not args.no_baseline:
        print("-- one cached sequence (as llama-cpp-python's server) --", flush=True)
        result["one_slot"] = run(args, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"serve_prefix_{args.model.replace(':', '_')}.json").write_text(json.dumps(result, indent=2))
    summary = {k: round(v["last_over_first"], 2) for k, v in result.items() if isinstance(v, dict)}
    print(f"TTFT turn {args.turns} / turn 1: {summary}")


if __name__ == "__main__":
    main()
