"""`danlu serve` against llama.cpp's own `llama-server`, on the same work, measured side by side in one run.

llama-server is built from the sdist of the installed llama-cpp-python (bench/_llama_build.py: the same
vendored llama.cpp, the wheel's options). Both run as their own processes (bench/_servers.py) with the same
GGUF, threads, parallel slots (`--parallel`), context per slot (`--ctx`: one unified pool of parallel × ctx
cells in each) and OpenMP environment, and both are driven by the same client code through the OpenAI API
(bench/_openai_load.py, the official `openai` client, greedy, no penalties, identical prompts):

- (a) 1, 4 and 16 concurrent clients, 128-token prompts (fresh random ids), 128 new tokens (`ignore_eos`):
  total decode tokens/s (all new tokens over the level's wall time), p50/p99 time to first token and end to end;
- (b) 4 and 8 interleaved conversations, 8 turns each, whole history every turn: time to first token per turn;
- (c) one 6,000-token prompt: time to first token;
- (d) resident memory of each process: the high-water mark over (a)–(c), and the resident set at the end.

Every measurement alternates which server goes first, so both see the same machine noise; the load average is
recorded before each step. Goals: throughput ≥ 1.0× llama-server at 4 and 16 clients, p99 TTFT ≤ llama-server's,
turn-8 TTFT ≤ llama-server's, memory ≤ 1.1× llama-server's.

    python -m bench.vs_llama_server [--models gemma-3-270m,qwen2.5-coder-1.5b-instruct] [--parallel 4]
           [--ctx 8192] [--clients 1,4,16] [--conversations 4,8] [--turns 8] [--long 6000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from bench import _machine, _openai_load as load
from bench._llama_build import cuda_available, llama_server
from bench._servers import Layout, start_both
from bench._vs_report import GOALS, plot, ratios, save
from danlu.config import get_settings
from danlu.loader import resolve
from danlu.threads import POLICIES, apply_wait_policy

SERVERS = ("danlu", "llama-server")
LOGS = Path(__file__).resolve().parent / ".build" / "vs_llama_server_logs"  # the servers' own logs (not results)


def order(step: int) -> tuple[str, ...]:
    """Which server goes first at this step: alternating."""
    return SERVERS if step % 2 == 0 else SERVERS[::-1]


def requests_for(clients: int, args) -> int:
    return max(clients, args.min_requests)


def scenario_a(apis: dict, model: str, args, log) -> dict:
    out = {name: [] for name in SERVERS}
    for step, clients in enumerate(int(c) for c in args.clients.split(",")):
        for rep in range(args.repeat):
            for name in order(step + rep):
                rng = random.Random(f"a-{model}-{clients}-{rep}")  # the same prompts for both servers
                row = load.clients_level(apis[name], model, clients, requests_for(clients, args), args.prompt,
                                         args.gen, rng)
                out[name].append({**row, "rep": rep, "load_avg": _machine.load_now()})
                log({"scenario": "a", "server": name, **{k: v for k, v in row.items() if not k.endswith("_s")},
                     "ttft_p99_s": row["ttft_p99_s"], "e2e_p99_s": row["e2e_p99_s"]})
    return out


def scenario_b(apis: dict, model: str, args, log) -> dict:
    out = {name: {} for name in SERVERS}
    for step, n in enumerate(int(c) for c in args.conversations.split(",")):
        for name in order(step):
            rows = load.conversations(apis[name], model, n, args.turns, args.reply_tokens)
            out[name][str(n)] = {"turns": rows, "load_avg": _machine.load_now()}
            log({"scenario": "b", "server": name, "conversations": n,
                 "ttft_by_turn": [round(r["ttft_s"], 3) for r in rows]})
    return out


def scenario_c(apis: dict, model: str, args, log) -> dict:
    out = {name: [] for name in SERVERS}
    for rep in range(args.repeat):
        for name in order(rep):
            row = load.long_prompt(apis[name], model, args.long, random.Random(f"c-{model}-{rep}"))
            out[name].append({**row, "load_avg": _machine.load_now()})
            log({"scenario": "c", "server": name, "ttft_s": round(row["ttft_s"], 3)})
    return out


def run_model(model: str, args, binary: Path, log) -> dict:
    """Both servers up with the same layout; (a)–(c) interleaved; (d) read from /proc at the end."""
    settings = get_settings()
    layout = Layout(resolve(model, settings=settings).path, model, settings.threads, settings.threads_decode,
                    args.parallel, args.ctx, omp_env(args.omp))
    servers = start_both(layout, binary, LOGS)
    try:
        idle = {name: s.memory() for name, s in servers.items()}
        apis = {name: load.client(s.url) for name, s in servers.items()}
        result = {"model": model, "gguf": str(layout.gguf), "layout": {**layout_dict(layout), "long": args.long},
                  "memory_idle": idle}
        for key, scenario in (("a", scenario_a), ("b", scenario_b), ("c", scenario_c)):
            if key in args.scenarios:
                result[key] = scenario(apis, model, args, log)
        result["d"] = {name: s.memory() for name, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    result["ratios"] = ratios(result)
    return result


def omp_env(policy: str) -> dict[str, str]:
    """The OpenMP variables danlu would set for `policy` ("danlu": its default), given to both servers."""
    if policy == "danlu":
        env: dict[str, str] = {}
        apply_wait_policy(env)
        return env
    return dict(POLICIES[policy])


def layout_dict(layout: Layout) -> dict:
    return {"threads": layout.threads, "decode_threads": layout.decode_threads, "parallel": layout.parallel,
            "ctx_per_slot": layout.ctx_per_slot, "pool_cells": layout.pool, "omp_env": layout.omp_env}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gemma-3-270m,qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=8192, help="context per slot (the 6,000-token prompt must fit)")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--min-requests", type=int, default=4, help="requests per level at least (1 client: in a row)")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--conversations", default="4,8")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--reply-tokens", type=int, default=32)
    parser.add_argument("--long", type=int, default=6000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--scenarios", default="abc")
    parser.add_argument("--omp", default="danlu", choices=["danlu", *POLICIES], help="wait policy both servers get")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="vs_llama_server")
    args = parser.parse_args()
    machine, cuda = _machine.info(), cuda_available()
    binary = llama_server(cuda)
    result = {"machine": machine, "llama_server": str(binary), "cuda": cuda, "goals": GOALS,
              "args": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda row: print(json.dumps(row, ensure_ascii=False), flush=True)  # noqa: E731
    for model in args.models.split(","):
        result["runs"].append(run_model(model, args, binary, log))
        save(result, args.out / args.name)  # after each model: a slow one does not lose the rest
    plot(result, args.out / f"{args.name}.png")


if __name__ == "__main__":
    main()
