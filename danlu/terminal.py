"""Stored and generated text, made safe to show in a terminal.

Session names, model names and system prompts can be written by anyone who reaches the web page, and model
output is whatever the model says. Printed as Rich markup, a name of `[/]` breaks a table and
`[link=…]` draws a link that is not what it says; written raw, an ANSI escape moves the cursor, recolours
the terminal or retitles the window, and bidirectional controls reorder what the eye reads. So such text
is never markup (`plain` gives a rich `Text`, which Rich does not parse), and its control characters are
shown as escapes (`visible`: ESC → `\\x1b`, U+202E → `\\u202e`), keeping newlines and tabs. The mapping
is per character, so streamed pieces can be cleaned one at a time and still read the same.
"""

from __future__ import annotations

from rich.text import Text

_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_CONTROLS = (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


_SHOWN = {code: _escape(code) for code in (*_CONTROLS, *_BIDI) if chr(code) not in "\n\t"}
_SHOWN_ONE_LINE = {**_SHOWN, ord("\n"): "\\n", ord("\t"): "\\t"}


def visible(text: str) -> str:
    """`text` with every control character (newline and tab excepted) written as an escape."""
    return text.translate(_SHOWN)


def one_line(text: str) -> str:
    """Like `visible`, and newlines and tabs escaped too: for a name in a table cell or a status line."""
    return text.translate(_SHOWN_ONE_LINE)


def plain(text: object, style: str = "", *, single_line: bool = False) -> Text:
    """A rich `Text` of stored or generated text: printed as it is, never read as markup."""
    shown = str(text)
    return Text(one_line(shown) if single_line else visible(shown), style=style)
