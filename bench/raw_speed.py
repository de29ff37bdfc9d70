"""Prefill and decode tokens/s of danlu's llama.cpp backend against llama.cpp's own `llama-bench`.

Both run the same GGUF with the same threads, batch (512/512), f16 KV cache, flash attention off and
GPU layers (danlu's fit decides them; llama-bench gets the same `-ngl`). llama-bench is built from the
sdist of the installed llama-cpp-python (bench/_llama_build.py), so the kernels are the same code.

What is compared, per repetition, interleaved (a danlu run, then a llama-bench run, so both see the
same machine noise; medians over repetitions are reported):
- prefill: danlu's `Timings.prompt_tps` for a PP-token prompt on an empty cache (time to first token,
  sampling of that token included) vs llama-bench `-p PP -n 0`;
- decode: danlu's `Timings.decode_tps` over TG greedy tokens after that prompt (greedy sampling without
  penalties, detokenizing and streaming included) vs llama-bench `-p 0 -n TG -d PP` (TG single-token decodes after PP tokens);
- where danlu's decode time goes (bench/_decode_breakdown.py): eval alone, eval + sampling, the whole loop.

    python -m bench.raw_speed [--models gemma-3-270m,qwen2.5-coder-1.5b-instruct] [--threads 1,2]
                              [--pp 128] [--tg 64] [--repeat 5] [--name raw_speed]
    OMP_WAIT_POLICY=passive python -m bench.raw_speed --name raw_speed_omp_passive   # a busy machine

On a machine other processes keep busy, libgomp's default spin-waiting makes every multi-threaded
llama.cpp run (llama-bench's and danlu's alike) collapse by 5-50x at random; both inherit the
environment, so set OMP_WAIT_POLICY=passive for the comparison there (it is recorded in the JSON).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from dataclasses import replace
from pathlib import Path

from bench import _machine
from bench._decode_breakdown import per_token_ms
from bench._llama_build import cuda_available, llama_bench
from danlu.config import get_settings
from danlu.loader import load

GOAL = 0.95
#: A prompt that a base model and a chat model both continue for as long as asked (no early end-of-text).
COUNTING = ", ".join(str(i) for i in range(1, 400))


def prompt_ids(engine, n: int) -> list[int]:
    """Exactly n tokens of a counting sequence (BOS first where the model adds one)."""
    bos = engine.bos_token_id()
    head = [bos] if bos is not None else []
    return (head + engine.tokenize(COUNTING))[:n]


def danlu_run(loaded, ids: list[int], tg: int) -> dict:
    """One generation from an empty cache; danlu's own timings."""
    params = replace(loaded.params, max_tokens=tg, temperature=0.0, top_k=1, stop=[], repetition_penalty=1.0,
                     presence_penalty=0.0, frequency_penalty=0.0)  # plain greedy: llama-bench samples nothing
    loaded.engine.llm.reset()  # no cached prefix: every repetition prefills the whole prompt
    last = None
    for last in loaded.engine.generate(ids, params):
        pass
    t = last.timings
    return {"pp_tps": t.prompt_tps, "tg_tps": t.decode_tps, "tokens": t.completion_tokens}


def bench_cmd(binary: Path, gguf: Path, threads: int, ngl: int, test: list[str]) -> list[str]:
    """llama-bench with danlu's context settings: batch 512/512, f16 KV, no flash attention, mmap."""
    return [str(binary), "-m", str(gguf), "-t", str(threads), "-ngl", str(ngl), "-b", "512", "-ub", "512",
            "-fa", "0", "-ctk", "f16", "-ctv", "f16", "-lm", "mmap", "-r", "1", "-o", "json", *test]


def llama_bench_run(binary: Path, gguf: Path, threads: int, ngl: int, pp: int, tg: int) -> dict:
    """One repetition of each test; llama-bench's avg_ts is tokens/s."""
    out = {}
    for key, test in (("pp_tps", ["-p", str(pp), "-n", "0"]), ("tg_tps", ["-p", "0", "-n", str(tg), "-d", str(pp)])):
        done = subprocess.run(bench_cmd(binary, gguf, threads, ngl, test), capture_output=True, text=True,
                              timeout=1200, check=True)
        out[key] = json.loads(done.stdout)[0]["avg_ts"]
    return out


def gpu_layers(loaded) -> int:
    """The layers danlu's fit put on the GPU (0 on a CPU-only machine), for llama-bench's -ngl."""
    n = loaded.engine.llm.model_params.n_gpu_layers
    return 99 if n < 0 or n > 10_000 else n


