"""Tool protocols for the named formats: tool definitions in the prompt, assistant turns that carry `tool_calls`,
and `role: "tool"` results, written the way each model family was trained to read them.

- "hermes" (the `chatml` format): exactly as Qwen2.5-Instruct's chat template writes them: a `# Tools` block with
  `<tools>` in the system turn, `<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>` in assistant turns,
  consecutive results in one user turn of `<tool_response>` blocks.
- "chatglm3" (the `chatglm3` format): THUDM ChatGLM3's tool system prompt ("Answer the following questions as best
  as you can. You have access to the following tools:" and the functions as indented JSON, as its
  `tools_using_demo` and `build_chat_input` write it), a call as an assistant turn whose metadata is the function
  name and whose body is ```` ```python\\ntool_call(k=v)\\n``` ````, a result as an `<|observation|>` turn.
- "glm4": GLM-4 ships Jinja templates that read `metadata` and `observation` messages (and, for GLM-4-9B-chat,
  tools inside a system message) instead of OpenAI's shapes; `glm4_template_inputs` reshapes the history before
  such a template runs, as THUDM's own `process_messages` does.

Function names, tool definitions, arguments and results are client text: they are rendered as plain segments, so
a result that contains `<|im_end|>` stays text.
"""

from __future__ import annotations

import json
from danlu.errors import DanluError
from danlu.formats.base import Segment, checked_messages, markup, plain, tidy

HERMES_TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
# Qwen2.5's template writes the example with doubled braces (a string literal inside `{{ }}`); kept as it is.
HERMES_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}'
    "\n</tool_call>"
)
CHATGLM3_TOOLS_PROMPT = "Answer the following questions as best as you can. You have access to the following tools:"


def tojson(value) -> str:
    """JSON as chat templates' `tojson` writes it in transformers: default separators, Chinese kept."""
    return json.dumps(value, ensure_ascii=False)


def function_of(tool) -> dict:
    """The function definition inside an OpenAI tool (`{"type": "function", "function": {…}}`) or a bare one."""
    if not isinstance(tool, dict):
        raise DanluError("工具定义必须是 JSON 对象 / each tool definition must be a JSON object")
    function = tool.get("function", tool)
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise DanluError("工具定义缺少函数名（function.name） / a tool definition has no function name (function.name)")
    return function


def call_parts(call) -> tuple[str, object]:
    """(name, arguments) of an assistant's tool call; arguments sent as a JSON string (OpenAI's wire form) are
    decoded to the object templates render, anything that does not decode is kept as the string."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise DanluError("工具调用缺少 function.name / a tool call in the history has no function.name")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments)
        except ValueError:
            decoded = None
        arguments = decoded if isinstance(decoded, dict) else arguments
    return function["name"], arguments


def tool_messages(messages: list[dict]) -> list[dict]:
    """The messages checked for a format that has a tool protocol (tool results and tool_calls allowed)."""
    return checked_messages(messages, tools=True)


# ---- hermes, for ChatML (Qwen2.5's template) ----


def render_chatml(messages: list[dict], add_generation_prompt: bool, tools: list | None) -> list[Segment]:
    """ChatML with Qwen2.5's tool rendering; without tools or tool messages it is plain ChatML."""
    messages = tool_messages(messages)
    segments: list[Segment] = []
    if tools:
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
        segments += hermes_system(system, tools)
        messages = messages[1:] if system is not None else messages
    for index, message in enumerate(messages):
        segments += _chatml_turn(message, messages[index - 1] if index else None,
                                 messages[index + 1] if index + 1 < len(messages) else None)
    if add_generation_prompt:
        segments.append(markup("<|im_start|>assistant\n"))
    return tidy(segments)


def hermes_system(system: str | None, tools: list) -> list[Segment]:
    """The system turn with the tool block; the caller's system prompt (if any) comes first, as Qwen's does."""
    segments = [markup("<|im_start|>system\n")]
    if system is not None:
        segments += [plain(system), markup("\n\n")]
    segments.append(markup(HERMES_TOOLS_HEAD))
    for tool in tools:
        function_of(tool)  # a definition without a name is refused before the model sees it
        segments += [markup("\n"), plain(tojson(tool))]
    return segments + [markup(HERMES_TOOLS_TAIL + "<|im_end|>\n")]


def _chatml_turn(message: dict, previous: dict | None, following: dict | None) -> list[Segment]:
    role = message["role"]
    if role == "tool":
        opening = [markup("<|im_start|>user")] if not previous or previous["role"] != "tool" else []
        closing = [markup("<|im_end|>\n")] if not following or following["role"] != "tool" else []
        return [*opening, markup("\n<tool_response>\n"), plain(message["content"]),
                markup("\n</tool_response>"), *closing]
    if role == "assistant" and message.get("tool_calls"):
        return hermes_assistant(message)
    return [markup(f"<|im_start|>{role}\n"), plain(message["content"]), markup("<|im_end|>\n")]


