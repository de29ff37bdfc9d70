"""The vocabulary of prompt formats: segments, the format record, and the registry of named formats.

A prompt format turns chat messages into a list of `Segment`s. Each segment says whether its text is
template markup (tokenized with special tokens on, so "<|im_start|>" becomes one control token) or
message content (tokenized as plain text, so a user who types "<|im_end|>" cannot end their own turn).
Everything downstream (chat, server, arena, eval) tokenizes segment by segment and never re-parses a
flat prompt string.

Named formats register themselves with `@register_format(name, ...)`, the way llama-cpp-python's
`@register_chat_format` does; the catalog refers to them by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from danlu.errors import DanluError
from danlu.registry import Registry

ROLES = ("system", "user", "assistant")
TOOL_ROLE = "tool"  # tool results, accepted by formats that have a tool protocol


@dataclass(frozen=True)
class Segment:
    """A piece of a rendered prompt: markup (`control=True`) or message content (`control=False`)."""

    text: str
    control: bool


def _identity(text: str) -> str:
    return text


@dataclass(frozen=True)
class ChatFormat:
    """How one family of models wants its conversation written down.

    `render(messages, add_generation_prompt, **options)` returns the prompt as segments. Options are what a
    chat template can be told beyond the messages: `tools` (OpenAI function definitions), `enable_thinking`
    and any other `chat_template_kwargs`; a renderer ignores those it does not know. `postprocess` undoes any
    escaping the format applies to content, on the model's reply. `max_history_messages` is the number of
    newest non-system messages the model's reference code keeps (the render applies it too, so the caller
    can compare and say what was dropped). `includes_bos` is True when the rendering itself starts with the
    BOS token text, so the tokenizer must not add a second one. `tool_protocol` names how the model writes
    tool calls (a parser in danlu/outputs/tool_calls.py) when it can take `tools` at all; `reasoning` names
    how it writes its thinking (danlu/outputs/reasoning.py), None for models that do not think aloud, and
    `thinking` whether that thinking can be switched off (`enable_thinking`).
    """

    name: str
    renderer: Callable[..., list[Segment]]
    stop_strings: tuple[str, ...] = ()
    postprocess: Callable[[str], str] = field(default=_identity)
    supports_system: bool = True
    max_history_messages: int | None = None
    includes_bos: bool = False
    tool_protocol: str | None = None
    reasoning: str | None = None
    thinking: str = "never"  # "hybrid" (a switch), "always" or "never": how the format's models think aloud
    takes_options: bool = False  # the renderer accepts keyword options (templates do; named formats may)

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **options) -> list[Segment]:
        """The prompt as markup and content segments; options the renderer cannot take are dropped. A format
        without a tool protocol refuses `tools` and tool messages with an error that names it."""
        if self.tool_protocol is None:
            refuse_tools(self.name, messages, options.get("tools"))
        if self.takes_options:
            return self.renderer(messages, add_generation_prompt, **options)
        return self.renderer(messages, add_generation_prompt)


_REGISTRY: Registry[ChatFormat] = Registry(("对话格式", "prompt format"))


def register_format(name: str, **attrs) -> Callable:
    """Decorator: register `render` under `name` as a ChatFormat with the given attributes."""

    def decorator(render: Callable[[list[dict], bool], list[Segment]]):
        _REGISTRY.add(name, ChatFormat(name=name, renderer=render, **attrs))
        return render

    return decorator


def get_format(name: str) -> ChatFormat:
    """The registered format called `name`; an unknown name is a user error that lists the known ones."""
    return _REGISTRY.get(name)


def format_names() -> list[str]:
    """Names of all registered formats, sorted."""
    return _REGISTRY.names()


def to_text(segments: Iterable[Segment]) -> str:
    """The prompt as one string (for display, logging and comparison with reference renderings)."""
    return "".join(segment.text for segment in segments)


def markup(text: str) -> Segment:
    """Template text: tokenized with special tokens recognised."""
    return Segment(text, True)


def plain(text: str) -> Segment:
    """Message content: tokenized as plain text only."""
    return Segment(text, False)


def tidy(segments: Iterable[Segment]) -> list[Segment]:
    """Drop empty segments and merge neighbours of the same kind, so renderings compare cleanly."""
    result: list[Segment] = []
    for segment in segments:
        if not segment.text:
            continue
        if result and result[-1].control == segment.control:
            result[-1] = Segment(result[-1].text + segment.text, segment.control)
        else:
            result.append(segment)
    return result


def checked_messages(messages: list[dict], *, tools: bool = False) -> list[dict]:
    """The messages with their roles checked and missing content read as ""; bad roles are user errors. With
    `tools` (a format that has a tool protocol) `role: "tool"` results and assistant `tool_calls` are kept."""
    checked = []
    for message in messages:
        role = message.get("role")
        if role == TOOL_ROLE and tools:
            checked.append({"role": role, "content": _text(message.get("content")),
                            "tool_call_id": message.get("tool_call_id"), "name": message.get("name")})
            continue
        if role not in ROLES:
            raise DanluError(
                f"不支持的消息角色 {role!r}（只支持 system/user/assistant） / "
                f"unsupported message role {role!r} (only system/user/assistant)"
            )
        entry = {"role": role, "content": _text(message.get("content"))}
        if tools and role == "assistant" and message.get("tool_calls"):
            entry["tool_calls"] = _tool_calls(message["tool_calls"])
        checked.append(entry)
    return checked


def _text(content) -> str:
    if content is None:
        return ""
    if not isinstance(content, str):
        raise DanluError("消息内容必须是文本 / message content must be text")
    return content


def _tool_calls(calls) -> list[dict]:
    if not isinstance(calls, list) or not all(isinstance(call, dict) for call in calls):
        raise DanluError("tool_calls 必须是对象列表 / tool_calls must be a list of objects")
    return list(calls)


def refuse_tools(format_name: str, messages: list[dict], tools) -> None:
    """For a format without a tool protocol: tools, tool results and tool calls are a clear user error."""
    if tools:
        raise DanluError(
            f"对话格式 '{format_name}' 不支持工具调用：这类模型没有学过调用工具的写法（没有工具调用协议），"
            f"请去掉 tools 或换一个支持工具的模型 / prompt format '{format_name}' cannot take tools: its models "
            "were not taught a way to write tool calls (it has no tool protocol); drop `tools` or use a model "
            "that supports them"
        )
    if any(isinstance(m, dict) and (m.get("role") == TOOL_ROLE or m.get("tool_calls")) for m in messages):
        raise DanluError(
            f"对话格式 '{format_name}' 没有工具调用协议，对话里不能有工具调用或工具结果（tool_calls、role \"tool\"） / "
            f"prompt format '{format_name}' has no tool protocol, so the conversation cannot carry tool calls or "
            "tool results (tool_calls, role \"tool\")"
        )


def without_system(messages: list[dict]) -> list[dict]:
    """The dialogue turns only, for formats whose models have no notion of a system prompt."""
    return [m for m in checked_messages(messages) if m["role"] != "system"]


def newest(messages: list[dict], limit: int | None) -> list[dict]:
    """The last `limit` messages (all of them when `limit` is None), as reference chat loops keep them."""
    return messages if limit is None else messages[-limit:]


def first_system(messages: list[dict]) -> str | None:
    """The content of a leading system message, or None when the conversation has none."""
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"]
    return None
