"""Predicted (danlu.fit's estimate) against measured (danlu.fit.measure) memory, per model and context.

Each measurement is `danlu fit ID --measure --ctx N`: a fresh child process loads the GGUF, decodes
exactly N tokens of text, and reports its resident (and, on a GPU, device) peak over the baseline; the
prediction is the same estimate the loader's fit check uses. With a CUDA GPU the layers fit would offload
are put there (`gpu_layers`), so the table is for the plan danlu would actually load.

    python -m bench.fit_table [--models gemma-3-270m,qwen2.5-coder-1.5b-instruct] [--ctx 512,4096,16384]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import _machine
from danlu import catalog
from danlu.config import get_settings
from danlu.fit import check_fits, measure

MiB = 1 << 20


def planned_gpu_layers(model: str, n_ctx: int) -> int:
    """Layers fit puts on the GPU for this model and context (0 without one)."""
    spec = catalog.get(model)
    return max(check_fits(spec, spec.variant(), n_ctx=n_ctx, force=True).gpu_layers, 0)


def measure_one(model: str, n_ctx: int, threads: int) -> dict:
    gpu_layers = planned_gpu_layers(model, n_ctx)
    report = measure(model, n_ctx, gpu_layers=gpu_layers, n_threads=threads, settings=get_settings())
    row = {k: v for k, v in report.to_dict().items() if k != "measurement"}
    row.update(gpu_layers=gpu_layers, seconds=report.measurement.seconds, host_peak=report.measurement.to_dict()["host"])
    print(json.dumps({k: row[k] for k in ("id", "n_ctx", "predicted_bytes", "measured_bytes", "error")}), flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    """The README's table: model, context, predicted, measured, error."""
    lines = ["| model | context | predicted | measured | error |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['id']} | {r['n_ctx']:,} | {r['predicted_bytes'] / MiB:,.1f} MiB | "
                     f"{r['measured_bytes'] / MiB:,.1f} MiB | {r['error'] * 100:+.1f}% |")
    return "\n".join(lines) + "\n"


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar([x - 0.2 for x in xs], [r["predicted_bytes"] / MiB for r in rows], width=0.4, label="predicted")
    ax.bar([x + 0.2 for x in xs], [r["measured_bytes"] / MiB for r in rows], width=0.4, label="measured")
    ax.set_xticks(list(xs), [f"{r['id'].split(':')[0].split('-instruct')[0]}\nctx {r['n_ctx']}\n{r['error'] * 100:+.1f}%"
                             for r in rows], fontsize=7)
    ax.set_ylabel("peak memory over baseline (MiB)")
    ax.set_title(_machine.label(result["machine"]), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gemma-3-270m,qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--ctx", default="512,4096,16384")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--render-only", action="store_true", help="redraw the table and plot from the JSON")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        return render(json.loads((args.out / "fit_table.json").read_text()), args.out)
    machine = _machine.info()
    rows = [measure_one(m, int(c), args.threads) for m in args.models.split(",") for c in args.ctx.split(",")]
    result = {"machine": machine, "threads": args.threads, "load_avg_at_end": _machine.load_now(), "rows": rows,
              "max_abs_error": max(abs(r["error"]) for r in rows)}
    (args.out / "fit_table.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    render(result, args.out)


def render(result: dict, out: Path) -> None:
    (out / "fit_table.md").write_text(markdown(result["rows"]))
    plot(result, out / "fit_table.png")
    print(markdown(result["rows"]))


if __name__ == "__main__":
    main()
