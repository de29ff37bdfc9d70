"""EVA2.0 end to end on the tiny checkpoint: the reference encoder input, `danlu run` / `danlu chat`, the
server with the official `openai` client, and evaluation (ao, ppl) through the decoder.

The reference chat loop is thu-coai/EVA (branch huggingface) src/eva_interactive.py: every utterance
encoded with its `<sep>`, the last 8 taken newest first while they fit in 128 tokens with the `<s_0>`.
It is re-implemented in `reference_encoder_input` below over the conversation's texts (danlu keeps the
replies as text, so the reply utterances are their text encoded again).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import openai
import pytest

from danlu import catalog
from danlu.backends.base import GenerationParams
from danlu.backends.hf.eva2.layout import encoder_input, reference_window
from danlu.config import get_settings
from danlu.evaluate import engine_only, make_protocol
from danlu.evaluate.datasets import CEVAL, Question
from danlu.loader import load
from danlu.server import ServerSettings
from danlu.server.app import background_server
from danlu.store import FileRecord, Store, sha256_file
from eva2_tiny import VOCAB, write_tiny_eva
from test_eva2_tokenizer import reference_encode, reference_load_vocab

SEP, BOS = VOCAB.index("<sep>"), VOCAB.index("<s_0>")
GREEDY = GenerationParams(max_tokens=4, temperature=0.0, repetition_penalty=1.6)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_eva(tmp_path_factory.mktemp("eva2-chat") / "tiny")


@pytest.fixture(scope="module")
def loaded(folder):
    return load(str(folder))


def install_as_eva2_base(folder) -> None:
    """The tiny checkpoint in the store under eva2-base, as a finished pull would leave it."""
    spec = catalog.get("eva2-base")
    store = Store(get_settings())
    target = store.variant_dir(spec, spec.variant())
    target.mkdir(parents=True)
    for name in ("config.json", "pytorch_model.bin", "vocab.txt"):
        (target / name).write_bytes((folder / name).read_bytes())
    records = [FileRecord(p.name, p.stat().st_size, sha256_file(p)) for p in sorted(target.iterdir())]
    store.record(spec, None, "test", records, None, verified=False)


def danlu(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    return subprocess.run([sys.executable, "-m", "danlu.cli", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=600)


def contains(seq: list[int], part: list[int]) -> bool:
    return any(seq[i:i + len(part)] == part for i in range(len(seq) - len(part) + 1))


def reference_encoder_input(vocab, texts: list[str]) -> list[int]:
    full_context_list = [reference_encode(vocab, text) + [SEP] for text in texts]
    trunc_context = []
    for utt in full_context_list[:-9:-1]:
        if len(trunc_context) + len(utt) + 1 <= 128:
            trunc_context = utt + trunc_context
    return trunc_context + [BOS]


# ---------------------------------------------------------------- the reference input layout

def test_a_three_turn_dialogue_builds_exactly_the_reference_encoder_input(loaded, folder):
    conv = loaded.conversation(GREEDY)
    turns = ["你好", "今天天气怎么样？我很好，你呢？" * 10, "谢谢夸奖！我会继续努力的。北京是中国的首都。" * 2]
    for text in turns:
        "".join(chunk.text for chunk in conv.send(text))
        if text is not turns[-1]:
            assert conv.history[-1].role == "assistant"
    texts = [m.content for m in conv.history[:-1]]  # the third reply is not part of its own prompt
    expected = reference_encoder_input(reference_load_vocab(folder / "vocab.txt"), texts)
    got = loaded.engine.encoder_input(conv.last_prompt.ids)
    assert got == expected
    # the long second question does not fit beside the third: the reference skips it, and keeps the older turn
    vocab = reference_load_vocab(folder / "vocab.txt")
    assert not contains(got, reference_encode(vocab, turns[1]) + [SEP])
    assert contains(got, reference_encode(vocab, turns[2]) + [SEP, BOS]) and got[:2] == reference_encode(vocab, "你好") + [SEP]


def test_the_window_keeps_at_most_eight_utterances_and_skips_what_does_not_fit():
    assert reference_window([[7, SEP]] * 10) == [7, SEP] * 8
    long, recent = [1] * 100 + [SEP], [6] * 30 + [SEP]
    assert encoder_input([5, SEP, *long, BOS], SEP, BOS) == [5, SEP, *long, BOS]  # 104 tokens fit
    assert encoder_input([5, SEP, *long, *recent, BOS], SEP, BOS) == [5, SEP, *recent, BOS]  # the long one is skipped
    assert encoder_input([5, 6], SEP, BOS) == [5, 6, SEP, BOS]  # a raw prompt is one utterance, kept whole
    assert encoder_input([1] * 300, SEP, BOS) == [1] * 300 + [SEP, BOS]


def test_typed_control_tokens_stay_text_in_the_chat_prompt(loaded):
    conv = loaded.conversation(GREEDY)
    list(conv.send("你好<sep><s_0>"))
    assert conv.last_prompt.ids.count(SEP) == 1 and conv.last_prompt.ids.count(BOS) == 1


# ---------------------------------------------------------------- decoding

def test_sampling_streams_and_a_seed_repeats_the_reply(loaded):
    params = GenerationParams(max_tokens=8, temperature=0.9, top_p=0.9, top_k=0, repetition_penalty=1.6, seed=3)
    ids = loaded.engine.tokenize("你好") + [SEP, BOS]
    first = list(loaded.engine.generate(ids, params))
    again = list(loaded.engine.generate(ids, params))
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert len(first) >= 3 and first[-1].timings.completion_tokens == sum(len(c.token_ids) for c in first)


def test_beams_give_the_reply_whole_at_the_end(loaded):
    params = GenerationParams(max_tokens=6, temperature=0.0, num_beams=4, length_penalty=1.6, repetition_penalty=1.6)
    chunks = list(loaded.conversation(params).send("你好"))
    assert len(chunks) <= 2 and chunks[-1].finish_reason in ("stop", "length")
    assert chunks[-1].timings.completion_tokens == sum(len(c.token_ids) for c in chunks) <= 6


def test_no_reply_starts_with_sep_or_repeats_a_trigram_of_the_context(loaded):
    engine = loaded.engine
    params = GenerationParams(max_tokens=16, temperature=1.5, top_p=1.0, top_k=0)
    prompt = engine.tokenize("你好今天天气很好，今天天气很好") + [SEP, BOS]
    context = {tuple(prompt[i:i + 3]) for i in range(len(prompt) - 2)}
    for seed in range(4):
        reply = [t for c in engine.generate(prompt, replace(params, seed=seed)) for t in c.token_ids]
        trigrams = [tuple([BOS, *reply][i:i + 3]) for i in range(len(reply) - 1)]
        assert reply and reply[0] != SEP
        assert not context & set(trigrams) and len(set(trigrams)) == len(trigrams)


# ---------------------------------------------------------------- the commands and the server

def test_danlu_run_and_chat_on_a_pulled_eva2_base(folder):
    install_as_eva2_base(folder)
    out = danlu("run", "eva2-base", "你好", "--json", "--max-tokens", "5")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["completion_tokens"] >= 1 and reply["prompt_tokens"] == 3  # 你好 <sep> <s_0>
    chat = danlu("chat", "eva2-base", stdin="/set max_tokens 4\n你好\n今天天气怎么样？\n/bye\n")
    assert chat.returncode == 0, chat.stderr
    assert "Traceback" not in chat.stderr


def test_danlu_run_on_a_bare_folder_uses_the_eva2_format(folder):
    out = danlu("run", str(folder), "我是小明", "--json", "--max-tokens", "3", "--temperature", "0")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["prompt_tokens"] == 5  # 我 是 小明 <sep> <s_0>


def test_the_server_answers_the_openai_client(folder):
    install_as_eva2_base(folder)
    settings = ServerSettings(host="127.0.0.1", port=0, base=get_settings(), keep_alive_s=-1)
    with background_server(settings) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        reply = client.chat.completions.create(model="eva2-base", max_tokens=5, messages=[
            {"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好"},
            {"role": "user", "content": "今天天气怎么样？"}])
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert 1 <= reply.usage.completion_tokens <= 5
        streamed = list(client.chat.completions.create(model="eva2-base", max_tokens=5, stream=True, temperature=0,
                                                       messages=[{"role": "user", "content": "你好"}]))
        assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] in ("stop", "length")


# ---------------------------------------------------------------- evaluation

def test_ao_and_ppl_score_through_the_decoder(loaded):
    question = Question(subject="x", id="1", question="北京是中国的首都吗？", choices=("是", "不是", "很好", "再见"), answer="A")
    for protocol in ("ao", "ppl"):
        answer = make_protocol(protocol, engine_only(loaded.engine), CEVAL).answer("", "北京是中国的首都吗？\n答案：", question)
        assert answer.pred in "ABCD" and len(answer.scores) == 4
        assert all(s == s and s != float("inf") for s in answer.scores)  # finite numbers, not NaN
