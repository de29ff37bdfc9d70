"""Speculative decoding on real weights: qwen2.5-coder-1.5b-instruct drafted by qwen2.5-coder-0.5b-instruct
(same vocabulary) and by prompt lookup. Greedy output must be plain greedy output, token for token.
Replies are kept short (a few dozen tokens) so the tier stays fast; the models load once per session."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from danlu.backends.base import GenerationParams
from danlu.backends.drafters import ModelDrafter, NgramDrafter
from danlu.backends.draft_length import DraftLength
from danlu.backends.speculative import Speculator
from danlu.chat import Message

from plain_reference import plain_tokens
from test_cli import danlu

pytestmark = pytest.mark.weights

PROMPTS = {
    "chinese": "用两句话介绍一下长城。",
    "code": "用 Python 写一个函数，判断一个整数是不是质数。",
    "chinese-explain": "解释一下什么是递归，并举一个简单的例子。",
}
EDIT = """把下面函数里的变量名 `lst` 改成 `numbers`，其余不变，只输出代码：

```python
def average(lst):
    if not lst:
        return 0.0
    total = 0
    for x in lst:
        total += x
    return total / len(lst)
```"""
GREEDY = GenerationParams(max_tokens=32, temperature=0.0, repetition_penalty=1.05, stop_token_ids=[151645, 151643])


@pytest.fixture(scope="session")
def qwen(qwen_path):
    from danlu.loader import load

    loaded = load(str(qwen_path), n_ctx=2048)
    yield loaded
    loaded.engine.close()


@pytest.fixture(scope="session")
def qwen05_engine(qwen05_path):
    from danlu.backends.base import LoadPlan
    from danlu.backends.llamacpp import load

    engine = load(None, None, LoadPlan(qwen05_path, n_ctx=2048, n_threads=2))
    yield engine
    engine.close()


@pytest.fixture
def with_drafter(qwen, qwen05_engine):
    """Attach a drafter to the shared 1.5B for one test; plain decoding again afterwards."""
    engine = qwen.engine

    def attach(kind: str) -> Speculator:
        drafter = NgramDrafter() if kind == "ngram" else ModelDrafter.for_target(engine, qwen05_engine, "qwen05")
        # measured as paying, so every round drafts: the test is about output, not about the pay-off rule
        engine.speculator = Speculator(engine, drafter, DraftLength(k_max=8, plain_s=1e9))
        return engine.speculator

    yield attach
    engine.speculator = None


def _prompt(loaded, text: str) -> list[int]:
    """The chat prompt for one user message, as a conversation renders it (template, default system prompt)."""
    conv = loaded.conversation()
    conv.history.append(Message("user", text))
    return conv.render()


def _speculative(engine, ids, params) -> tuple[list[int], object]:
    engine.llm.reset()
    chunks = list(engine.generate(ids, params))
    return [t for c in chunks for t in c.token_ids], chunks[-1]


@pytest.mark.parametrize("kind", list(PROMPTS))
def test_greedy_with_the_draft_model_is_plain_greedy(qwen, with_drafter, kind):
    ids = _prompt(qwen, PROMPTS[kind])
    expected = plain_tokens(qwen.engine, ids, GREEDY)
    speculator = with_drafter("model")
    got, final = _speculative(qwen.engine, ids, GREEDY)
    assert got == expected
    assert final.timings.accepted_tokens > 0 and speculator.stats.drafted > 0


def test_greedy_with_prompt_lookup_is_plain_greedy_and_drafts_the_repeated_code(qwen, with_drafter):
    ids = _prompt(qwen, EDIT)
    params = replace(GREEDY, max_tokens=48)
    expected = plain_tokens(qwen.engine, ids, params)
    with_drafter("ngram")
    got, final = _speculative(qwen.engine, ids, params)
    assert got == expected
    assert final.timings.acceptance_rate > 0.5  # the answer repeats the function


def test_a_chat_reuses_the_kv_prefix_and_replies_as_plain_decoding(qwen, with_drafter):
    params = replace(GREEDY, max_tokens=16)
    plain = qwen.conversation(replace(params))
    plain_replies = ["".join(c.text for c in plain.send(text)) for text in ("你好", "1+1等于几？")]
    with_drafter("model")
    conv = qwen.conversation(replace(params))
    first = "".join(c.text for c in conv.send("你好"))
    chunks = list(conv.send("1+1等于几？"))
    assert [first, "".join(c.text for c in chunks)] == plain_replies
    assert chunks[-1].timings.cached_tokens > 0  # the second turn only decoded its new tokens


def test_cli_run_json_reports_the_draft_and_its_acceptance(home_with_models, qwen_path, qwen05_path):
    out = danlu("run", "qwen2.5-coder-1.5b-instruct", "写一个 Python 函数，返回列表里最大的数", "--json",
                "--temperature", "0", "--max-tokens", "24", "--draft", "qwen2.5-coder-0.5b-instruct")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["draft"] == "qwen2.5-coder-0.5b-instruct:q4_k_m"
    assert result["drafted_tokens"] >= result["accepted_tokens"] > 0 and 0 < result["acceptance_rate"] <= 1
    plain = json.loads(danlu("run", "qwen2.5-coder-1.5b-instruct", "写一个 Python 函数，返回列表里最大的数", "--json",
                             "--temperature", "0", "--max-tokens", "24", "--draft", "none").stdout)
    assert "draft" not in plain and plain["text"] == result["text"]


def test_on_a_cpu_auto_drafts_by_prompt_lookup_not_with_the_catalog_draft(home_with_models, qwen_path, qwen05_path):
    """The catalog's draft model does not pay on a CPU (README, speculative decoding): `auto` takes prompt lookup."""
    from danlu.hardware import detect

    if detect().gpu is not None:
        pytest.skip("a GPU is present: there `auto` takes the catalog's draft model")
    out = danlu("run", "qwen2.5-coder-1.5b-instruct", "把 `def calc(x): return x + 1` 里的 calc 改名为 add_one，输出代码",
                "--json", "--temperature", "0", "--max-tokens", "24")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["draft"] == "ngram"


def test_cli_refuses_a_draft_with_another_vocabulary(home_with_models, qwen_path, gemma_path):
    out = danlu("run", "qwen2.5-coder-1.5b-instruct", "你好", "--draft", "gemma-3-270m", "--max-tokens", "2")
    assert out.returncode == 1 and "vocabulary" in out.stderr and "Traceback" not in out.stderr
