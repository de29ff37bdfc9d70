"""Ratios, goals, JSON, PNG and the README's markdown table for bench/vs_llama_server.py."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench import _machine

GOALS = {"throughput": 1.0, "ttft_p99": 1.0, "turn8_ttft": 1.0, "memory": 1.1}


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _levels(runs: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for row in runs:
        out.setdefault(row["clients"], []).append(row)
    return out


def ratios(result: dict, args=None) -> dict:
    """danlu / llama-server for each figure (medians over repetitions), with whether each goal is met."""
    out: dict = {}
    if "a" in result:
        d, ls = _levels(result["a"]["danlu"]), _levels(result["a"]["llama-server"])
        for n in sorted(d):
            out[f"a{n}"] = {k: _median(d[n], k) / _median(ls[n], k)
                            for k in ("decode_tps", "ttft_p50_s", "ttft_p99_s", "e2e_p50_s", "e2e_p99_s")}
    for n, rows in result.get("b", {}).get("danlu", {}).items():
        theirs = result["b"]["llama-server"][n]["turns"]
        out[f"b{n}"] = {"turn_last_ttft": rows["turns"][-1]["ttft_s"] / theirs[-1]["ttft_s"],
                        "turn_first_ttft": rows["turns"][0]["ttft_s"] / theirs[0]["ttft_s"]}
    if "c" in result:
        out["c"] = {"ttft": _median(result["c"]["danlu"], "ttft_s") / _median(result["c"]["llama-server"], "ttft_s")}
    if "d" in result:
        out["d"] = {k: result["d"]["danlu"][k] / result["d"]["llama-server"][k] for k in ("peak_rss", "rss")}
    out["goals_met"] = goals_met(out)
    return out


def goals_met(r: dict) -> dict:
    a_levels = [k for k in r if k.startswith("a")]
    met = {}
    for n in (4, 16):
        if f"a{n}" in r:
            met[f"throughput_{n}_clients"] = r[f"a{n}"]["decode_tps"] >= GOALS["throughput"]
    if a_levels:
        met["ttft_p99"] = all(r[k]["ttft_p99_s"] <= GOALS["ttft_p99"] for k in a_levels)
    for k in (k for k in r if k.startswith("b")):
        met[f"turn8_ttft_{k[1:]}_conversations"] = r[k]["turn_last_ttft"] <= GOALS["turn8_ttft"]
    if "d" in r:
        met["memory"] = r["d"]["peak_rss"] <= GOALS["memory"]
    return met


def save(result: dict, stem: Path) -> None:
    result["load_avg_at_end"] = _machine.load_now()
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    stem.with_suffix(".md").write_text(markdown(result))


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def table_rows(run: dict) -> list[tuple[str, str, str, str, str]]:
    """(what, danlu, llama-server, ratio, goal) rows for one model."""
    rows, r = [], run["ratios"]
    for n, mine in sorted(_levels(run.get("a", {}).get("danlu", [])).items()):
        theirs = _levels(run["a"]["llama-server"])[n]
        rows.append((f"(a) {n} clients: decode tok/s", f"{_median(mine, 'decode_tps'):.1f}",
                     f"{_median(theirs, 'decode_tps'):.1f}", f"{r[f'a{n}']['decode_tps']:.2f}×", "≥ 1.0×" if n > 1 else ""))
        for key, label in (("ttft_p50_s", "TTFT p50"), ("ttft_p99_s", "TTFT p99"), ("e2e_p99_s", "end-to-end p99")):
            rows.append((f"(a) {n} clients: {label} (s)", f"{_median(mine, key):.2f}", f"{_median(theirs, key):.2f}",
                         f"{r[f'a{n}'][key]:.2f}×", "≤ 1.0×" if key == "ttft_p99_s" else ""))
    for n, mine in run.get("b", {}).get("danlu", {}).items():
        theirs = run["b"]["llama-server"][n]["turns"]
        for i, label in ((0, "turn 1"), (-1, f"turn {len(theirs)}")):
            rows.append((f"(b) {n} conversations: TTFT {label} (s)", f"{mine['turns'][i]['ttft_s']:.2f}",
                         f"{theirs[i]['ttft_s']:.2f}", f"{mine['turns'][i]['ttft_s'] / theirs[i]['ttft_s']:.2f}×",
                         "≤ 1.0×" if i else ""))
    if "c" in run:
        rows.append((f"(c) {run['layout'].get('long', 6000)}-token prompt: TTFT (s)",
                     f"{_median(run['c']['danlu'], 'ttft_s'):.2f}", f"{_median(run['c']['llama-server'], 'ttft_s'):.2f}",
                     f"{r['c']['ttft']:.2f}×", ""))
    if "d" in run:
        for key, label in (("peak_rss", "peak resident memory"), ("rss", "resident memory at the end")):
            rows.append((f"(d) {label}", _mib(run["d"]["danlu"][key]), _mib(run["d"]["llama-server"][key]),
                         f"{r['d'][key]:.2f}×", "≤ 1.1×" if key == "peak_rss" else ""))
    return rows


def markdown(result: dict) -> str:
    lines = []
    for run in result["runs"]:
        lay = run["layout"]
        lines += [f"**{run['model']}** — {lay['parallel']} slots × {lay['ctx_per_slot']} context "
                  f"({lay['pool_cells']} cells, one pool), threads {lay['decode_threads']}/{lay['threads']} "
                  f"(decode/batch), {lay['omp_env'] or 'libgomp default'}", "",
                  "| | danlu | llama-server | danlu / llama-server | goal |", "|---|---:|---:|---:|---|"]
        lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in table_rows(run)]
        lines.append("")
    return "\n".join(lines)


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(len(runs), 3, figsize=(13, 3.6 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        _plot_a(row[0], run)
        _plot_b(row[1], run)
        _plot_ratios(row[2], run)
    fig.suptitle(_machine.label(result["machine"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _plot_a(ax, run: dict) -> None:
    for name, marker in (("danlu", "o-"), ("llama-server", "s--")):
        levels = _levels(run.get("a", {}).get(name, []))
        ax.plot(list(levels), [_median(v, "decode_tps") for v in levels.values()], marker, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("decode tok/s (all clients)")
    ax.set_title(f"{run['model']}: (a) throughput", fontsize=9)
    ax.legend(fontsize=8)


def _plot_b(ax, run: dict) -> None:
    for name, style in (("danlu", "-"), ("llama-server", "--")):
        for n, data in run.get("b", {}).get(name, {}).items():
            turns = data["turns"]
            ax.plot([t["turn"] for t in turns], [t["ttft_s"] for t in turns], style, marker="o", label=f"{name}, {n} conv.")
    ax.set_xlabel("turn")
    ax.set_ylabel("time to first token (s)")
    ax.set_title("(b) interleaved conversations", fontsize=9)
    ax.legend(fontsize=7)


def _plot_ratios(ax, run: dict) -> None:
    r = run["ratios"]
    items = [(f"tput {k[1:]}", v["decode_tps"]) for k, v in r.items() if k.startswith("a")]
    items += [(f"p99 TTFT {k[1:]}", v["ttft_p99_s"]) for k, v in r.items() if k.startswith("a")]
    items += [(f"turn-8 TTFT {k[1:]}c", v["turn_last_ttft"]) for k, v in r.items() if k.startswith("b")]
    items += [("6k TTFT", r["c"]["ttft"])] if "c" in r else []
    items += [("peak RSS", r["d"]["peak_rss"])] if "d" in r else []
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.axvline(1.0, color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("danlu / llama-server")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("(a)–(d) ratios", fontsize=9)
