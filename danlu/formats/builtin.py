"""Named fallback formats for instruction-tuned chat models: role markup around each message.

Used when a model ships no chat template (transformers checkpoints with remote code, old GGUFs), and
tested against the official template where one exists (Qwen2.5 ChatML, Gemma 3, Llama-2-chat, ChatGLM3).
The facts come from shared/reference/models.md and each model's reference code, named in each docstring.
"""

from __future__ import annotations

from danlu.formats.base import (
    Segment,
    checked_messages,
    first_system,
    markup,
    plain,
    register_format,
    tidy,
    without_system,
)
from danlu.formats.tools import render_chatglm3 as render_chatglm3_with_tools
from danlu.formats.tools import render_chatml as render_chatml_with_tools


@register_format("chatml", stop_strings=("<|im_end|>", "<|endoftext|>"), tool_protocol="hermes", takes_options=True)
def render_chatml(messages: list[dict], add_generation_prompt: bool = True, *, tools: list | None = None,
                  **options) -> list[Segment]:
    """Qwen / Qwen2.5 / CausalLM ChatML. A system turn appears only when the caller passes one: the model's
    default system prompt ("You are Qwen, created by Alibaba Cloud. …") comes from the catalog as a message.
    Tools, tool calls and tool results are written as Qwen2.5's template writes them (tools.py, "hermes")."""
    return render_chatml_with_tools(messages, add_generation_prompt, tools)


@register_format("chatglm3", stop_strings=("<|user|>", "<|observation|>"), tool_protocol="chatglm3",
                 takes_options=True)
def render_chatglm3(messages: list[dict], add_generation_prompt: bool = True, *, tools: list | None = None,
                    **options) -> list[Segment]:
    """ChatGLM3: `[gMASK]sop`, then `<|role|>{metadata}\\n content` per message, ending with `<|assistant|>`.
    The space before the content is the SentencePiece prefix that `tokenizer.encode(message)` adds in
    THUDM's build_chat_input; the official Jinja template writes it out the same way. Tools go into a system
    turn, calls into assistant turns named after the function, results into `<|observation|>` turns (tools.py)."""
    return render_chatglm3_with_tools(messages, add_generation_prompt, tools)


def _gemma_turn(role: str, prefix: list[Segment], content: str) -> list[Segment]:
    return [markup(f"<start_of_turn>{role}\n"), *prefix, plain(content.strip()), markup("<end_of_turn>\n")]


