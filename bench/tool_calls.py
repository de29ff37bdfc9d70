"""How often a local model calls the right tool with arguments that parse and match: the fixed Chinese tool-use
set in bench/data/tool_calls_zh.jsonl (24 prompts over 7 tools), through `danlu serve` and the official openai
client, as an agent framework would send it.

A case succeeds when the reply's first tool call names the expected function, its arguments are a JSON object
valid for that function's schema (jsonschema), and each expected argument is there (strings: the expected text
inside the given one, so 「去开会」 counts for 「开会」; numbers: equal). `tool_choice` "auto" lets the model answer
in words instead; "required" forces a call through the JSON grammar.

    python -m bench.tool_calls [--model qwen2.5-coder-1.5b-instruct] [--choices auto,required] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jsonschema
from openai import OpenAI

from bench import _machine
from danlu.config import get_settings
from danlu.server import ServerSettings
from danlu.server.app import background_server

DATA = Path(__file__).parent / "data" / "tool_calls_zh.jsonl"
RESULTS = Path(__file__).parent / "results"


def load_cases() -> tuple[list[dict], list[dict]]:
    lines = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[0]["tools"], lines[1:]


def matches(expected: dict, given: dict) -> bool:
    for key, want in expected.items():
        got = given.get(key)
        if isinstance(want, str) and not (isinstance(got, str) and want in got):
            return False
        if not isinstance(want, str) and got != want:
            return False
    return True


def judge(case: dict, tools: list[dict], message) -> str:
    """'ok', or why the case failed."""
    if not message.tool_calls:
        return "no call"
    call = message.tool_calls[0]
    if call.function.name != case["function"]:
        return f"wrong function {call.function.name}"
    try:
        arguments = json.loads(call.function.arguments)
    except ValueError:
        return "arguments do not parse"
    schema = next(t["function"]["parameters"] for t in tools if t["function"]["name"] == case["function"])
    try:
        jsonschema.validate(arguments, schema)
    except jsonschema.ValidationError as exc:
        return f"schema: {exc.message}"
    return "ok" if matches(case["arguments"], arguments) else f"arguments {arguments}"


def run_cases(client: OpenAI, model: str, choice: str, tools: list[dict], cases: list[dict]) -> list[dict]:
    rows = []
    for case in cases:
        began = time.perf_counter()
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": case["prompt"]}],
                                               tools=tools, tool_choice=choice, temperature=0, max_tokens=160)
        verdict = judge(case, tools, reply.choices[0].message)
        rows.append({"prompt": case["prompt"], "verdict": verdict, "seconds": round(time.perf_counter() - began, 2),
                     "content": reply.choices[0].message.content})
        print(f"  [{choice}] {verdict:>28}  {case['prompt']}", file=sys.stderr)
    return rows


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    choices = list(result["runs"])
    rates = [result["runs"][c]["success_rate"] * 100 for c in choices]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(choices, rates, color=["#4c72b0", "#55a868"][: len(choices)])
    for i, rate in enumerate(rates):
        ax.text(i, rate + 1, f"{rate:.0f}%", ha="center")
    ax.set_ylim(0, 110)
    ax.set_ylabel("success (%)")
    ax.set_title(f"{result['model']}: {result['n_cases']} Chinese tool-use prompts\n{_machine.label(result['machine'])}",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--choices", default="auto,required")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    tools, cases = load_cases()
    base = get_settings().model_copy(update={"threads": args.threads})
    result = {"model": args.model, "n_cases": len(cases), "machine": _machine.info(), "runs": {}}
    with background_server(ServerSettings(base=base, port=0, n_ctx=4096, keep_alive_s=-1)) as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
        for choice in args.choices.split(","):
            rows = run_cases(client, args.model, choice, tools, cases)
            ok = sum(r["verdict"] == "ok" for r in rows)
            result["runs"][choice] = {"success_rate": ok / len(rows), "succeeded": ok, "cases": rows}
    result["machine"]["load_avg_at_end"] = _machine.load_now()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tool_calls.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    plot(result, RESULTS / "tool_calls.png")
    for choice, run in result["runs"].items():
        print(f"{args.model} tool_choice={choice}: {run['succeeded']}/{len(cases)} ({run['success_rate']:.0%})")


if __name__ == "__main__":
    main()
