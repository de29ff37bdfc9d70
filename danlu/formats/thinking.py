"""Named formats for 2025 models: DeepSeek-R1 distills, GLM-4-0414 / GLM-Z1, and RWKV-7 G1's thinking switch.

The first two are fallbacks, used only when a model ships no chat template (their GGUFs and tokenizer_config.json
do), tested against the official templates in tests/reference_templates (deepseek-r1-distill-qwen.jinja,
glm-4-9b-0414.jinja). RWKV checkpoints carry no template at all: `rwkv-g1` is the prompt BlinkDL documents.
"""

from __future__ import annotations

from danlu.formats.base import Segment, checked_messages, markup, plain, register_format, tidy
from danlu.formats.dialogue import render_rwkv_dialogue

R1_BOS, R1_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"


def _answer_only(content: str) -> str:
    """What the R1 template keeps of a past reply: the text after its thinking."""
    return content.split("</think>")[-1]


@register_format("deepseek-r1", stop_strings=(R1_EOS,), includes_bos=True, reasoning="r1")
def render_deepseek_r1(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """DeepSeek-R1-Distill-Qwen: BOS, the system prompt as bare text, `<｜User｜>q<｜Assistant｜>a<｜end▁of▁sentence｜>`;
    the generation prompt opens the think block (`<｜Assistant｜><think>\\n`), so replies start inside it."""
    messages = checked_messages(messages)
    systems = [m["content"] for m in messages if m["role"] == "system"]
    segments = [markup(R1_BOS), plain("\n\n".join(systems))]
    for message in (m for m in messages if m["role"] != "system"):
        if message["role"] == "user":
            segments += [markup("<｜User｜>"), plain(message["content"])]
        else:
            segments += [markup("<｜Assistant｜>"), plain(_answer_only(message["content"])), markup(R1_EOS)]
    if add_generation_prompt:
        segments.append(markup("<｜Assistant｜><think>\n"))
    return tidy(segments)


@register_format("glm4", stop_strings=("<|user|>", "<|observation|>", "<|endoftext|>"), tool_protocol="glm4")
def render_glm4(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """GLM-4-0414: `[gMASK]<sop>`, every system message first as `<|system|>\\n…`, then `<|user|>\\n…` and
    `<|assistant|>\\n…` turns; the generation prompt is a bare `<|assistant|>` (the model writes the newline)."""
    messages = checked_messages(messages)
    segments = [markup("[gMASK]<sop>")]
    ordered = [m for m in messages if m["role"] == "system"] + [m for m in messages if m["role"] != "system"]
    for message in ordered:
        segments += [markup(f"<|{message['role']}|>\n"), plain(message["content"])]
    if add_generation_prompt:
        segments.append(markup("<|assistant|>"))
    return tidy(segments)


@register_format("rwkv-g1", stop_strings=("\n\nUser:", "\n\n"), reasoning="rwkv-g1", takes_options=True)
def render_rwkv_g1(messages: list[dict], add_generation_prompt: bool = True, enable_thinking: bool = True,
                   **_options) -> list[Segment]:
    """RWKV-7 G1: the World dialogue (`User: …\\n\\nAssistant: …`); thinking is chosen by the generation prompt.
    On, it ends `Assistant: <think`, so the reply starts inside the opening tag (`>`, the thinking, `</think>`,
    the answer); off, it is World's plain `Assistant:` (BlinkDL's no-think prompt). Other options are ignored."""
    segments = render_rwkv_dialogue(messages, False, "User", "Assistant")
    if add_generation_prompt:
        segments.append(markup("Assistant: <think" if enable_thinking else "Assistant:"))
    return tidy(segments)
