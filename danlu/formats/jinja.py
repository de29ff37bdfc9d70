"""Prompt formats from the chat template a model ships (GGUF `tokenizer.chat_template`, tokenizer_config.json).

The template is rendered the way Hugging Face transformers renders it (jinja2's ImmutableSandboxedEnvironment
with trim_blocks and lstrip_blocks, `raise_exception`, `strftime_now`, a `tojson` that keeps non-ASCII text,
the `loopcontrols` extension and a pass-through `{% generation %}` tag), then split into segments:

1. Render once with the real messages: that string is the truth.
2. Render again with each message's content replaced by a unique sentinel (private-use characters around
   a random number, so user text cannot forge one) wrapped in whitespace pads. Text between sentinels is template markup. Whether a pad
   survived tells whether the template trims content (`| trim`, `.strip()`), and the real content is
   trimmed the same way. This handles templates that move content around, such as Gemma folding the system
   prompt into the first user turn.
3. Accept the split only if its concatenation equals the real rendering.
4. Otherwise the template changes content in some other way (Qwen3 dropping `<think>` blocks from past
   replies, `| upper`, truncation). Fall back to anchoring on the markup: find the markup pieces from step 2
   in the real rendering, in order, and treat everything between them as content. Markup that cannot be
   found stays in a content gap, so the fallback errs towards plain text, never towards control tokens. A
   warning is logged, because a user message that contains the template's exact markup could be misread in
   this mode.
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


def split_by_markup(real: str, markup_pieces: list[str]) -> list[Segment]:
    """Fallback split: locate each markup piece in order; the text between pieces is content."""
    segments, cursor = [], 0
    for piece in markup_pieces:
        found = real.find(piece, cursor)
        if found < 0:
            continue  # markup that depended on the content; its text stays in the content gap
        segments += [plain(real[cursor:found]), markup(piece)]
        cursor = found + len(piece)
    segments.append(plain(real[cursor:]))
    return tidy(segments)


def render_segments(compiled, messages, add_generation_prompt, bos_token, eos_token) -> list[Segment]:
    """Render `messages` with a compiled template and split the result into markup and content."""
    messages = [{**m, "content": m.get("content") or ""} for m in messages]
    if not all(isinstance(m["content"], str) for m in messages):
        raise DanluError("消息内容必须是文本 / message content must be text")
    now = datetime.now()
    variables = dict(add_generation_prompt=add_generation_prompt, bos_token=bos_token, eos_token=eos_token)
    real = render_template(compiled, messages, now, **variables)
    nonce = str(secrets.randbelow(10**12))  # digits survive `upper`/`lower`, so the fallback still finds markup
    probe = render_template(compiled, _probe_messages(messages, nonce), now, **variables)
    segments = split_probe(probe, nonce, messages)
    if to_text(segments) == real:
        return segments
    log.warning("chat template changes message content; splitting its output on markup anchors instead")
    return split_by_markup(real, [s.text for s in segments if s.control])


def from_template(
    template: str, *, bos_token: str = "", eos_token: str = "", name: str = "model-template"
) -> ChatFormat:
    """A ChatFormat that renders with the model's own Jinja chat template."""
    compiled = compile_template(template)

    def render(messages: list[dict], add_generation_prompt: bool = True) -> list[Segment]:
        return render_segments(compiled, messages, add_generation_prompt, bos_token, eos_token)

    return ChatFormat(
        name=name,
        render=render,
        stop_strings=(eos_token,) if eos_token else (),
        includes_bos=bool(bos_token) and "bos_token" in template,
    )
