"""Time to first token over a multi-turn chat: danlu (KV cache reused) vs re-reading the whole history.

The naive loop is what a stateless server does each turn (FastChat-style): clear the cache, then
prefill the full conversation. Both loops run side by side in one process on the same model and
the same turns; the reply texts of the danlu loop are fed to both so their prompts are identical.

    python -m bench.chat_turns [MODEL] [--turns 20] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

from danlu.loader import load

QUESTIONS = [
    "请介绍一下长城的历史。", "长城有多长？", "为什么要修建长城？", "明长城和秦长城有什么区别？",
    "游览长城最好的季节是什么时候？", "八达岭长城怎么去？", "长城对中国文化有什么影响？",
    "外国人怎么看长城？", "长城现在保护得怎么样？", "山海关在长城的什么位置？", "嘉峪关为什么叫天下第一雄关？",
    "修长城的砖是怎么烧出来的？", "孟姜女哭长城的故事讲了什么？", "长城上的烽火台怎么传递消息？",
    "慕田峪和八达岭哪个人少一些？", "带老人去爬长城要注意什么？", "长城在哪些朝代修得最多？",
    "有哪些关于长城的诗句？", "用三句话总结我们的对话。",
    "再推荐三个北京的景点。", "故宫有什么特别之处？", "颐和园和圆明园有什么关系？", "北京有哪些有名的小吃？",
    "烤鸭应该怎么吃？", "北京的胡同文化是什么？", "去北京旅游要准备什么？", "北京的地铁方便吗？",
    "北京和上海有什么不同？", "最后，给我一个三天的北京行程。",
]


def run(model: str, turns: int, max_tokens: int, n_ctx: int) -> dict:
    loaded = load(model, n_ctx=n_ctx)
    params = replace(loaded.params, max_tokens=max_tokens, temperature=0.0, top_k=1)
    conv = loaded.conversation(params)
    _warm_up(loaded, params)
    rows = []
    for i, question in enumerate(QUESTIONS[:turns], 1):
        last = None
        for chunk in conv.send(question):
            last = chunk
        reused = last.timings
        naive_ttft = _naive_ttft(loaded, conv, params)
        rows.append({"turn": i, "prompt_tokens": reused.prompt_tokens, "cached_tokens": reused.cached_tokens,
                     "danlu_ttft_s": reused.ttft_s, "naive_ttft_s": naive_ttft})
        print(json.dumps(rows[-1]), flush=True)
    return {"model": model, "machine": _machine(), "max_tokens": max_tokens, "turns": rows,
            "danlu_last_over_first": rows[-1]["danlu_ttft_s"] / rows[0]["danlu_ttft_s"],
            "naive_last_over_first": rows[-1]["naive_ttft_s"] / rows[0]["naive_ttft_s"]}


def _warm_up(loaded, params) -> None:
    """Touch every weight page once (mmap) so turn 1 is not a cold-start measurement."""
    warm = loaded.conversation(params)
    for _ in warm.send("你好"):
        pass
    loaded.engine.llm.reset()


def _naive_ttft(loaded, conv, params) -> float:
    """TTFT for the same last prompt with an empty cache (the history re-read from scratch)."""
    history = conv.history[:-1]  # the prompt of the last turn: everything before the reply
    ids = conv.render(history)
    engine = loaded.engine
    saved = engine.save_state()  # the danlu loop's cache, put back afterwards
    engine.llm.reset()
    start = time.perf_counter()
    for _ in engine.generate(ids, replace(params, max_tokens=1)):
        break
    ttft = time.perf_counter() - start
    engine.restore_state(saved)
    return ttft


def _machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    turns = [r["turn"] for r in result["turns"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(turns, [r["naive_ttft_s"] for r in result["turns"]], "o-", label="re-read history (naive)")
    ax.plot(turns, [r["danlu_ttft_s"] for r in result["turns"]], "o-", label="danlu (KV cache reused)")
    ax.set_xlabel("turn")
    ax.set_ylabel("time to first token (s)")
    ax.set_title(f"{result['model']} · {result['machine']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--ctx", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args.model, args.turns, args.max_tokens, args.ctx)
    (args.out / "chat_turns.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    plot(result, args.out / "chat_turns.png")
    print(f"danlu turn {args.turns}/turn 1: {result['danlu_last_over_first']:.2f}x; naive: {result['naive_last_over_first']:.2f}x")


if __name__ == "__main__":
    main()