def hermes_assistant(message: dict) -> list[Segment]:
    """An assistant turn with its calls, as Qwen2.5's template writes it (no newline before a lone call's tag
    beyond the one the template puts there)."""
    segments = [markup("<|im_start|>assistant")]
    if message["content"]:
        segments += [markup("\n"), plain(message["content"])]
    for call in message["tool_calls"]:
        name, arguments = call_parts(call)
        segments += [markup('\n<tool_call>\n{"name": "'), plain(name), markup('", "arguments": '),
                     plain(tojson(arguments)), markup("}\n</tool_call>")]
    return segments + [markup("<|im_end|>\n")]


# ---- chatglm3 (THUDM ChatGLM3-6B) ----


def render_chatglm3(messages: list[dict], add_generation_prompt: bool, tools: list | None) -> list[Segment]:
    """ChatGLM3 with its tool protocol; without tools or tool messages it is the plain chatglm3 format. The
    client's own system prompt follows the tool system turn as a second system turn (THUDM's demo drops it;
    danlu keeps what the client said)."""
    segments = [markup("[gMASK]sop")]
    if tools:
        segments += [markup("<|system|>\n "), plain(chatglm3_tools_prompt(tools))]
    for message in tool_messages(messages):
        segments += _chatglm3_turn(message)
    if add_generation_prompt:
        segments.append(markup("<|assistant|>"))
    return tidy(segments)


def chatglm3_tools_prompt(tools: list) -> str:
    """The tool system prompt of ChatGLM3's `build_chat_input`: the fixed sentence and the functions as JSON."""
    functions = [function_of(tool) for tool in tools]
    return CHATGLM3_TOOLS_PROMPT + "\n" + json.dumps(functions, indent=4, ensure_ascii=False)


def _chatglm3_turn(message: dict) -> list[Segment]:
    role, content = message["role"], message["content"]
    if role == "tool":
        return [markup("<|observation|>\n "), plain(content)]
    if role == "assistant" and message.get("tool_calls"):
        segments = [markup("<|assistant|>\n "), plain(content)] if content else []
        for call in message["tool_calls"]:
            name, arguments = call_parts(call)
            segments += [markup("<|assistant|>"), plain(name), markup("\n "), plain(chatglm3_call_body(arguments))]
        return segments
    return [markup(f"<|{role}|>\n "), plain(content)]


def chatglm3_call_body(arguments) -> str:
    """A call as ChatGLM3 writes it: ```` ```python\\ntool_call(location='北京', unit='celsius')\\n``` ````."""
    if not isinstance(arguments, dict):
        raise DanluError("ChatGLM3 的工具调用参数必须是 JSON 对象 / ChatGLM3 tool-call arguments must be a JSON object")
    keywords = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    return f"```python\ntool_call({keywords})\n```"


# ---- glm4: reshaping the history for GLM-4's own templates ----


def glm4_template_inputs(messages: list[dict], options: dict, tools_in_messages: bool) -> tuple[list[dict], dict]:
    """OpenAI-shaped history as GLM-4's templates read it: a call becomes an assistant message whose `metadata`
    is the function name and whose content is the arguments' JSON; a result becomes an `observation` message.
    GLM-4-9B-chat's template reads the tools from a system message (`tools_in_messages`), so they move there,
    with the client's system prompt as that message's content."""
    out: list[dict] = []
    for message in messages:
        out += _glm4_messages(message)
    tools = options.get("tools")
    if tools and tools_in_messages:
        has_system = bool(out) and out[0].get("role") == "system"
        system = (out[0].get("content") or "") if has_system else ""
        head = {"role": "system", "content": system, "tools": tools}
        out = [head, *(out[1:] if has_system else out)]
        options = {key: value for key, value in options.items() if key != "tools"}
    return out, options


def _glm4_messages(message: dict) -> list[dict]:
    if message.get("role") == "tool":
        return [{"role": "observation", "content": message.get("content") or ""}]
    if message.get("role") != "assistant" or not message.get("tool_calls"):
        return [message]
    out = [{"role": "assistant", "content": message["content"]}] if message.get("content") else []
    for call in message["tool_calls"]:
        name, arguments = call_parts(call)
        text = arguments if isinstance(arguments, str) else tojson(arguments)
        out.append({"role": "assistant", "metadata": name, "content": text})
    return out
