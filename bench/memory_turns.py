"""Resident memory over a 50-turn chat: RWKV's recurrent state stays flat, a transformer's KV cache grows.

Two tiny random models with the same layer stack (8 layers × 512) and the same byte-level BPE
tokenizer (RWKV-4 reads it as its `tokenizer.json`), so both see the same token streams. Each turn
appends a user message to the history and generates a reply of up to 32 tokens through danlu's
engines; both reuse their cache/state, so a turn runs only its new tokens. After every turn the
process's RSS and the exact bytes of the KV cache / RNN state are recorded. Each model runs in its
own process so the RSS figures do not mix. Writes bench/results/memory_turns.{json,png}.

    python -m bench.memory_turns [--turns 50] [--layers 8] [--embd 512]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import multiprocessing
import platform
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
USER_TURNS = ["你好，今天天气怎么样？", "我们一起去公园玩吧。", "请问丹炉是什么？", "谢谢你，再见！", "北京是中国的首都吗？"]
MiB = 2**20


def build_models(folder: Path, layers: int, embd: int) -> dict[str, Path]:
    """A Llama and an RWKV-4 of the same shape, sharing one tokenizer."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import tiny_models as tm

    llama_dir = folder / "llama"
    tokenizer = tm.byte_bpe_tokenizer(llama_dir, vocab_size=512, specials=("<unk>", "<s>", "</s>"), eos="</s>", bos="<s>")
    tm.llama(llama_dir, hidden=embd, layers=layers, positions=8192, tokenizer=tokenizer)
    rwkv_dir = folder / "rwkv"
    rwkv_dir.mkdir()
    tokenizer.backend_tokenizer.save(str(rwkv_dir / "tokenizer.json"))
    tm.rwkv4_pth(rwkv_dir / "tiny-rwkv4.pth", vocab=len(tokenizer), n_embd=embd, n_layer=layers)
    return {"transformer (Llama, KV cache)": llama_dir, "RWKV-4 (recurrent state)": rwkv_dir / "tiny-rwkv4.pth"}


def run_chat(name: str, path: str, turns: int) -> dict:
    """One model, one process: chat for `turns` turns, measuring after each."""
    import psutil
    import torch

    from danlu.backends import load_engine
    from danlu.backends.base import GenerationParams, LoadPlan

    backend = "rwkv" if name.startswith("RWKV") else "transformers"
    engine = load_engine(None, None, LoadPlan(path=Path(path), n_ctx=8192, n_threads=1), backend)
    params = GenerationParams(max_tokens=32, temperature=1.0, top_p=1.0, top_k=0, seed=0)
    process, history, rows = psutil.Process(), [], []
    for turn in range(turns):
        history = engine.cached_ids() + engine.tokenize(f"\nUser: {USER_TURNS[turn % len(USER_TURNS)]}\nAssistant:")
        final = list(engine.generate(history, params))[-1]
        gc.collect()
        rows.append({"turn": turn + 1, "context_tokens": len(engine.cached_ids()), "rss_mib": process.memory_info().rss / MiB,
                     "cache_mib": cache_bytes(engine) / MiB, "prompt_tokens": final.timings.prompt_tokens,
                     "cached_tokens": final.timings.cached_tokens, "ttft_s": final.timings.ttft_s})
    params_count = sum(p.numel() for p in engine.model.parameters()) if backend == "transformers" else rwkv_params(engine)
    return {"model": name, "parameters": params_count, "turns": rows, "torch": torch.__version__}


def cache_bytes(engine) -> int:
    """Exact bytes held by the KV cache (transformers) or the recurrent state (RWKV)."""
    if hasattr(engine, "state_bytes"):
        return engine.state_bytes()
    cache = engine.save_state().cache
    return sum(t.numel() * t.element_size() for layer in getattr(cache, "layers", []) for t in (layer.keys, layer.values) if t is not None)


def rwkv_params(engine) -> int:
    return sum(t.numel() for t in engine.model.w.values())


def plot(results: list[dict], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rss, cache) = plt.subplots(1, 2, figsize=(11, 4.2))
    for result in results:
        turns = [r["turn"] for r in result["turns"]]
        label = f"{result['model']}, {result['parameters'] / 1e6:.0f}M params"
        rss.plot(turns, [r["rss_mib"] for r in result["turns"]], marker=".", label=label)
        cache.plot(turns, [r["cache_mib"] for r in result["turns"]], marker=".", label=result["model"])
    rss.set(title="Process resident memory (RSS)", xlabel="chat turn", ylabel="MiB")
    cache.set(title="KV cache vs RNN state (exact bytes)", xlabel="chat turn", ylabel="MiB")
    for ax in (rss, cache):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("danlu: 50-turn chat, tiny random models (8 layers × 512, same tokenizer), CPU fp32")
    fig.tight_layout()
    fig.savefig(target, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--embd", type=int, default=512)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp), args.layers, args.embd)
        spawn = multiprocessing.get_context("spawn")
        results = []
        for name, path in models.items():
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                started = time.perf_counter()
                results.append(pool.submit(run_chat, name, str(path), args.turns).result())
                results[-1]["wall_s"] = time.perf_counter() - started
    report = {"machine": platform.platform(), "processor": platform.processor(), "layers": args.layers,
              "embd": args.embd, "results": results}
    (RESULTS / "memory_turns.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    plot(results, RESULTS / "memory_turns.png")
    for result in results:
        first, last = result["turns"][0], result["turns"][-1]
        print(f"{result['model']}: RSS {first['rss_mib']:.0f} → {last['rss_mib']:.0f} MiB, cache/state "
              f"{first['cache_mib']:.2f} → {last['cache_mib']:.2f} MiB over {last['context_tokens']} tokens")
    print(f"wrote {RESULTS / 'memory_turns.json'} and {RESULTS / 'memory_turns.png'}")


if __name__ == "__main__":
    main()
