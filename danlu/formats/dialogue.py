"""Named formats for dialogue models without role tokens: ChatYuan, PromptCLUE, GPT-2 and T5-style bots,
EVA2, RWKV, and plain completion.

These models were trained on plain text laid out a particular way, and their reference chat loops keep only
the newest few utterances; each format records that limit in `max_history_messages` and applies it. None of
them has a system role except RWKV, where a system prompt becomes the leading paragraph of the text.
"""

from __future__ import annotations

import functools
import re

from danlu.formats.base import (
    ChatFormat,
    Segment,
    checked_messages,
    first_system,
    markup,
    newest,
    plain,
    register_format,
    tidy,
    without_system,
)

# ---- ChatYuan / PromptCLUE (T5): newlines and tabs are escaped because SentencePiece drops them ----


def chatyuan_escape(text: str) -> str:
    """ChatYuan's `preprocess`: newline and tab become the two-character sequences the model was trained on."""
    return text.replace("\n", "\\n").replace("\t", "\\t")


def chatyuan_unescape(text: str) -> str:
    """ChatYuan's `postprocess`, including v2's "%20" for two spaces."""
    return text.replace("\\n", "\n").replace("\\t", "\t").replace("%20", "  ")


CHATYUAN_TURNS = 5


@register_format(
    "chatyuan",
    stop_strings=("</s>",),
    postprocess=chatyuan_unescape,
    supports_system=False,
    max_history_messages=2 * CHATYUAN_TURNS + 1,
)
def render_chatyuan(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """ChatYuan v1/v2: `用户：{q}\\n小元：{a}` turns joined by "\\n", then `\\n用户：{q}\\n小元：`, the whole text
    escaped (so the separators reach the model as a backslash and "n"). v2 keeps the last 5 finished turns
    (`"\\n".join(history[-5:])`), i.e. 11 messages with the new question."""
    segments = []
    for message in newest(without_system(messages), 2 * CHATYUAN_TURNS + 1):
        speaker = "用户：" if message["role"] == "user" else "小元："
        separator = "\\n" if segments else ""  # the reference `.strip()`s the leading "\n" of an empty context
        segments += [markup(separator + speaker), plain(chatyuan_escape(message["content"]))]
    if add_generation_prompt:
        segments.append(markup("\\n小元："))
    return tidy(segments)


def promptclue_escape(text: str) -> str:
    """PromptCLUE base README: newlines become "_" (unconf for v1-5)."""
    return text.replace("\n", "_")


def promptclue_unescape(text: str) -> str:
    return text.replace("_", "\n")


@register_format(
    "promptclue", postprocess=promptclue_unescape, supports_system=False, max_history_messages=1
)
def render_promptclue(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """PromptCLUE is a task model, not a chat model: the prompt is the last user message (a task prompt such
    as `…\\n选项：…\\n答案：`), escaped."""
    return tidy([plain(promptclue_escape(_last_user_text(messages)))])


def _last_user_text(messages: list[dict]) -> str:
    users = [m for m in without_system(messages) if m["role"] == "user"]
    return users[-1]["content"] if users else ""


# ---- GPT-2 / DialoGPT / EVA2: utterances separated by a special token ----


@register_format(
    "gpt2-dialogbot", stop_strings=("[SEP]",), supports_system=False, max_history_messages=3
)
def render_gpt2_dialogbot(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """shibing624/gpt2-dialogbot: `[CLS]u1[SEP]b1[SEP]u2[SEP]` over the last 3 utterances (max_history_len)."""
    segments = [markup("[CLS]")]
    for message in newest(without_system(messages), 3):
        segments += [plain(message["content"]), markup("[SEP]")]
    return tidy(segments)


GPT2_EOS = "<|endoftext|>"


def render_dialogpt(messages: list[dict], add_generation_prompt: bool = True, *, eos_token: str = GPT2_EOS):
    """DialoGPT (liam168/chat-DialoGPT-small-zh): every utterance followed by the tokenizer's eos text."""
    segments = []
    for message in without_system(messages):
        segments += [plain(message["content"]), markup(eos_token)]
    return tidy(segments)


def dialogpt_format(eos_token: str = GPT2_EOS) -> ChatFormat:
    """The DialoGPT format for a tokenizer whose eos text is not GPT-2's `<|endoftext|>`."""
    render = functools.partial(render_dialogpt, eos_token=eos_token)
    return ChatFormat("dialogpt", render, stop_strings=(eos_token,), supports_system=False)


register_format("dialogpt", stop_strings=(GPT2_EOS,), supports_system=False)(render_dialogpt)

EVA_UTTERANCES = 8


@register_format("eva2", stop_strings=("<sep>",), supports_system=False, max_history_messages=EVA_UTTERANCES)
def render_eva2(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """EVA2.0 encoder input: the last 8 utterances, each ending in `<sep>`, then `<s_0>` (the sentinel the
    decoder starts from). The reference also skips utterances that would take the context past 128 tokens;
    that needs the tokenizer, so the EVA engine applies it to every prompt ending in `<s_0>`
    (danlu/backends/hf/eva2/layout.py), whoever rendered it (chat, server)."""
    segments = []
    for message in newest(without_system(messages), EVA_UTTERANCES):
        segments += [plain(message["content"]), markup("<sep>")]
    if add_generation_prompt:
        segments.append(markup("<s_0>"))
    return tidy(segments)


# ---- RWKV: plain-text dialogue, turns separated by a blank line ----


def rwkv_clean(text: str) -> str:
    """ChatRWKV's message cleanup: a blank line ends a turn, so content may not contain one."""
    return re.sub(r"\n{2,}", "\n", text.strip().replace("\r\n", "\n"))


def render_rwkv_dialogue(messages: list[dict], add_generation_prompt: bool, user: str, bot: str) -> list[Segment]:
    """RWKV's plain-text turns between two speakers (World, Raven, and G1 in formats/thinking.py)."""
    messages = checked_messages(messages)
    system = first_system(messages)
    segments = [plain(system.strip()), markup("\n\n")] if system else []
    for message in without_system(messages):
        speaker = user if message["role"] == "user" else bot
        segments += [markup(f"{speaker}: "), plain(rwkv_clean(message["content"])), markup("\n\n")]
    if add_generation_prompt:
        segments.append(markup(f"{bot}:"))  # no space: the model writes " answer", as it was trained
    return tidy(segments)


@register_format("rwkv-world", stop_strings=("\n\nUser:", "\n\n"))
def render_rwkv_world(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """RWKV World: `User: …\\n\\nAssistant: …\\n\\nUser: …\\n\\nAssistant:` (never Bob/Alice or Q/A); a system
    prompt is a leading paragraph."""
    return render_rwkv_dialogue(messages, add_generation_prompt, "User", "Assistant")


RWKV_RAVEN_PRIMER = """The following is a verbose and detailed conversation between an AI assistant called Bot, \
and a human user called User. Bot is intelligent, knowledgeable, wise and polite.

User: french revolution what year

Bot: The French Revolution started in 1789, and lasted 10 years until 1799.

User: 3+5=?

Bot: The answer is 8."""
"""A shortened ChatRWKV v1 English `init_prompt`; pass it as the system message to prime the state as
ChatRWKV does."""


@register_format("rwkv-raven", stop_strings=("\n\nUser:", "\n\n"))
def render_rwkv_raven(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """ChatRWKV chat for Pile/Raven models: `User: {msg}\\n\\nBot:` turns (ChatRWKV v1 English names; v2 used
    Bob/Alice). ChatRWKV primes the state with an example dialogue: pass one (e.g. RWKV_RAVEN_PRIMER) as the
    system message and it becomes the leading paragraph."""
    return render_rwkv_dialogue(messages, add_generation_prompt, "User", "Bot")


@register_format("raw", supports_system=False, max_history_messages=1)
def render_raw(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """Plain completion for base models: the last user message's text, no markup."""
    return tidy([plain(_last_user_text(messages))])
