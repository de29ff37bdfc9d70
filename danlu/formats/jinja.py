"""Prompt formats from the chat template a model ships (GGUF `tokenizer.chat_template`, tokenizer_config.json).

The template is rendered the way Hugging Face transformers renders it (jinja2's ImmutableSandboxedEnvironment
with trim_blocks and lstrip_blocks, `raise_exception`, `strftime_now`, a `tojson` that keeps non-ASCII text,
the `loopcontrols` extension and a pass-through `{% generation %}` tag), with the caller's options (`tools`,
`enable_thinking`, other `chat_template_kwargs`) as template variables, then split into segments:

1. Every client string (contents, tool definitions, tool-call arguments, tool results, past reasoning) goes
   through the injection guard (guard.py) first: control-token text in it is bracketed by markers, so it
   stays text whatever the template does with it.
2. Render once with the real messages: that string is the truth.
3. Render again with each message's content replaced by a unique sentinel (private-use characters around
   a random number, so user text cannot forge one) wrapped in whitespace pads. Text between sentinels is
   template markup. Whether a pad survived tells whether the template trims content (`| trim`, `.strip()`),
   and the real content is trimmed the same way. This handles templates that move content around, such as
   Gemma folding the system prompt into the first user turn. Accept the split only if its concatenation
   equals the real rendering: content then tokenizes on its own, exactly as today's turns did.
4. Otherwise the template changes content in some other way (Qwen3 dropping `<think>` blocks from past
   replies, `| upper`, a test on the content's text): the whole rendering is markup, and the guard's
   brackets alone keep client text out of control tokens. No markup is searched for, so user text that
   repeats the template's own markup cannot be mistaken for it.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from danlu.errors import DanluError
from danlu.formats.base import ChatFormat, Segment, markup, plain, tidy, to_text
from danlu.formats.guard import Guard, as_markup
from danlu.formats.tools import glm4_template_inputs

log = logging.getLogger(__name__)

# Tabs rarely occur in templates, so a pad is unlikely to be mistaken for template text; all of it is
# whitespace, so `trim` removes it whole.
LEFT_PAD = "\t \n\t"
RIGHT_PAD = "\t\n \t"


class _TemplateRaised(Exception):
    """What the template's own `raise_exception(...)` throws, e.g. roles that do not alternate."""


class _IgnoreGenerationTags(jinja2.ext.Extension):
    """Accept HF's `{% generation %}…{% endgeneration %}` (training masks) and render its body as is."""

    tags = {"generation"}

    def parse(self, parser):
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str):
    raise _TemplateRaised(message)


def _tojson(value: Any, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    # transformers overrides jinja's tojson: no HTML escaping and Chinese kept as characters.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def compile_template(template: str) -> jinja2.Template:
    """Compile a chat template as transformers does; a syntax error is a user-facing error."""
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_IgnoreGenerationTags, jinja2.ext.loopcontrols],
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    try:
        return environment.from_string(template)
    except jinja2.TemplateSyntaxError as error:
        raise DanluError(f"无法解析对话模板：{error} / cannot parse the chat template: {error}") from error


def render_template(compiled: jinja2.Template, messages: list[dict], now: datetime, **variables) -> str:
    """Render with HF's variables; `now` is fixed by the caller so two renderings see the same date."""
    try:
        return compiled.render(messages=messages, strftime_now=now.strftime, **variables)
    except _TemplateRaised as error:
        raise DanluError(f"对话模板拒绝了这段对话：{error} / the chat template rejected the conversation: {error}")
    except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError) as error:
        raise DanluError(f"渲染对话模板失败：{error} / failed to render the chat template: {error}") from error


def _sentinel_pattern(nonce: str) -> re.Pattern:
    pads = re.escape(LEFT_PAD), re.escape(RIGHT_PAD)
    return re.compile(f"({pads[0]})?\ue000{nonce}:(\\d+)\ue001({pads[1]})?")


def _probe_messages(messages: list[dict], nonce: str) -> list[dict]:
    """Copies of the messages whose content is a padded sentinel naming the message's index."""
    return [
        {**message, "content": f"{LEFT_PAD}\ue000{nonce}:{index}\ue001{RIGHT_PAD}"}
        for index, message in enumerate(messages)
    ]


def _content_as_template_left_it(content: str, left_pad_kept: bool, right_pad_kept: bool) -> str:
    """Trim the real content on each side where the template trimmed the sentinel's pad."""
    if not left_pad_kept:
        content = content.lstrip()
    if not right_pad_kept:
        content = content.rstrip()
    return content


def split_probe(probe: str, nonce: str, messages: list[dict]) -> list[Segment]:
    """Segments from the sentinel rendering: template text as markup, the real contents in between."""
    segments, cursor = [], 0
    for match in _sentinel_pattern(nonce).finditer(probe):
        segments.append(markup(probe[cursor : match.start()]))
        content = messages[int(match.group(2))]["content"]
        kept = match.group(1) is not None, match.group(3) is not None
        segments.append(plain(_content_as_template_left_it(content, *kept)))
        cursor = match.end()
    segments.append(markup(probe[cursor:]))
    return tidy(segments)