def measure(model: str, threads: int, args, binary: Path) -> dict:
    """Interleaved repetitions for one model at one thread count."""
    settings = get_settings().model_copy(update={"threads": threads})
    loaded = load(model, n_ctx=args.pp + args.tg + 64, settings=settings)
    ids, ngl = prompt_ids(loaded.engine, args.pp), gpu_layers(loaded)
    danlu_run(loaded, ids, 8)  # warm-up, as llama-bench does one before timing
    samples = {"danlu": [], "llama-bench": [], "breakdown": []}
    try:
        for _ in range(args.repeat):
            samples["danlu"].append(danlu_run(loaded, ids, args.tg))
            samples["llama-bench"].append(llama_bench_run(binary, loaded.resolved.path, threads, ngl, args.pp, args.tg))
            samples["breakdown"].append(per_token_ms(loaded.engine, ids, args.tg, loaded.params.repetition_penalty))
            print(json.dumps({"model": model, "threads": threads, **{k: v[-1] for k, v in samples.items()}}), flush=True)
    finally:
        loaded.engine.close()
    return summarize(model, threads, ngl, samples)


def summarize(model: str, threads: int, ngl: int, samples: dict) -> dict:
    med = {via: {k: statistics.median(s[k] for s in samples[via]) for k in ("pp_tps", "tg_tps")}
           for via in ("danlu", "llama-bench")}
    ratios = {k: med["danlu"][k] / med["llama-bench"][k] for k in ("pp_tps", "tg_tps")}
    paired = {k: [d[k] / b[k] for d, b in zip(samples["danlu"], samples["llama-bench"])] for k in ("pp_tps", "tg_tps")}
    return {"model": model, "threads": threads, "gpu_layers": ngl, "median": med, "ratio": ratios,
            "paired_ratio_median": {k: statistics.median(v) for k, v in paired.items()},
            "meets_goal": {k: r >= GOAL for k, r in ratios.items()}, "decode_ms_per_token": breakdown(samples, med),
            "samples": samples}


def breakdown(samples: dict, med: dict) -> dict:
    """Median ms per decoded token: llama-bench, eval alone, eval + sampling, danlu's whole loop."""
    parts = {k: statistics.median(b[k] for b in samples["breakdown"])
             for k in ("eval_ms", "eval_sample_ms", "eval_sample_penalty_ms")}
    return {"llama_bench_ms": 1000 / med["llama-bench"]["tg_tps"], **parts, "danlu_ms": 1000 / med["danlu"]["tg_tps"]}


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["runs"]
    labels = [f"{r['model'].split('-instruct')[0]}\n{r['threads']} thr" for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    for offset, key, name in ((-0.2, "pp_tps", f"prefill pp{result['pp']}"), (0.2, "tg_tps", f"decode tg{result['tg']}")):
        ax.bar([x + offset for x in xs], [r["ratio"][key] for r in rows], width=0.4, label=name)
    ax.axhline(GOAL, color="k", linestyle="--", linewidth=1, label=f"goal {GOAL}×")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("danlu / llama-bench (median tokens/s)")
    ax.set_title(_machine.label(result["machine"]), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def save(result: dict, stem: Path) -> None:
    result["load_avg_at_end"] = _machine.load_now()
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    plot(result, stem.with_suffix(".png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gemma-3-270m,qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--pp", type=int, default=128)
    parser.add_argument("--tg", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="raw_speed", help="result file stem under --out")
    args = parser.parse_args()
    machine, cuda = _machine.info(), cuda_available()
    binary = llama_bench(cuda)
    if machine["device"]["kind"] == "cuda" and not cuda:
        print("warning: a CUDA GPU but no nvcc: llama-bench is a CPU build, danlu offloads — the ratio is not like for like")
    result = {"machine": machine, "llama_bench": str(binary), "llama_bench_cuda": cuda, "pp": args.pp, "tg": args.tg, "repeat": args.repeat,
              "goal": GOAL, "runs": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for model in args.models.split(","):
        for threads in args.threads.split(","):
            result["runs"].append(measure(model, int(threads), args, binary))
            save(result, args.out / args.name)  # after each configuration: a slow one does not lose the rest
    for r in result["runs"]:
        print(f"{r['model']} t{r['threads']}: prefill {r['ratio']['pp_tps']:.3f}x, decode {r['ratio']['tg_tps']:.3f}x")


if __name__ == "__main__":
    main()
