"""Training data: dialogue files in three common shapes, and their encoding into token ids with a loss mask.

Each JSONL line is one dialogue, in whichever shape it comes (detected line by line, so files that
mix them still load):

- OpenAI messages: `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`
- ShareGPT:        `{"conversations": [{"from": "human"|"gpt"|"system", "value": "..."}, ...]}`
- Alpaca:          `{"instruction": "...", "input": "...", "output": "...", "system"?: "...", "history"?: [[q, a], ...]}`

A bad line is reported by its line number (all bad lines, up to a handful, in one error).

Encoding renders each dialogue with the model's own prompt format (danlu.formats) and tokenizes it
segment by segment, markup with special tokens and content as plain text, exactly as a chat does
(danlu.chat.tokenize_segments), so training sees the same ids as inference. The tokens of each
assistant turn are found as the difference between the prompt that asks for that turn
(`add_generation_prompt=True`) and the rendering that includes it; only those carry a label, so the
loss is taken on assistant tokens (their end-of-turn marker included, so the model learns to stop).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from danlu.errors import DanluError
from danlu.formats import ChatFormat

#: Corpora shipped in danlu/data/corpus, usable as `--data NAME`: name -> (train file, held-out file).
SHIPPED = {"tea-shop": ("tea-shop.train.jsonl", "tea-shop.val.jsonl")}

IGNORE = -100  # the label torch's cross_entropy skips
MAX_REPORTED = 5  # bad lines named in one error; more only make the message unreadable

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}

#: tokenize(text, special) -> ids, with the chat's injection guard (special=False keeps markup as text).
Tokenize = Callable[[str, bool], list[int]]


class BadLine(ValueError):
    """One line that is not a usable dialogue; the message says why."""


@dataclass
class Dataset:
    """The dialogues of one file, each a list of {"role", "content"}, and the shapes that were found."""

    path: Path
    dialogues: list[list[dict]]
    shapes: Counter = field(default_factory=Counter)

    @property
    def shape(self) -> str:
        return "+".join(sorted(self.shapes)) or "empty"


@dataclass
class Example:
    """One encoded dialogue: input ids and labels of the same length (IGNORE where no loss is taken)."""

    ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def shipped_corpus(name: str) -> tuple[Path, Path] | None:
    """(train, held-out) files of a corpus that ships with danlu, or None for any other name."""
    if name not in SHIPPED:
        return None
    from importlib import resources

    folder = Path(str(resources.files("danlu") / "data" / "corpus"))
    return folder / SHIPPED[name][0], folder / SHIPPED[name][1]


def resolve_data(data: str | Path, val: str | Path | None) -> tuple[Path, Path | None]:
    """A path, or a shipped corpus by name (whose held-out split becomes --val unless one is given)."""
    shipped = None if Path(data).expanduser().exists() else shipped_corpus(str(data))
    if shipped is None:
        return Path(data).expanduser(), Path(val).expanduser() if val else None
    return shipped[0], Path(val).expanduser() if val else shipped[1]


def read_dataset(path: Path) -> Dataset:
    """Every dialogue in a JSONL file; bad lines are collected and reported together by line number."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DanluError(f"找不到数据文件 {path} / data file not found: {path}")
    dataset, errors = Dataset(path, []), []
    with path.open(encoding="utf-8-sig") as lines:  # -sig: files saved by Windows editors start with a BOM
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                shape, messages = parse_line(line)
            except BadLine as exc:
                errors.append(f"第 {number} 行 / line {number}: {exc}")
                continue
            dataset.dialogues.append(messages)
            dataset.shapes[shape] += 1
    _raise_for(path, errors, dataset)
    return dataset


def _raise_for(path: Path, errors: list[str], dataset: Dataset) -> None:
    if errors:
        more = f"\n…（另有 {len(errors) - MAX_REPORTED} 行 / {len(errors) - MAX_REPORTED} more）" if len(errors) > MAX_REPORTED else ""
        raise DanluError(f"{path} 有 {len(errors)} 行无法使用 / {len(errors)} unusable line(s) in {path}:\n"
                         + "\n".join(errors[:MAX_REPORTED]) + more)
    if not dataset.dialogues:
        raise DanluError(f"{path} 里没有对话 / no dialogues in {path}")