def normalized(messages: list[dict]) -> list[dict]:
    """Messages as templates expect them: missing content is "", tool-call arguments sent as a JSON string
    (OpenAI's wire form) become the object templates render with `tojson` (transformers' convention)."""
    out = []
    for message in messages:
        message = {**message, "content": message.get("content") or ""}
        if message.get("tool_calls"):
            message["tool_calls"] = [_call_with_object_arguments(c) for c in message["tool_calls"]]
        out.append(message)
    if not all(isinstance(m["content"], str) for m in out):
        raise DanluError("消息内容必须是文本 / message content must be text")
    return out


def _call_with_object_arguments(call: dict) -> dict:
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            function["arguments"] = parsed
    return {**call, "function": function}


def render_segments(compiled, messages, add_generation_prompt, bos_token, eos_token, guard: Guard,
                    options: dict | None = None) -> list[Segment]:
    """Render `messages` with a compiled template and split the result into markup and content."""
    messages = guard.wrap(normalized(messages))
    now = datetime.now()
    variables = dict(guard.wrap(options or {}), add_generation_prompt=add_generation_prompt, bos_token=bos_token,
                     eos_token=eos_token)
    real = render_template(compiled, messages, now, **variables)
    nonce = str(secrets.randbelow(10**12))  # digits survive `upper`/`lower`
    probe = render_template(compiled, _probe_messages(messages, nonce), now, **variables)
    segments = split_probe(probe, nonce, messages)
    if to_text(segments) != real:
        log.debug("chat template changes message content; the rendering is read as markup with guarded client text")
        segments = as_markup(real)
    return guard.restore(segments)


def from_template(
    template: str, *, bos_token: str = "", eos_token: str = "", name: str = "model-template",
    control_tokens: tuple[str, ...] | list[str] = (), tool_protocol: str | None = None, reasoning: str | None = None,
) -> ChatFormat:
    """A ChatFormat that renders with the model's own Jinja chat template. `control_tokens` are the
    vocabulary's control-token texts (guarded in client strings besides the common shapes); a template that
    renders `tools` takes them (`tool_protocol` then names how the model writes its calls)."""
    compiled = compile_template(template)
    guard_tokens = (*control_tokens, *(t for t in (bos_token, eos_token) if t))
    tool_protocol = (tool_protocol or detect_tool_protocol(template)) if renders_tools(template) else None
    reshape = _history_reshaper(tool_protocol, template)

    def render(messages: list[dict], add_generation_prompt: bool = True, **options) -> list[Segment]:
        messages, options = reshape(messages, options)
        return render_segments(compiled, messages, add_generation_prompt, bos_token, eos_token,
                               Guard(guard_tokens), options)

    thinking = detect_thinking(template)
    return ChatFormat(
        name=name,
        renderer=render,
        stop_strings=(eos_token,) if eos_token else (),
        includes_bos=bool(bos_token) and "bos_token" in template,
        tool_protocol=tool_protocol,
        reasoning=reasoning or (detect_reasoning(render) if thinking != "never" else None),
        thinking=thinking,
        takes_options=True,
    )


def detect_thinking(template: str) -> str:
    """"hybrid" when the template has Qwen3's switch, "always" when it writes think blocks without one
    (DeepSeek-R1 distills, QwQ), else "never" (the catalog may say otherwise)."""
    if "enable_thinking" in template:
        return "hybrid"
    return "always" if "<think>" in template else "never"


def detect_reasoning(render) -> str:
    """"r1" when the generation prompt itself opens the think block (the reply starts inside it), else "think"."""
    try:
        asked = to_text(render([{"role": "user", "content": "x"}], True))
        told = to_text(render([{"role": "user", "content": "x"}], False))
    except DanluError:
        return "think"
    opened = asked[len(told):] if asked.startswith(told) else asked[-32:]
    return "r1" if "<think>" in opened and "</think>" not in opened else "think"


def detect_tool_protocol(template: str) -> str | None:
    """How the model writes its calls, from what its template teaches it (the catalog may say otherwise).
    None where danlu has no parser for the family's calls (GLM-4.5's `<arg_key>` calls, DeepSeek's)."""
    if "<arg_key>" in template:
        return None  # GLM-4.5/4.6 write XML arguments inside <tool_call>: not Hermes JSON
    if "<tool_call>" in template:
        return "hermes"  # Qwen2.5, Qwen3, Hermes-style templates
    if "<|observation|>" in template or "可用工具" in template:
        return "glm4"  # GLM-4-9B-chat, GLM-4-0414, GLM-Z1-0414: `<|assistant|>name\n{json}`
    if "<|python_tag|>" in template or "ipython" in template:
        return "llama3-json"  # Llama 3.1/3.2/3.3: `{"name": …, "parameters": …}`
    return None


def _history_reshaper(tool_protocol: str | None, template: str):
    """GLM-4's templates read `metadata`/`observation` messages, not OpenAI's `tool_calls`/`tool`: reshape first
    (formats/tools.py). Other templates get the messages as the client sent them."""
    if tool_protocol != "glm4":
        return lambda messages, options: (messages, options)
    tools_in_messages = "item['tools']" in template  # GLM-4-9B-chat reads tools from a system message
    return lambda messages, options: glm4_template_inputs(messages, options, tools_in_messages)


def renders_tools(template: str) -> bool:
    """Whether a template does anything with `tools` (Qwen2.5/Qwen3, Llama 3.1, GLM-4 templates do)."""
    return re.search(r"\btools\b", template) is not None
