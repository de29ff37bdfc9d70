"""EVA's tokenizer: jieba words, then greedy longest-match pieces over the repo's `vocab.txt`.

The reference (thu-coai/EVA, branch huggingface, src/model/tokenization_eva.py) does, per text:
"…" → "...", full-width punctuation → ASCII (the table below; "。" stays), `jieba.cut(text, cut_all=False)`,
then in each word " " → "▂" and "\\n" → "▃", and a WordPiece *without* "##" continuation pieces: the
longest vocabulary entry starting at each position, `<unk>` for one character that starts none, and a
single `<unk>` for a word over 200 characters. The vocabulary is `vocab.txt`, one entry a line, each
stripped, the line number its id. Special tokens: `<sep>` (eos and sep), `<s_0>` (bos: the sentinel the
decoder starts from), `<pad>`, `<unk>`; `<s_1>`…`<s_189>` are further sentinels. Decoding joins the
pieces and turns ▂/▃ back into a space and a newline, special tokens left out.

Two differences from the reference, both about control entries (the special tokens, `<s>`, `</s>`,
`<mask>`, `<eod>` and the sentinels): plain text (`special=False`) never yields one, so a user who types
`<sep>` cannot end a turn (the reference finds special tokens anywhere in its input), and one the model
generates renders as nothing (the reference prints `<s>` or `<s_3>` as text, which the next turn would
read back as plain characters). Markup (`special=True`) recognises all of them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable, Sequence

from danlu.errors import DanluError

SEP, BOS, PAD, UNK = "<sep>", "<s_0>", "<pad>", "<unk>"
SPECIAL = (SEP, BOS, PAD, UNK)  # the reference's special tokens: eos/sep, bos, pad, unk
MAX_WORD_CHARS = 200
FULL_WIDTH = "！？＂〝〞“”‟＃＄％＆＇‘’‛（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～"
ASCII = "!?\"\"\"\"\"\"#$%&''''()*+,-/:;<=>@[\\]^_`{|}~"
PUNCT = str.maketrans(FULL_WIDTH, ASCII)
SPACES = str.maketrans(" \n", "\u2582\u2583")
CONTROL = re.compile(r"^<(sep|pad|unk|s|/s|mask|eod|s_\d+)>$")  # entries no plain text may produce


def read_vocab(path: Path) -> list[str]:
    """vocab.txt as the reference reads it: every line stripped, the line number is the id."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the file starts no entry
    return [line.strip() for line in lines]


def jieba_words(text: str) -> Iterable[str]:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict…" lines on the user's screen
    return jieba.cut(text, cut_all=False)


class EvaTokenizer:
    """Token ids for text and markup, each id's bytes for streaming, and the special ids."""

    def __init__(self, vocab: Sequence[str]):
        self.tokens = list(vocab)
        self.ids = {token: i for i, token in enumerate(self.tokens)}  # a repeated entry keeps its last id
        missing = [t for t in SPECIAL if t not in self.ids]
        if missing:
            raise DanluError(f"vocab.txt 缺少特殊 token {missing} / vocab.txt lacks the special tokens {missing}: "
                             f"is this EVA's vocabulary?")
        self.sep_id, self.bos_id, self.pad_id, self.unk_id = (self.ids[t] for t in SPECIAL)
        self.special_ids = {self.sep_id, self.bos_id, self.pad_id, self.unk_id}
        self.control_ids = {i for i, t in enumerate(self.tokens) if CONTROL.match(t)}
        self.text_ids = {t: i for t, i in self.ids.items() if not CONTROL.match(t)}
        markup = sorted((t for t in self.ids if CONTROL.match(t)), key=len, reverse=True)
        self._markup = re.compile("(" + "|".join(re.escape(t) for t in markup) + ")")

    @classmethod
    def from_folder(cls, folder: Path) -> "EvaTokenizer":
        path = Path(folder) / "vocab.txt"
        if not path.exists():
            raise DanluError(f"{folder} 里没有 vocab.txt / no vocab.txt in {folder}: EVA ships its vocabulary there")
        return cls(read_vocab(path))

    def __len__(self) -> int:
        return len(self.tokens)

    # --- text → ids ---------------------------------------------------------------------------
    def encode(self, text: str, special: bool = False) -> list[int]:
        """Plain text never gives a control token; markup gives one for each `<sep>`, `<s_0>`… it names."""
        if not special:
            return [self.ids[piece] for piece in self.pieces(text)]
        ids: list[int] = []
        for part in self._markup.split(text):
            ids.extend([self.ids[part]] if part in self.ids and CONTROL.match(part) else self.encode(part))
        return ids

    def pieces(self, text: str) -> list[str]:
        """The reference's `_tokenize`: punctuation folded, jieba words, longest-match pieces."""
        if not text:
            return []
        text = text.replace("…", "...").translate(PUNCT)
        return [piece for word in jieba_words(text) for piece in self.word_pieces(word.translate(SPACES))]

    def word_pieces(self, word: str) -> list[str]:
        if len(word) > MAX_WORD_CHARS:
            return [UNK]
        pieces, start = [], 0
        while start < len(word):
            end = next((e for e in range(len(word), start, -1) if word[start:e] in self.text_ids), None)
            if end is None:
                pieces.append(UNK)
                start += 1
            else:
                pieces.append(word[start:end])
                start = end
        return pieces

    # --- ids → text ---------------------------------------------------------------------------
    def piece(self, token_id: int) -> bytes:
        """The token's text, ▂/▃ as a space/newline; control tokens (and unknown ids) as nothing."""
        if token_id in self.control_ids or not 0 <= token_id < len(self.tokens):
            return b""
        return self.tokens[token_id].replace("\u2582", " ").replace("\u2583", "\n").encode("utf-8")

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.piece(i) for i in ids).decode("utf-8", errors="replace")
