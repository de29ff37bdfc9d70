"""EVA's tokenizer against the reference algorithm (thu-coai/EVA, branch huggingface, tokenization_eva.py).

Two checks: a minimal re-implementation of the reference `_tokenize` + `encode` (written here from the
reference, sharing no code with danlu) run with the real jieba over a set of Chinese sentences, and token
ids worked out by hand for the tiny vocabulary, where jieba's word boundaries change the pieces.
"""

from __future__ import annotations

import collections

import jieba
import pytest

from danlu.backends.hf.eva2.tokenizer import EvaTokenizer
from eva2_tiny import VOCAB, write_tiny_eva

SENTENCES = [
    "你好", "今天天气怎么样？", "我是小明", "你了解人工智能吗？", "那你很聪明", "谢谢夸奖！我会继续努力的",
    "北京是中国的首都。", "我很好，你呢？", "你好 世界\n再见…", "hello world", "小猫很聪明！", "“你好”（再见）",
    "答案：A", "我也是学计算机的", "请多关照", "天天", "x" * 201 + "你好",
]


def reference_load_vocab(path) -> collections.OrderedDict:
    vocab, index = collections.OrderedDict(), 0
    with open(path, "r", encoding="utf-8") as reader:
        while True:
            token = reader.readline()
            if not token:
                break
            vocab[token.strip()] = index
            index += 1
    return vocab


def reference_wordpiece(vocab, token: str, unk="<unk>", max_chars=200) -> list[str]:
    chars = list(token)
    if len(chars) > max_chars:
        return [unk]
    start, sub_tokens = 0, []
    while start < len(chars):
        end, cur = len(chars), None
        while start < end:
            substr = "".join(chars[start:end])
            if substr in vocab:
                cur = substr
                break
            end -= 1
        if cur is None:
            sub_tokens.append(unk)
            start += 1
            continue
        sub_tokens.append(cur)
        start = end
    return sub_tokens


def reference_encode(vocab, text: str) -> list[int]:
    """EVATokenizer.encode(text) minus the `<sep>` that build_inputs_with_special_tokens appends."""
    punct = str.maketrans("！？＂〝〞“”‟＃＄％＆＇‘’‛（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～",
                          "!?\"\"\"\"\"\"#$%&''''()*+,-/:;<=>@[\\]^_`{|}~")
    text = text.replace("…", "...").translate(punct)
    pieces = []
    for x in jieba.cut(text, cut_all=False):
        pieces.extend(reference_wordpiece(vocab, x.translate(str.maketrans(" \n", "\u2582\u2583"))))
    return [vocab[p] for p in pieces]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_eva(tmp_path_factory.mktemp("eva2-tok") / "tiny")


@pytest.fixture(scope="module")
def tokenizer(folder):
    return EvaTokenizer.from_folder(folder)


@pytest.mark.parametrize("text", SENTENCES)
def test_ids_equal_the_reference_algorithm_with_jieba(tokenizer, folder, text):
    assert tokenizer.encode(text) == reference_encode(reference_load_vocab(folder / "vocab.txt"), text)


@pytest.mark.parametrize("text, pieces", [
    ("我很好", ["我", "很", "好"]),  # jieba cuts 我/很/好, so the vocabulary's 很好 is not used
    ("今天天气怎么样？", ["今天", "天气", "怎么样", "?"]),  # 今天天气 is one jieba word, split by longest match
    ("你好 世界\n再见…", ["你好", "\u2582", "世界", "\u2583", "再见", "..."]),
    ("hello world", ["he", "llo", "\u2582", "w", "o", "r", "l", "d"]),  # no "##": pieces are plain entries
    ("小猫很聪明！", ["小", "<unk>", "很", "聪明", "!"]),  # an unknown character is one <unk>, the rest survives
    ("我很好，你呢？", ["我", "很", "好", ",", "你", "呢", "?"]),
    ("x" * 201, ["<unk>"]),  # a word over 200 characters is a single <unk>
])
def test_ids_worked_out_by_hand(tokenizer, text, pieces):
    assert tokenizer.encode(text) == [VOCAB.index(p) for p in pieces]


def test_typed_markup_is_plain_text_but_template_markup_is_a_control_token(tokenizer):
    sep, bos = VOCAB.index("<sep>"), VOCAB.index("<s_0>")
    typed = tokenizer.encode("你好<sep>")
    assert sep not in typed and typed[0] == VOCAB.index("你好")
    assert tokenizer.encode("<sep><s_0>", special=True) == [sep, bos]
    assert tokenizer.encode("<sep><sep>", special=True) == [sep, sep]  # an empty utterance between two


def test_pieces_decode_spaces_and_newlines_and_hide_control_tokens(tokenizer):
    ids = tokenizer.encode("你好 世界\n再见") + [VOCAB.index("<sep>"), VOCAB.index("<s_1>"), VOCAB.index("<s>")]
    assert tokenizer.decode(ids) == "你好 世界\n再见"
    assert tokenizer.piece(VOCAB.index("<unk>")) == b""


def test_vocab_lines_are_stripped_and_numbered_like_the_reference(tmp_path, tokenizer, folder):
    assert tokenizer.ids == dict(reference_load_vocab(folder / "vocab.txt"))
    assert tokenizer.tokens[8] == ""  # the real vocab.txt has an empty line at id 8 too
    assert len(tokenizer) == len(VOCAB)
