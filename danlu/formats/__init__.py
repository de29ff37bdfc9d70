"""Prompt formats: the model's own chat template first, named fallbacks in a registry.

    from danlu.formats import from_template, get_format, to_text
    fmt = from_template(gguf_chat_template, bos_token=bos, eos_token=eos)   # when the model ships one
    fmt = get_format("chatglm3")                                            # otherwise, by catalog name
    segments = fmt.render(messages, True)   # markup (control=True) and content (control=False)

Tokenize each segment on its own: markup with special tokens on, content as plain text, so user input can
never turn into control tokens. See base.py for the types, jinja.py for template splitting, builtin.py and
dialogue.py and thinking.py for the named formats, tools.py for how named formats write tools, tool calls and tool results.
"""

from danlu.formats.base import (
    ChatFormat,
    Segment,
    format_names,
    get_format,
    register_format,
    to_text,
)
from danlu.formats.jinja import from_template

# Imported for their side effect: each module registers its named formats.
from danlu.formats import builtin as _builtin  # noqa: F401,E402
from danlu.formats import dialogue as _dialogue  # noqa: F401,E402
from danlu.formats import thinking as _thinking  # noqa: F401,E402
from danlu.formats.dialogue import dialogpt_format  # noqa: E402

__all__ = [
    "ChatFormat",
    "Segment",
    "dialogpt_format",
    "format_names",
    "from_template",
    "get_format",
    "register_format",
    "to_text",
]
