"""Thread count and OpenMP wait policy for llama.cpp on this machine, idle and with other processes busy.

Each configuration runs in a fresh process (libgomp reads its wait policy once, when it loads), measured with
`danlu bench`'s own code (danlu/bench/run.py: the server's batched engine, prefill, one-stream decode and
4-stream decode). Configurations: decode threads / prompt-and-batch threads (cores or cores − 1) and the wait
policies of danlu/threads.py (libgomp's default spin, active, passive, brief). Machine states: as it is
(`ambient`: its load average is recorded) and with `--busy N` extra processes spinning on the CPU, like
another job on a shared machine. Rounds interleave every configuration and state, so all see the same noise;
medians over rounds are reported.

    python -m bench.threads [--models gemma-3-270m,qwen2.5-coder-1.5b-instruct] [--rounds 3] [--busy 0,2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench import _machine
from danlu.threads import USER_KNOBS

CORES = os.cpu_count() or 1
#: (name, decode threads, batch threads, DANLU_OMP_WAIT)
CONFIGS = [
    (f"{CORES}t spin (libgomp default)", CORES, CORES, "spin"),
    (f"{CORES}t active", CORES, CORES, "active"),
    (f"{CORES}t passive", CORES, CORES, "passive"),
    (f"{CORES}t brief", CORES, CORES, "brief"),
    (f"{max(CORES - 1, 1)}t", max(CORES - 1, 1), max(CORES - 1, 1), "passive"),
    (f"{max(CORES - 1, 1)}t decode, {CORES}t batch passive", max(CORES - 1, 1), CORES, "passive"),
    (f"{max(CORES - 1, 1)}t decode, {CORES}t batch brief", max(CORES - 1, 1), CORES, "brief"),
]
SPINNER = "while True: pass"


def child_env(threads: int, batch: int, policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in USER_KNOBS}
    return {**env, "DANLU_DECODE_THREADS": str(threads), "DANLU_THREADS": str(batch), "DANLU_OMP_WAIT": policy}


def measure(model: str, config: tuple, args) -> dict:
    """One configuration in its own process; its danlu bench report (or the error)."""
    name, threads, batch, policy = config
    request = json.dumps({"model": model, "pp": args.pp, "tg": args.tg})
    try:
        done = subprocess.run([sys.executable, "-m", "bench.threads", "--child", request], capture_output=True,
                              text=True, timeout=args.timeout, env=child_env(threads, batch, policy))
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
        report = {"error": f"{type(exc).__name__}"}  # a collapse past the timeout is a result too
    return {"config": name, "threads": threads, "threads_batch": batch, "policy": policy, **report}


def child(request: str) -> None:
    from danlu.bench.run import run

    req = json.loads(request)
    print(json.dumps(run(req["model"], pp=req["pp"], tg=req["tg"], streams=(1, 4), repeat=1)), flush=True)


def spinners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", SPINNER]) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def figures(report: dict) -> dict:
    """prefill tok/s, 1-stream decode tok/s, 4-stream decode tok/s (0 for a run that failed or timed out)."""
    rows = {r["streams"]: r for r in report.get("rows", [])}
    return {"prefill_tps": rows.get(1, {}).get("prefill_tps", 0.0), "decode1_tps": rows.get(1, {}).get("decode_tps", 0.0),
            "decode4_tps": rows.get(4, {}).get("decode_tps", 0.0)}


def summarize(samples: list[dict]) -> list[dict]:
    """Medians per (model, state, configuration), and each as a share of the best configuration there."""
    keys = sorted({(s["model"], s["state"], s["config"]) for s in samples}, key=str)
    rows = []
    for model, state, config in keys:
        runs = [figures(s) for s in samples if (s["model"], s["state"], s["config"]) == (model, state, config)]
        rows.append({"model": model, "state": state, "config": config,
                     **{k: statistics.median(r[k] for r in runs) for k in runs[0]},
                     "min": {k: min(r[k] for r in runs) for k in runs[0]}})
    for row in rows:
        peers = [r for r in rows if (r["model"], r["state"]) == (row["model"], row["state"])]
        row["share_of_best"] = {k: row[k] / max(max(p[k] for p in peers), 1e-9) for k in row["min"]}
    return rows


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["model"], r["state"]) for r in result["summary"]}, key=str)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4.6), squeeze=False, sharey=True)
    for ax, (model, state) in zip(axes[0], groups):
        rows = [r for r in result["summary"] if (r["model"], r["state"]) == (model, state)]
        for offset, key in ((-0.27, "prefill_tps"), (0, "decode1_tps"), (0.27, "decode4_tps")):
            ax.barh([i + offset for i in range(len(rows))], [r["share_of_best"][key] for r in rows], height=0.27,
                    label=key.replace("_tps", ""))
        ax.set_yticks(range(len(rows)), [r["config"] for r in rows], fontsize=7)
        ax.set_title(f"{model.split('-instruct')[0]} · {state}", fontsize=8)
        ax.set_xlabel("share of the best configuration (median)", fontsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(_machine.label(result["machine"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="gemma-3-270m,qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", default="0,2", help="extra spinning processes per machine state")
    parser.add_argument("--pp", type=int, default=128)
    parser.add_argument("--tg", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="threads")
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    result = {"machine": _machine.info(), "pp": args.pp, "tg": args.tg, "rounds": args.rounds, "samples": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for _ in range(args.rounds):
        for busy in (int(b) for b in args.busy.split(",")):
            state, procs = ("ambient" if not busy else f"+{busy} busy"), spinners(busy)
            try:
                for model in args.models.split(","):
                    for config in CONFIGS:
                        sample = {**measure(model, config, args), "model": model, "state": state,
                                  "load_avg": _machine.load_now()}
                        result["samples"].append(sample)
                        print(json.dumps({k: sample[k] for k in ("model", "state", "config", "load_avg")} |
                                         figures(sample)), flush=True)
                        save(result, args)  # after every run: a long study stopped early keeps what it has
            finally:
                stop(procs)
    plot(result, args.out / f"{args.name}.png")


def save(result: dict, args) -> None:
    result["summary"], result["load_avg_at_end"] = summarize(result["samples"]), _machine.load_now()
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
