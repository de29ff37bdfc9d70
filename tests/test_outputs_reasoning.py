"""Thinking splitters: each family's replies split into reasoning and content the same way however the stream is
cut (every two-way cut, single characters, random multi-way and UTF-8 byte cuts), Chinese thinking, Qwen3's
empty think block, R1's missing opening tag, RWKV-7 G1's `<think` prompt, and the thinking budget's closing text."""

from __future__ import annotations

import pytest
from stream_cuts import every_cut

from danlu.errors import DanluError
from danlu.outputs.reasoning import Split, get_reasoning, reasoning_names, strip_reasoning


def run(name: str, pieces: list[str], thinking: bool = True) -> Split:
    splitter = get_reasoning(name)(thinking=thinking)
    total = Split()
    for piece in pieces:
        total += splitter.feed(piece)
    return total + splitter.flush()


CASES = [
    # (family, reply, reasoning, content)
    ("think", "<think>\n用户问天气，我先想想北京的气候。\n</think>\n\n北京今天晴。", "用户问天气，我先想想北京的气候。", "北京今天晴。"),
    ("think", "<think>\n\n</think>\n\n你好！有什么可以帮你？", "", "你好！有什么可以帮你？"),  # Qwen3 thinking off
    ("think", "没有思考的回答，<b>粗体</b> 与 <thought> 标签", "", "没有思考的回答，<b>粗体</b> 与 <thought> 标签"),
    ("think", "好的。<think>想一想</think>答案", "想一想", "好的。答案"),  # text before the tag is content
    ("think", "<think>a</think>b<think>c</think>", "a", "b<think>c</think>"),  # only the first block thinks
    ("think", "<think>\n第一行\n\n第二行\n</think>\n\n```python\nprint(1)\n```\n", "第一行\n\n第二行",
     "```python\nprint(1)\n```\n"),
    ("think", "<think>没有写完的思考", "没有写完的思考", ""),  # an unclosed block stays reasoning
    ("think", "a < b 且 c </thin> d", "", "a < b 且 c </thin> d"),
    ("r1", "嗯，用户想知道 1+1。\n</think>\n\n1+1=2。", "嗯，用户想知道 1+1。", "1+1=2。"),
    ("r1", "<think>\n模型自己又写了开标签\n</think>\n\n答", "模型自己又写了开标签", "答"),
    ("r1", "\n\n<think>\n前面有空行\n</think>答", "前面有空行", "答"),
    ("r1", "一直在想，被 max_tokens 截断", "一直在想，被 max_tokens 截断", ""),
    ("r1", "<thinking> 不是开标签 </think> 答", "<thinking> 不是开标签", "答"),
    ("rwkv-g1", ">\n用户在问 RWKV。\n</think>\nRWKV 是一种 RNN。", "用户在问 RWKV。", "RWKV 是一种 RNN。"),
    ("rwkv-g1", "想到一半", "想到一半", ""),
]


@pytest.mark.parametrize("name,text,reasoning,content", CASES)
def test_split_is_the_same_however_the_reply_is_cut(name, text, reasoning, content):
    whole = run(name, [text])
    assert whole == Split(reasoning, content)
    for pieces in every_cut(text, seed=len(text)):
        assert run(name, pieces) == whole, pieces


@pytest.mark.parametrize("name,text,reasoning,content", CASES)
def test_strip_reasoning_gives_the_same_split_for_whole_texts(name, text, reasoning, content):
    assert strip_reasoning(text, name) == (reasoning, content)


def test_qwen3_empty_think_block_leaves_no_tags_and_no_reasoning():
    for pieces in every_cut("<think>\n\n</think>\n\n"):
        assert run("think", pieces) == Split("", "")


def test_tag_split_inside_itself_is_held_then_released():
    splitter = get_reasoning("think")()
    assert splitter.feed("答案是<thi") == Split("", "答案是")  # "<thi" could still be the tag
    assert splitter.feed("s") == Split("", "<this")  # …and then it cannot
    assert splitter.feed(" 不是标签<") == Split("", " 不是标签")
    assert splitter.flush() == Split("", "<")


