"""Whether a model thinks for a request: its mode, the client's switch, the server's default.

A hybrid model (Qwen3) has a switch its template reads (`enable_thinking`); clients reach it through
`chat_template_kwargs`, `reasoning_effort: "none"` or Ollama's `think: false`, and `danlu serve --thinking`
sets the default per model. A model that always thinks (DeepSeek-R1 distills, Qwen3-*-Thinking-2507) or never
does (Qwen3-*-Instruct-2507) cannot be switched: asking is a 400 that says which model to use instead,
rather than a switch that silently does nothing.
"""

from __future__ import annotations

from typing import Any

from danlu.server.errors import bad_request


def mode(served: Any) -> str:
    """"hybrid", "always" or "never": the catalog's word first, else what the template shows."""
    spec = served.resolved.spec
    declared = getattr(spec, "thinking", None) if spec is not None else None
    if declared and (declared != "never" or not served.fmt.reasoning):
        return declared
    return served.fmt.thinking


def resolve(served: Any, requested: bool | None, settings: Any) -> bool | None:
    """The switch to pass the template: True/False for a hybrid model, None to leave its default alone."""
    kind = mode(served)
    if kind == "hybrid":
        return requested if requested is not None else settings.thinking_default(served.key)
    if requested is False and kind == "always":
        raise bad_request(f"{served.key} 总是先思考再回答，不能关闭思考：换用它的非思考版本（如 *-Instruct-2507）/ "
                          f"{served.key} always thinks before it answers: thinking cannot be turned off; use its "
                          "non-thinking sibling (e.g. an *-Instruct-2507 model)", "think", "thinking_not_switchable")
    if requested is True and kind == "never":
        raise bad_request(f"{served.key} 不会思考（没有思考模式）：换用会思考的模型（如 Qwen3、DeepSeek-R1 蒸馏版）/ "
                          f"{served.key} has no thinking mode: use a thinking model (Qwen3, a DeepSeek-R1 distill)",
                          "think", "thinking_not_switchable")
    return None


def answer_starts_after(served: Any, thinking: bool | None) -> str | None:
    """The text after which the answer begins (where a JSON constraint applies), None when it begins at once."""
    if not served.fmt.reasoning or thinking is False or mode(served) == "never":
        return None
    return "</think>"