@register_format("gemma", stop_strings=("<end_of_turn>", "<eos>"), includes_bos=True)
def render_gemma(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """Gemma 2/3: no system role, so a leading system prompt opens the first turn followed by a blank line
    (as Google's template does, untrimmed); other contents are trimmed; the assistant is called "model"."""
    messages = checked_messages(messages)
    system = first_system(messages)
    prefix = [plain(system), markup("\n\n")] if system is not None else []
    segments = [markup("<bos>")]
    for index, message in enumerate(messages[1:] if system is not None else messages):
        role = "model" if message["role"] == "assistant" else "user"  # a later system message speaks as user
        segments += _gemma_turn(role, prefix if index == 0 else [], message["content"])
    if add_generation_prompt:
        segments.append(markup("<start_of_turn>model\n"))
    return tidy(segments)


def _llama2_user(content: str, system: str | None) -> list[Segment]:
    if system is None:
        return [markup("<s>[INST] "), plain(content.strip()), markup(" [/INST]")]
    # Meta's template strips the merged "<<SYS>>…" string, so only the user text's right end is trimmed.
    return [markup("<s>[INST] <<SYS>>\n"), plain(system), markup("\n<</SYS>>\n\n"),
            plain(content.rstrip()), markup(" [/INST]")]


@register_format("llama2", stop_strings=("</s>",), includes_bos=True)
def render_llama2(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """Meta Llama-2-chat: `<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{q} [/INST] {a} </s>`. A prompt ending
    in a user turn ends with `[/INST]` anyway, so `add_generation_prompt` changes nothing (as in Meta's)."""
    messages = checked_messages(messages)
    system = first_system(messages)
    segments = []
    for index, message in enumerate(messages[1:] if system is not None else messages):
        if message["role"] == "assistant":
            segments += [markup(" "), plain(message["content"].strip()), markup(" </s>")]
        else:
            segments += _llama2_user(message["content"], system if index == 0 else None)
    return tidy(segments)


VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


@register_format("vicuna", stop_strings=("</s>", "USER:"))
def render_vicuna(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """Vicuna v1.1 (FastChat `vicuna_v1.1`): `{system} USER: {q} ASSISTANT: {a}</s>USER: … ASSISTANT:`.
    The Vicuna system line is used unless the caller passes a system prompt."""
    messages = checked_messages(messages)
    system = first_system(messages)
    segments = [plain(system) if system is not None else markup(VICUNA_SYSTEM), markup(" ")]
    for message in without_system(messages):
        if message["role"] == "user":
            segments += [markup("USER: "), plain(message["content"]), markup(" ")]
        else:
            segments += [markup("ASSISTANT: "), plain(message["content"]), markup("</s>")]
    if add_generation_prompt:
        segments.append(markup("ASSISTANT:"))
    return tidy(segments)


ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)


@register_format("chinese-alpaca", stop_strings=("### Instruction:",))
def render_chinese_alpaca(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """Chinese-LLaMA-Alpaca: `{system}\\n\\n### Instruction:\\n\\n{q}\\n\\n### Response:\\n\\n{a}`, with the
    Instruction/Response block repeated per turn (llama.cpp `-ins` mode, which the project's docs use)."""
    messages = checked_messages(messages)
    system = first_system(messages)
    segments = [plain(system) if system is not None else markup(ALPACA_SYSTEM)]
    for message in without_system(messages):
        if message["role"] == "user":
            segments += [markup("\n\n### Instruction:\n\n"), plain(message["content"]),
                         markup("\n\n### Response:\n\n")]
        else:
            segments.append(plain(message["content"]))
    return tidy(segments)


@register_format("llama2-chinese", stop_strings=("</s>", "Human:"), supports_system=False, includes_bos=True)
def render_llama2_chinese(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """FlagAlpha Llama2-Chinese / Atom: `<s>Human: {q}\\n</s><s>Assistant: {a}\\n</s>…<s>Assistant: `, tokenized
    by the reference code with add_special_tokens=False (the `<s>` are in the text). No system role."""
    segments = []
    for message in without_system(messages):
        speaker = "Human" if message["role"] == "user" else "Assistant"
        segments += [markup(f"<s>{speaker}: "), plain(message["content"]), markup("\n</s>")]
    if add_generation_prompt:
        segments.append(markup("<s>Assistant: "))
    return tidy(segments)


@register_format("bluelm", stop_strings=("</s>", "[|Human|]"), supports_system=False)
def render_bluelm(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """vivo BlueLM-Chat (cli_demo `build_prompt`): `[|Human|]:{q}[|AI|]:{a}</s>…[|Human|]:{p}[|AI|]:`."""
    segments = []
    for message in without_system(messages):
        if message["role"] == "user":
            segments += [markup("[|Human|]:"), plain(message["content"]), markup("[|AI|]:")]
        else:
            segments += [plain(message["content"]), markup("</s>")]
    return tidy(segments)


@register_format("skywork", stop_strings=("[SEP]", "</s>", "[USER]"), supports_system=False)
def render_skywork(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
    """Skywork-13B-Chat: `[USER]{q}[SEP][BOT]` (reference `special_encode`, which strips the question).
    Earlier turns are written as `[USER]{q}[SEP][BOT]{a}[SEP]`: the reference code is single-turn and cuts
    replies at `[SEP]`, so the multi-turn layout is an inference (unconf)."""
    segments = []
    for message in without_system(messages):
        if message["role"] == "user":
            segments += [markup("[USER]"), plain(message["content"].strip()), markup("[SEP][BOT]")]
        else:
            segments += [plain(message["content"]), markup("[SEP]")]
    return tidy(segments)