def parse_line(line: str) -> tuple[str, list[dict]]:
    """(shape, messages) for one JSONL line, or BadLine saying what is wrong with it."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadLine(f"不是合法的 JSON（第 {exc.colno} 列）：{exc.msg} / not valid JSON (column {exc.colno}): {exc.msg}") from None
    if not isinstance(record, dict):
        raise BadLine("应为一个 JSON 对象 / expected a JSON object")
    shape, messages = _messages_of(record)
    return shape, checked_dialogue(messages)


def _messages_of(record: dict) -> tuple[str, list[dict]]:
    if "messages" in record:
        return "openai", _openai(record["messages"])
    if "conversations" in record:
        return "sharegpt", _sharegpt(record["conversations"])
    if "instruction" in record and "output" in record:
        return "alpaca", _alpaca(record)
    raise BadLine(f"认不出格式：需要 messages（OpenAI）、conversations（ShareGPT）或 instruction+output（Alpaca），"
                  f"实际的键是 {sorted(record)} / unknown shape: expected 'messages' (OpenAI), 'conversations' "
                  f"(ShareGPT) or 'instruction'+'output' (Alpaca), got keys {sorted(record)}")


def _openai(messages: Any) -> list[dict]:
    if not isinstance(messages, list):
        raise BadLine("messages 应为列表 / 'messages' must be a list")
    return [{"role": _field(m, "role"), "content": _text(_field(m, "content"))} for m in messages]


def _sharegpt(turns: Any) -> list[dict]:
    if not isinstance(turns, list):
        raise BadLine("conversations 应为列表 / 'conversations' must be a list")
    messages = []
    for turn in turns:
        speaker = str(_field(turn, "from")).lower()
        if speaker not in SHAREGPT_ROLES:
            raise BadLine(f"未知的说话人 {speaker!r} / unknown speaker {speaker!r} (human, gpt, system)")
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": _text(_field(turn, "value"))})
    return messages


def _alpaca(record: dict) -> list[dict]:
    """Instruction and input become the user turn; `history` pairs (BELLE, firefly) come first."""
    messages = [{"role": "system", "content": _text(record["system"])}] if record.get("system") else []
    for pair in record.get("history") or []:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise BadLine("history 应为 [问, 答] 的列表 / 'history' must be a list of [question, answer] pairs")
        messages += [{"role": "user", "content": _text(pair[0])}, {"role": "assistant", "content": _text(pair[1])}]
    question = _text(record["instruction"])
    if record.get("input"):
        question = f"{question}\n\n{_text(record['input'])}"
    return messages + [{"role": "user", "content": question}, {"role": "assistant", "content": _text(record["output"])}]


def _field(item: Any, key: str) -> Any:
    if not isinstance(item, dict) or key not in item:
        raise BadLine(f"每条消息都需要 {key!r} 字段 / every message needs a {key!r} field")
    return item[key]


def _text(value: Any) -> str:
    """Message content: a string, or OpenAI's list of parts whose text parts are joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    raise BadLine(f"内容应为文本 / content must be text, got {type(value).__name__}")


def checked_dialogue(messages: list[dict]) -> list[dict]:
    """Roles are known, a system message comes only first, and some assistant turn has text to learn."""
    for index, message in enumerate(messages):
        if message["role"] not in ("system", "user", "assistant"):
            raise BadLine(f"不支持的角色 {message['role']!r} / unsupported role {message['role']!r}")
        if message["role"] == "system" and index > 0:
            raise BadLine("system 消息只能在最前面 / a system message may only come first")
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise BadLine("没有可学习的 assistant 回复 / no assistant reply to learn from")
    return messages


# --- encoding ---------------------------------------------------------------------------------
def encode(messages: list[dict], fmt: ChatFormat, tokenize: Tokenize) -> Example:
    """Ids of the whole dialogue; labels only on assistant turns."""
    ids = _render_ids(fmt, messages, False, tokenize)
    labels = [IGNORE] * len(ids)
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            start, end = _turn_span(fmt, messages, index, ids, tokenize)
            labels[start:end] = ids[start:end]
    return Example(ids, labels)


def _render_ids(fmt: ChatFormat, messages: list[dict], generation_prompt: bool, tokenize: Tokenize) -> list[int]:
    ids: list[int] = []
    for segment in fmt.render(messages, generation_prompt):
        ids.extend(tokenize(segment.text, segment.control))
    return ids


def _turn_span(fmt: ChatFormat, messages: list[dict], index: int, ids: list[int], tokenize: Tokenize) -> tuple[int, int]:
    """Where assistant turn `index` lies in `ids`: after the prompt that asks for it, up to its own end."""
    asked = _render_ids(fmt, messages[:index], True, tokenize)
    answered = _render_ids(fmt, messages[: index + 1], False, tokenize)
    if answered[: len(asked)] != asked or ids[: len(answered)] != answered:
        # Templates that rewrite earlier turns (Qwen3 drops past <think> blocks) have no stable prefix to mask by.
        raise DanluError(f"对话格式 {fmt.name} 渲染时会改写之前的轮次，无法只在回复上计算损失 / the prompt format "
                         f"{fmt.name} rewrites earlier turns, so assistant tokens cannot be located for the loss mask")
    return len(asked), len(answered)


def encode_all(dialogues: list[list[dict]], fmt: ChatFormat, tokenize: Tokenize, max_len: int) -> tuple[list[Example], int, int]:
    """(examples, truncated, dropped): dialogues cut at `max_len` are kept if an assistant token survives."""
    examples, truncated, dropped = [], 0, 0
    for messages in dialogues:
        full = encode(messages, fmt, tokenize)
        example = Example(full.ids[:max_len], full.labels[:max_len])  # keep the start: the question comes first
        truncated += len(full.ids) > max_len
        if example.trained_tokens == 0:
            dropped += 1
            continue
        examples.append(example)
    return examples, truncated, dropped