def test_reasoning_streams_before_the_block_closes():
    splitter = get_reasoning("think")()
    assert splitter.feed("<think>\n先") == Split("先", "")
    assert splitter.in_reasoning
    assert splitter.feed("想一想\n</th") == Split("想一想", "")  # the newline before a tag waits
    assert splitter.in_reasoning
    assert splitter.feed("ink>\n\n答") == Split("", "答")
    assert not splitter.in_reasoning


def test_chinese_thinking_cut_inside_characters_is_whole():
    text = "<think>\n先分析：北京、上海、广州的气温差异。\n</think>\n\n结论：广州最热。"
    for pieces in every_cut(text, seed=7, rounds=80):
        whole = run("think", pieces)
        assert whole == Split("先分析：北京、上海、广州的气温差异。", "结论：广州最热。")
        assert "\ufffd" not in whole.reasoning + whole.content


def test_r1_starts_in_reasoning_and_think_does_not():
    assert get_reasoning("r1")().in_reasoning
    assert not get_reasoning("think")().in_reasoning
    assert get_reasoning("rwkv-g1")().in_reasoning
    assert not get_reasoning("rwkv-g1")(thinking=False).in_reasoning


def test_r1_with_thinking_off_reads_the_reply_as_think_does():
    assert run("r1", ["直接回答"], thinking=False) == Split("", "直接回答")
    assert run("r1", ["<think>x</think>y"], thinking=False) == Split("x", "y")


def test_rwkv_g1_no_think_prompt_leaves_a_closing_bracket_that_is_dropped():
    for pieces in every_cut("> RWKV 是一种 RNN。"):
        assert run("rwkv-g1", pieces, thinking=False) == Split("", "RWKV 是一种 RNN。")
    assert run("rwkv-g1", [" 你好"], thinking=False) == Split("", "你好")
    assert run("rwkv-g1", ["<think>自己想</think>\n答"], thinking=False) == Split("自己想", "答")


@pytest.mark.parametrize("name,opening", [("think", "<think>\n"), ("r1", ""), ("rwkv-g1", ">\n")])
def test_budget_closing_text_ends_the_thinking_and_the_answer_follows(name, opening):
    splitter = get_reasoning(name)()
    parts = splitter.feed(opening + "第一步，")
    parts += splitter.feed("第二步")
    assert splitter.in_reasoning
    closing = splitter.closing_text
    assert "</think>" in closing
    parts += splitter.feed(closing)  # the service appends it to the generation as if the model wrote it
    assert not splitter.in_reasoning and splitter.closing_text == ""
    parts += splitter.feed("所以答案是 3。") + splitter.flush()
    assert parts == Split("第一步，第二步", "所以答案是 3。")


def test_budget_closing_text_per_family():
    assert get_reasoning("think")().closing == "\n</think>\n\n"
    assert get_reasoning("r1")().closing == "\n</think>\n\n"
    assert "\n\n" not in get_reasoning("rwkv-g1")().closing  # RWKV ends a turn at a blank line


def test_closing_text_does_not_double_a_newline_just_written():
    splitter = get_reasoning("r1")()
    splitter.feed("想完了\n")
    assert splitter.closing_text == "</think>\n\n"


def test_budget_of_zero_writes_qwen3s_empty_block():
    splitter = get_reasoning("think")()
    splitter.feed("<think>\n")
    assert "<think>\n" + splitter.closing_text == "<think>\n\n</think>\n\n"


def test_registry_lists_families_and_refuses_unknown_names_bilingually():
    assert {"think", "r1", "rwkv-g1"} <= set(reasoning_names())
    with pytest.raises(DanluError) as caught:
        get_reasoning("nope")
    assert str(caught.value).startswith("未知的思考解析器 'nope'") and "unknown reasoning parser" in str(caught.value)
