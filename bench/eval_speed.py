"""Questions per second: danlu's `ao` protocol vs lm-evaluation-harness's multiple choice, same model, same data.

The fair pair runs on one transformers model object (gemma-3-270m's GGUF, dequantized to fp32 by
transformers): danlu's transformers engine evaluates it with `ao` (the few-shot prefix stays in the
KV cache, only each question's own tokens run, logits for the last position only); lm-eval's `hf`
model evaluates it with its C-Eval-style multiple-choice task (one forward per question over the full
prompt — it already groups the four one-token choices — and logits for every position). danlu on
llama.cpp (Q4_K_M) is measured too. Model loading is outside every timing. The predictions double
as the agreement figures. Writes bench/results/eval_speed.{json,png}.

The machine is shared (2 cores, other people's test runs): wall-clock seconds swing 5x from one minute
to the next, so the ratio is taken from this process's CPU seconds (`time.process_time`, all threads),
which measure the work each harness does; wall seconds are recorded beside them.

    python -m bench.eval_speed [--gguf PATH] [--shots 5] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from danlu.backends import load_engine
from danlu.backends.base import LoadPlan
from danlu.evaluate import EvalConfig, engine_only, lmeval, run_evaluation
from danlu.evaluate.datasets import get_suite, list_subjects

SAMPLE = Path(__file__).resolve().parent.parent / "danlu" / "data" / "ceval_sample"
GEMMA = Path.home() / ".danlu/models/gemma-3-270m/q4_k_m/gemma-3-270m-q4_k_m.gguf"
RESULTS = Path(__file__).resolve().parent / "results"


def timed(work):
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def danlu_ao(engine, data: Path, shots: int, limit: int | None, label: str) -> tuple[dict, float, float, int]:
    """({(subject, id): pred}, wall s, CPU s, questions) on a fresh home (nothing to resume)."""
    with tempfile.TemporaryDirectory() as home:
        config = EvalConfig(model=label, data=data, shots=shots, limit=limit)
        outcome, wall, cpu = timed(lambda: run_evaluation(engine_only(engine), config, Path(home), show_progress=False,
                                                          db_path=Path(home) / "db"))
    return {(p.subject, p.id): p.pred for p in outcome.predictions}, wall, cpu, outcome.answered_now


def lm_eval_mc(engine, data: Path, shots: int) -> tuple[dict, float, float]:
    with tempfile.TemporaryDirectory() as folder:
        subjects = list_subjects(get_suite("ceval"), data, "val")
        tasks = lmeval.write_tasks("ceval", data, subjects, "val", Path(folder))
        (samples, _), wall, cpu = timed(lambda: lmeval.run_lmeval(engine.model, engine.tokenizer, tasks, Path(folder), shots))
    return {k: s.pred for k, s in lmeval.read_samples(samples, "ceval").items()}, wall, cpu


def agreement(a: dict, b: dict) -> dict:
    same = [k for k in a if k in b and a[k] == b[k]]
    return {"agree": len(same), "of": len(a), "percent": round(100 * len(same) / max(len(a), 1), 2),
            "differ": sorted(f"{s}/{i}" for s, i in a if b.get((s, i)) != a[(s, i)])}


def run(gguf: Path, shots: int, limit: int | None) -> dict:
    start = time.perf_counter()
    hf = load_engine(None, None, LoadPlan(path=gguf, n_ctx=4096, n_threads=2), "transformers")
    hf_load_s = time.perf_counter() - start
    hf_preds, hf_wall, hf_cpu, n = danlu_ao(hf, SAMPLE, shots, limit, "gemma-hf")
    ref_preds, ref_wall, ref_cpu = lm_eval_mc(hf, SAMPLE, shots) if limit is None else ({}, float("nan"), float("nan"))
    hf.close()
    cpp = load_engine(None, None, LoadPlan(path=gguf, n_ctx=4096, n_threads=2), "llamacpp")
    cpp_preds, cpp_wall, cpp_cpu, _ = danlu_ao(cpp, SAMPLE, shots, limit, "gemma-cpp")
    cpp.close()
    cpu = {"danlu ao · transformers": hf_cpu, "lm-eval mc · transformers": ref_cpu, "danlu ao · llama.cpp": cpp_cpu}
    wall = {"danlu ao · transformers": hf_wall, "lm-eval mc · transformers": ref_wall, "danlu ao · llama.cpp": cpp_wall}
    return {
        "model": gguf.name, "data": "danlu/data/ceval_sample (val, 5 subjects)", "questions": n, "shots": shots,
        "cpu_seconds": _rounded(cpu), "wall_seconds": _rounded(wall), "transformers_load_s": round(hf_load_s, 1),
        "questions_per_cpu_s": _rounded({k: n / v for k, v in cpu.items()}, 3),
        "questions_per_wall_s": _rounded({k: n / v for k, v in wall.items()}, 3),
        "speedup_same_model_cpu": round(ref_cpu / hf_cpu, 2), "speedup_same_model_wall": round(ref_wall / hf_wall, 2),
        "speedup_llamacpp_vs_lmeval_cpu": round(ref_cpu / cpp_cpu, 1),
        "agreement": {"danlu_transformers_vs_lmeval": agreement(hf_preds, ref_preds),
                      "danlu_llamacpp_vs_lmeval": agreement(cpp_preds, ref_preds),
                      "danlu_llamacpp_vs_danlu_transformers": agreement(cpp_preds, hf_preds)},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "threads": 2,
                    "note": "2 shared cores: wall seconds are noisy, CPU seconds carry the comparison"},
    }


def _rounded(values: dict, digits: int = 1) -> dict:
    return {k: round(v, digits) for k, v in values.items()}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, values = zip(*result["questions_per_cpu_s"].items())
    fig, ax = plt.subplots(figsize=(8, 3))
    bars = ax.barh(names[::-1], values[::-1], color=["#55A868", "#C44E52", "#4C72B0"])
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set_xlim(0, max(values) * 1.2)
    ax.set_xlabel("questions per CPU second (higher is better)")
    ax.set_title(f"C-Eval val sample, {result['shots']}-shot, {result['questions']} questions · {result['model']}\n"
                 f"same transformers model: danlu {result['speedup_same_model_cpu']}x lm-eval (CPU time)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=GEMMA)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="per subject (skips lm-eval, for a smoke run)")
    args = parser.parse_args()
    result = run(args.gguf, args.shots, args.limit)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "eval_speed.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    plot(result, RESULTS / "eval_speed.png")
    keys = ("questions_per_cpu_s", "questions_per_wall_s", "speedup_same_model_cpu", "speedup_same_model_wall", "agreement")
    print(json.dumps({k: result[k] for k in keys}, indent=1))


if __name__ == "__main__":
    main()
