"""What a model's output must match: a `Constraint` made by the builders here, and its grammar text.

A constraint is plain data (a kind, a payload, a trigger) that requests and GenerationParams carry; its grammar is
written for llguidance (its Lark dialect, with `%json` blocks for JSON schemas), the library chosen by measurement
(README, "Constrained output" / bench/grammar_choice.py): it enforces the most of JSON Schema, names the keywords
it cannot, masks a 150k-token vocabulary in about 0.1 ms, and runs under llama.cpp and transformers alike.
`guide.py` runs a grammar while an engine samples.

Builders: `json_object()`, `json_schema(schema, strict)`, `gbnf(text)`, `tool_calls(tools, ...)`. Each compiles its
grammar once on the spot, so a schema that cannot be enforced fails when the request is read (`UnsupportedSchema`
names the keyword), never halfway through a decode. `after="</think>"` lets a model write freely until that text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Callable

from danlu.errors import DanluError

#: Whitespace between JSON tokens: none, a space, or one or two newlines and an indent (llama.cpp's `space` rule).
#: Unbounded whitespace lets a small model at temperature 1 spend max_tokens on newlines.
JSON_WHITESPACE = r"(\x20|\n{1,2}[\x20\t]{0,20})?"
#: What may come between the `after` trigger and the constrained part (the blank line after </think>).
LEAD = r"/[\x20\t\r\n]{1,4}/"

TokenId = Callable[[str], "int | None"]


class UnsupportedSchema(DanluError):
    """A JSON schema uses a keyword the grammar cannot enforce; `keyword` names it (the server answers 400)."""

    def __init__(self, keyword: str, value: str | None = None):
        self.keyword = keyword
        named = f"`{keyword}`" + (f" ({value})" if value else "")
        super().__init__(
            f"JSON Schema 关键字 {named} 无法强制执行：请去掉它，或设 strict 为 false 以忽略它 / the JSON Schema "
            f"keyword {named} cannot be enforced: remove it, or set strict to false to have it ignored")


@dataclass(frozen=True)
class Constraint:
    """What the output must match. `payload` is JSON text (a schema, or a tool-call spec) or GBNF text."""

    kind: str  # "json_object" | "json_schema" | "gbnf" | "tool_calls"
    payload: str = ""
    strict: bool = True  # False: schema keywords the grammar cannot enforce are ignored, not refused
    after: str | None = None  # sampling is free until the output contains this text

    def starting_after(self, trigger: str | None) -> "Constraint":
        """The same constraint, applied only once `trigger` has been generated."""
        return replace(self, after=trigger or None)

    @property
    def schema(self) -> dict | None:
        """The JSON schema the output must match (json_object and json_schema), for validating results."""
        if self.kind == "json_object":
            return {"type": "object"}
        return json.loads(self.payload) if self.kind == "json_schema" else None

    def grammar(self, token_id: TokenId = lambda text: None) -> str:
        """llguidance grammar text; `token_id(tag)` is the id of a tool tag that the vocabulary has as one
        special token (Qwen's <tool_call>), which the grammar then accepts beside the spelled-out text."""
        if self.kind == "gbnf":
            return self.payload
        if self.kind == "tool_calls":
            return _tool_call_grammar(json.loads(self.payload), token_id, self.after is not None)
        return _start(["value"], self.after is not None) + f"value: {_json_block(self.schema, self.strict)}\n"


def json_object(after: str | None = None) -> Constraint:
    """Any JSON object (OpenAI's response_format {"type": "json_object"})."""
    return _checked(Constraint("json_object", after=after))


def json_schema(schema: dict, strict: bool = True, after: str | None = None) -> Constraint:
    """A JSON value valid for `schema`; with strict, a keyword the grammar cannot enforce raises UnsupportedSchema."""
    if not isinstance(schema, dict):
        raise DanluError("JSON Schema 必须是对象 / a JSON schema must be an object")
    return _checked(Constraint("json_schema", json.dumps(schema, ensure_ascii=False), strict, after))


def gbnf(text: str, after: str | None = None) -> Constraint:
    """A grammar in llama.cpp's GBNF (root rule `root`), converted to llguidance's dialect."""
    from llguidance.gbnf_to_lark import GbnfToLarkError, gbnf_to_lark

    try:
        lark = gbnf_to_lark(text)
    except GbnfToLarkError as exc:
        raise DanluError(f"GBNF 语法有误 / invalid GBNF grammar: {exc}") from exc
    return _checked(Constraint("gbnf", lark, after=after))


def tool_calls(tools: list[dict], open_tag: str = "<tool_call>", close_tag: str = "</tool_call>",
               required_name: str | None = None, parallel: bool = False, *, name_key: str = "name",
               arguments_key: str = "arguments", after: str | None = None) -> Constraint:
    """One tool call (several when `parallel`) as OPEN\\n{"name": NAME, "arguments": ARGS}\\nCLOSE, Hermes-style;
    NAME one of the tools' (or `required_name`), ARGS valid for that function's `parameters`. Functions that are
    not marked strict get their schemas enforced leniently (keywords the grammar cannot enforce are ignored)."""
    functions = [_function(tool) for tool in tools]
    if required_name is not None:
        functions = [f for f in functions if f["name"] == required_name]
    if not functions:
        wanted = f"`{required_name}` " if required_name else ""
        raise DanluError(f"tools 中没有要调用的函数 {wanted}/ no function {wanted}to call among the tools")
    spec = {"functions": functions, "open": open_tag, "close": close_tag, "parallel": parallel,
            "name_key": name_key, "arguments_key": arguments_key}
    return _checked(Constraint("tool_calls", json.dumps(spec, ensure_ascii=False), after=after))


def _function(tool: dict) -> dict:
    """An OpenAI tool ({"type": "function", "function": {...}}) or a bare function, as name/parameters/strict."""
    fn = tool.get("function", tool) if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise DanluError("每个工具都需要函数名 / every tool needs a function name")
    parameters = fn.get("parameters") or {"type": "object"}
    if not isinstance(parameters, dict):
        raise DanluError(f"工具 {fn['name']} 的 parameters 必须是对象 / parameters of {fn['name']} must be an object")
    return {"name": fn["name"], "parameters": parameters, "strict": fn.get("strict") is True}


# --- grammar text -------------------------------------------------------------------------------
def _start(body: list[str], lead: bool) -> str:
    head = "start: " + ("LEAD? " if lead else "") + " ".join(body) + "\n"
    return head + (f"LEAD: {LEAD}\n" if lead else "")


def _json_block(schema: dict, strict: bool) -> str:
    options = {"whitespace_pattern": JSON_WHITESPACE, "lenient": not strict}
    return "%json " + json.dumps({**schema, "x-guidance": options}, ensure_ascii=False)


def _tool_call_grammar(spec: dict, token_id: TokenId, lead: bool) -> str:
    calls = ["call", '("\\n" call)*'] if spec["parallel"] else ["call"]
    lines = [_start(calls, lead), 'call: open "\\n" body "\\n" close',
             f"open: {_tag(spec['open'], token_id)}", f"close: {_tag(spec['close'], token_id)}",
             "body: " + " | ".join(f"fn{i}" for i in range(len(spec["functions"])))]
    for i, fn in enumerate(spec["functions"]):
        lines.append(f"fn{i}: {_json_block(_call_schema(fn, spec['name_key'], spec['arguments_key']), fn['strict'])}")
    return "\n".join(lines) + "\n"


def _tag(text: str, token_id: TokenId) -> str:
    literal = json.dumps(text, ensure_ascii=False)
    token = token_id(text)
    return f"({literal} | <[{token}]>)" if token is not None else literal


def _call_schema(fn: dict, name_key: str, arguments_key: str) -> dict:
    """{"name": const, "arguments": parameters}; the parameters' local $refs are re-rooted under arguments."""
    return {"type": "object", "properties": {name_key: {"const": fn["name"]},
                                             arguments_key: _reroot(fn["parameters"], f"/properties/{arguments_key}")},
            "required": [name_key, arguments_key], "additionalProperties": False}


def _reroot(node: Any, prefix: str) -> Any:
    if isinstance(node, list):
        return [_reroot(x, prefix) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _reroot(v, prefix) for k, v in node.items()}
    if isinstance(out.get("$ref"), str) and out["$ref"].startswith("#"):
        out["$ref"] = "#" + prefix + out["$ref"][1:]
    return out


# --- checking ------------------------------------------------------------------------------------
def _checked(constraint: Constraint) -> Constraint:
    """Compile the grammar once (no vocabulary needed): a bad schema fails here, with the keyword named."""
    from llguidance import LLMatcher

    error = LLMatcher.validate_grammar(LLMatcher.grammar_from_lark(constraint.grammar()))
    if error:
        raise grammar_error(error)
    return constraint


def grammar_error(message: str) -> DanluError:
    """llguidance's compile error as a DanluError; unimplemented keywords become UnsupportedSchema."""
    first = message.strip().splitlines()[0] if message.strip() else message
    if keys := re.search(r"Unimplemented keys: (\[.*?\])", first):
        return UnsupportedSchema(json.loads(keys.group(1))[0])
    if fmt := re.search(r"Unknown format: (\S+)", first):
        return UnsupportedSchema("format", fmt.group(1))
    detail = first.split("failed to compile JSON schema: ")[-1]
    return DanluError(f"约束无法编译 / the output constraint does not compile: {detail}")
