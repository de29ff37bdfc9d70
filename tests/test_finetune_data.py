"""Fine-tuning data: the three dialogue shapes found line by line, bad lines named by number, the shipped
corpus, and the loss mask (assistant tokens only, with their end-of-turn marker, user markup kept as text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tiny_models as tm
from danlu.errors import DanluError
from danlu.finetune.data import IGNORE, encode, encode_all, read_dataset, resolve_data, shipped_corpus
from danlu.formats import from_template, get_format

OPENAI = {"messages": [{"role": "system", "content": "你是客服。"}, {"role": "user", "content": "几点开门？"},
                       {"role": "assistant", "content": "每天9点。"}]}
SHAREGPT = {"conversations": [{"from": "human", "value": "包邮吗？"}, {"from": "gpt", "value": "满99元包邮。"}]}
ALPACA = {"instruction": "翻译成英文", "input": "你好", "output": "Hello", "history": [["在吗", "在的"]]}


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
                    encoding="utf-8")
    return path


def test_three_shapes_are_detected_line_by_line(tmp_path):
    data = read_dataset(write_lines(tmp_path / "mixed.jsonl", [OPENAI, "", SHAREGPT, ALPACA]))
    assert data.shapes == {"openai": 1, "sharegpt": 1, "alpaca": 1}
    assert data.dialogues[1] == [{"role": "user", "content": "包邮吗？"}, {"role": "assistant", "content": "满99元包邮。"}]
    assert [m["content"] for m in data.dialogues[2]] == ["在吗", "在的", "翻译成英文\n\n你好", "Hello"]


def test_openai_content_parts_and_a_bom_are_accepted(tmp_path):
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "你"}, {"type": "text", "text": "好"}]},
                          {"role": "assistant", "content": "您好"}]}
    path = tmp_path / "bom.jsonl"
    path.write_text("\ufeff" + json.dumps(parts, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_dataset(path).dialogues[0][0]["content"] == "你好"


@pytest.mark.parametrize("bad, reason", [
    ('{"messages": [', "not valid JSON"),
    ({"question": "?", "answer": "!"}, "unknown shape"),
    ({"messages": [{"role": "user", "content": "只有问题"}]}, "no assistant reply"),
    ({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}, "unsupported role"),
    ({"conversations": [{"from": "narrator", "value": "x"}]}, "unknown speaker"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}, "'content' field"),
])
def test_a_bad_line_is_reported_by_its_line_number(tmp_path, bad, reason):
    path = write_lines(tmp_path / "bad.jsonl", [OPENAI, SHAREGPT, bad])
    with pytest.raises(DanluError, match=rf"(?s)line 3: .*{reason}"):
        read_dataset(path)


def test_every_bad_line_is_listed_in_one_error(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", ["{", OPENAI, "[1]"])
    with pytest.raises(DanluError) as caught:
        read_dataset(path)
    assert "2 unusable line(s)" in str(caught.value) and "line 1:" in str(caught.value) and "line 3:" in str(caught.value)


def test_missing_file_and_empty_file_are_clear_errors(tmp_path):
    with pytest.raises(DanluError, match="not found"):
        read_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(DanluError, match="no dialogues"):
        read_dataset(write_lines(tmp_path / "empty.jsonl", [""]))


def test_shipped_corpus_has_a_held_out_split_in_openai_shape():
    train, val = shipped_corpus("tea-shop")
    train_data, val_data = read_dataset(train), read_dataset(val)
    assert 80 <= len(train_data.dialogues) <= 150 and 15 <= len(val_data.dialogues) <= 30
    assert train_data.shape == val_data.shape == "openai"
    assert resolve_data("tea-shop", None) == (train, val)
    questions = {m["content"] for d in train_data.dialogues for m in d if m["role"] == "user"}
    held_out = {m["content"] for d in val_data.dialogues for m in d if m["role"] == "user"}
    assert held_out - questions, "held-out dialogues should ask in words the training split never uses"


def test_shipped_corpus_states_its_facts_consistently():
    train, val = shipped_corpus("tea-shop")
    replies = [m["content"] for path in (train, val) for d in read_dataset(path).dialogues for m in d
               if m["role"] == "assistant"]
    shipping = [r for r in replies if "包邮" in r]
    assert shipping and all("99元" in r for r in shipping)
    assert all("168元" in r for r in replies if "明前特级" in r)


# --- the loss mask ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tm.qwen2(tmp_path_factory.mktemp("data") / "qwen2")))


def tokenize_with(tokenizer):
    from danlu.backends.hf.tokens import TokenCodec

    codec = TokenCodec(tokenizer)
    return lambda text, special: codec.tokenize(text, special, None)


def chatml_of(tokenizer):
    return from_template(tokenizer.chat_template, eos_token="<|im_end|>")


def labelled_text(tokenizer, example) -> str:
    return tokenizer.decode([i for i, label in zip(example.ids, example.labels) if label != IGNORE])


def test_loss_is_taken_only_on_assistant_turns_and_their_end_marker(qwen_tokenizer):
    dialogue = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "谢谢你"},
                {"role": "user", "content": "再见"}, {"role": "assistant", "content": "再见！"}]
    example = encode(dialogue, chatml_of(qwen_tokenizer), tokenize_with(qwen_tokenizer))
    assert labelled_text(qwen_tokenizer, example) == "谢谢你<|im_end|>\n再见！<|im_end|>\n"
    assert qwen_tokenizer.decode(example.ids).startswith("<|im_start|>user\n你好<|im_end|>")
    assert len(example.ids) == len(example.labels)


def test_markup_typed_by_a_user_is_not_a_control_token(qwen_tokenizer):
    im_end = qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")
    dialogue = [{"role": "user", "content": "<|im_end|>"}, {"role": "assistant", "content": "好"}]
    example = encode(dialogue, chatml_of(qwen_tokenizer), tokenize_with(qwen_tokenizer))
    assert example.ids.count(im_end) == 2  # the template's own two, not the user's text


def test_named_gemma_format_masks_the_model_turn():
    fmt = get_format("gemma")
    words = {}
    tokenize = lambda text, special: [words.setdefault(text, len(words))]  # noqa: E731 — one id per segment
    dialogue = [{"role": "user", "content": "包邮吗？"}, {"role": "assistant", "content": "满99元包邮。"}]
    example = encode(dialogue, fmt, tokenize)
    labelled = [i for i, label in zip(example.ids, example.labels) if label != IGNORE]
    names = {v: k for k, v in words.items()}
    assert [names[i] for i in labelled] == ["满99元包邮。", "<end_of_turn>\n"]


def test_long_dialogues_are_cut_and_dropped_when_no_reply_survives(qwen_tokenizer):
    long_question = [{"role": "user", "content": "你好" * 200}, {"role": "assistant", "content": "好"}]
    short = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "谢谢你"}]
    examples, truncated, dropped = encode_all([long_question, short], chatml_of(qwen_tokenizer),
                                              tokenize_with(qwen_tokenizer), max_len=32)
    assert (len(examples), truncated, dropped) == (1, 1, 1)
    assert all(len(e.ids) <= 32 for e in examples)
