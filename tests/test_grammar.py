"""Constraints and their grammars (danlu/outputs/grammar.py, guide.py), on a real tokenizer, no weights.

A constraint is checked the way an engine uses it: a text is tokenized, every token must be allowed by the
Guide and accepted, and the grammar must be satisfied at the end. The tokenizer is a byte-level BPE trained
here (tests/tiny_models.py), read by llguidance exactly as a real model's would be.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

import tiny_models as tm
from danlu.backends.hf.grammar import hf_guides
from danlu.errors import DanluError
from danlu.outputs import grammar
from danlu.outputs.grammar import UnsupportedSchema

SPECIALS = ("<|endoftext|>", "<tool_call>", "</tool_call>")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tm.byte_bpe_tokenizer(tmp_path_factory.mktemp("bpe"), specials=SPECIALS, extra_texts=['{"name": "x"}'])


@pytest.fixture(scope="module")
def guides(tokenizer):
    eos = {tokenizer.eos_token_id}
    return hf_guides(tokenizer, eos, lambda t: tokenizer.decode([t]).encode("utf-8"), len(tokenizer))


def fits(guides, tokenizer, constraint, text: str) -> bool:
    """Whether the Guide lets exactly this text through and is satisfied at its end."""
    guide = guides.start(constraint)
    for token in tokenizer.encode(text, add_special_tokens=False):
        if not guide.allows(token):
            return False
        guide.accept(token)
    return guide.active and guide.matcher.accepting()


class Colour(str, Enum):
    red = "红"
    green = "绿"


class Address(BaseModel):
    city: str
    street: str | None = None


class Person(BaseModel):
    name: str
    age: int
    colour: Colour
    addresses: list[Address]


def strict_schema(model: type[BaseModel]) -> dict:
    """What `client.chat.completions.parse(response_format=Model)` sends: $defs/$ref, all required, no extras."""
    from openai.lib._pydantic import to_strict_json_schema

    return to_strict_json_schema(model)


# --- JSON -------------------------------------------------------------------------------------
def test_json_object_takes_any_object_and_nothing_else(guides, tokenizer):
    c = grammar.json_object()
    assert fits(guides, tokenizer, c, '{"a": [1, 2, {"b": null}], "中文": "你好"}')
    assert fits(guides, tokenizer, c, "{}")
    assert not fits(guides, tokenizer, c, "[1, 2]")
    assert not fits(guides, tokenizer, c, 'Sure! {"a": 1}')
    assert not fits(guides, tokenizer, c, '{"a": 1')


def test_nested_objects_and_arrays_follow_the_schema(guides, tokenizer):
    schema = {"type": "object", "properties": {
        "user": {"type": "object", "properties": {"id": {"type": "integer"}, "tags": {
            "type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2}},
            "required": ["id", "tags"], "additionalProperties": False}},
        "required": ["user"], "additionalProperties": False}
    c = grammar.json_schema(schema)
    assert fits(guides, tokenizer, c, '{"user": {"id": 7, "tags": ["a", "b"]}}')
    assert not fits(guides, tokenizer, c, '{"user": {"id": 7, "tags": []}}')  # minItems
    assert not fits(guides, tokenizer, c, '{"user": {"id": 7, "tags": ["a", "b", "c"]}}')  # maxItems
    assert not fits(guides, tokenizer, c, '{"user": {"id": "7", "tags": ["a"]}}')  # type
    assert not fits(guides, tokenizer, c, '{"user": {"id": 7, "tags": ["a"], "x": 1}}')  # additionalProperties


def test_enums_consts_and_ranges_are_enforced(guides, tokenizer):
    schema = {"type": "object", "properties": {"city": {"enum": ["北京", "上海"]}, "v": {"const": 2},
                                               "n": {"type": "integer", "minimum": 1, "maximum": 9},
                                               "s": {"type": "string", "minLength": 2, "maxLength": 3}},
              "required": ["city", "v", "n", "s"], "additionalProperties": False}
    c = grammar.json_schema(schema)
    assert fits(guides, tokenizer, c, '{"city": "上海", "v": 2, "n": 9, "s": "你好"}')
    assert not fits(guides, tokenizer, c, '{"city": "广州", "v": 2, "n": 9, "s": "你好"}')
    assert not fits(guides, tokenizer, c, '{"city": "北京", "v": 3, "n": 9, "s": "你好"}')
    assert not fits(guides, tokenizer, c, '{"city": "北京", "v": 2, "n": 10, "s": "你好"}')
    assert not fits(guides, tokenizer, c, '{"city": "北京", "v": 2, "n": 1, "s": "你好世界"}')


def test_chinese_strings_pass_whole(guides, tokenizer):
    schema = {"type": "object", "properties": {"诗": {"type": "string", "pattern": "^[\u4e00-\u9fff，。]+$"}},
              "required": ["诗"], "additionalProperties": False}
    c = grammar.json_schema(schema)
    assert fits(guides, tokenizer, c, '{"诗": "春眠不觉晓，处处闻啼鸟。"}')
    assert not fits(guides, tokenizer, c, '{"诗": "spring"}')


def test_pydantic_models_strict_schema_with_refs_is_enforced(guides, tokenizer):
    schema = strict_schema(Person)
    assert "$defs" in schema and schema["additionalProperties"] is False
    c = grammar.json_schema(schema)
    good = {"name": "张三", "age": 30, "colour": "红", "addresses": [{"city": "北京", "street": None}]}
    assert fits(guides, tokenizer, c, json.dumps(good, ensure_ascii=False))
    bad = {**good, "colour": "蓝"}
    assert not fits(guides, tokenizer, c, json.dumps(bad, ensure_ascii=False))
    missing = {k: v for k, v in good.items() if k != "age"}
    assert not fits(guides, tokenizer, c, json.dumps(missing, ensure_ascii=False))
    assert Person.model_validate_json(json.dumps(good))  # the example really is a Person


def test_plain_pydantic_schema_also_compiles(guides, tokenizer):
    c = grammar.json_schema(Person.model_json_schema())
    assert fits(guides, tokenizer, c, '{"name": "a", "age": 1, "colour": "绿", "addresses": [{"city": "x"}]}')


def test_whitespace_is_bounded(guides, tokenizer):
    c = grammar.json_object()
    assert fits(guides, tokenizer, c, '{\n  "a": 1\n}')
    assert not fits(guides, tokenizer, c, "{" + "\n" * 5 + '"a": 1}')


@pytest.mark.parametrize("keyword, schema", [
    ("not", {"type": "object", "not": {"required": ["a"]}}),
    ("uniqueItems", {"type": "array", "uniqueItems": True}),
    ("contains", {"type": "array", "contains": {"type": "integer"}}),
    ("if", {"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}),
    ("propertyNames", {"type": "object", "properties": {"a": {"type": "object", "propertyNames": {"maxLength": 2}}}}),
    ("format", {"type": "string", "format": "no-such-format"}),
])
def test_unsupported_keyword_is_named(keyword, schema):
    with pytest.raises(UnsupportedSchema) as caught:
        grammar.json_schema(schema)
    assert caught.value.keyword == keyword
    assert f"`{keyword}`" in str(caught.value)


def test_not_strict_ignores_what_it_cannot_enforce(guides, tokenizer):
    c = grammar.json_schema({"type": "object", "not": {"required": ["a"]}}, strict=False)
    assert fits(guides, tokenizer, c, '{"a": 1}')


def test_broken_schemas_and_grammars_are_danlu_errors():
    with pytest.raises(DanluError, match="does not compile"):
        grammar.json_schema({"$ref": "#/$defs/Missing"})
    with pytest.raises(DanluError):
        grammar.json_schema(["not", "a", "schema"])  # type: ignore[arg-type]
    with pytest.raises(DanluError, match="GBNF"):
        grammar.gbnf("root ::= (")


def test_gbnf_grammar_is_enforced(guides, tokenizer):
    c = grammar.gbnf('root ::= answer " " num\nanswer ::= "是" | "否"\nnum ::= [0-9]{1,2}\n')
    assert fits(guides, tokenizer, c, "是 42")
    assert not fits(guides, tokenizer, c, "也许 42")


def test_constraint_is_plain_comparable_data():
    a, b = grammar.json_schema({"type": "integer"}), grammar.json_schema({"type": "integer"})
    assert a == b and a.schema == {"type": "integer"}
    assert a.starting_after("</think>").after == "</think>" and a.after is None


# --- tool calls ---------------------------------------------------------------------------------
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def call(name: str, arguments: dict, open_tag="<tool_call>", close_tag="</tool_call>") -> str:
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{open_tag}\n{body}\n{close_tag}"


def test_tool_call_names_a_tool_and_its_arguments_match(guides, tokenizer):
    c = grammar.tool_calls([WEATHER, TIME])
    assert fits(guides, tokenizer, c, call("get_weather", {"city": "北京"}))
    assert fits(guides, tokenizer, c, call("get_time", {}))
    assert not fits(guides, tokenizer, c, call("get_stock", {}))
    assert not fits(guides, tokenizer, c, call("get_weather", {"town": "北京"}))
    assert not fits(guides, tokenizer, c, "我来查一下。" + call("get_weather", {"city": "北京"}))


def test_required_name_allows_only_that_function(guides, tokenizer):
    c = grammar.tool_calls([WEATHER, TIME], required_name="get_time")
    assert fits(guides, tokenizer, c, call("get_time", {}))
    assert not fits(guides, tokenizer, c, call("get_weather", {"city": "北京"}))
    with pytest.raises(DanluError, match="get_stock"):
        grammar.tool_calls([WEATHER], required_name="get_stock")


def test_parallel_allows_several_calls_only_when_asked(guides, tokenizer):
    two = call("get_weather", {"city": "北京"}) + "\n" + call("get_time", {})
    assert fits(guides, tokenizer, grammar.tool_calls([WEATHER, TIME], parallel=True), two)
    assert not fits(guides, tokenizer, grammar.tool_calls([WEATHER, TIME]), two)


def test_tags_and_keys_are_parameters(guides, tokenizer):
    c = grammar.tool_calls([WEATHER], open_tag="<|fn|>", close_tag="<|end|>", name_key="function",
                           arguments_key="parameters")
    text = '<|fn|>\n{"function": "get_weather", "parameters": {"city": "上海"}}\n<|end|>'
    assert fits(guides, tokenizer, c, text)
    assert not fits(guides, tokenizer, c, call("get_weather", {"city": "上海"}))


def test_tool_tag_that_is_one_special_token_is_accepted_as_that_token(guides, tokenizer):
    (open_id,) = tokenizer.encode("<tool_call>", add_special_tokens=False)
    assert guides.tokenizer().is_special_token(open_id)
    assert fits(guides, tokenizer, grammar.tool_calls([TIME]), call("get_time", {}))


def test_parameters_with_refs_are_rerooted_under_arguments(guides, tokenizer):
    tool = {"name": "add_person", "parameters": strict_schema(Person), "strict": True}
    good = {"name": "李四", "age": 5, "colour": "绿", "addresses": []}
    assert fits(guides, tokenizer, grammar.tool_calls([tool]), call("add_person", good))
    assert not fits(guides, tokenizer, grammar.tool_calls([tool]), call("add_person", {**good, "colour": "蓝"}))


def test_lenient_unless_the_function_is_strict():
    loose = {"name": "f", "parameters": {"type": "object", "not": {}}}
    assert grammar.tool_calls([loose]).kind == "tool_calls"
    with pytest.raises(UnsupportedSchema, match="not"):
        grammar.tool_calls([{**loose, "strict": True}])


# --- the guide ----------------------------------------------------------------------------------
def test_after_trigger_leaves_text_before_it_free(guides, tokenizer):
    c = grammar.json_object(after="</think>")
    assert fits(guides, tokenizer, c, '<think>用户要一个对象。</think>\n\n{"ok": true}')
    assert not fits(guides, tokenizer, c, "<think>嗯</think>\n\n好的")
    guide = guides.start(c)
    assert not guide.active and guide.allows(tokenizer.encode("好")[0])


def test_end_token_is_allowed_only_when_the_grammar_is_satisfied(guides, tokenizer):
    eos = tokenizer.eos_token_id
    guide = guides.start(grammar.json_schema({"type": "array", "items": {"type": "integer"}}))
    for token in tokenizer.encode("[1", add_special_tokens=False):
        guide.accept(token)
    assert not guide.allows(eos) and not guide.allowed_mask(len(tokenizer))[eos]
    guide.accept(tokenizer.encode("]", add_special_tokens=False)[0])
    assert guide.complete  # nothing can follow a closed top-level array: the engine ends the reply here


def test_mask_sets_refused_logits_to_minus_infinity(guides, tokenizer):
    guide = guides.start(grammar.json_object())
    logits = np.zeros(len(tokenizer) + 3, dtype=np.float32)  # wider than the tokenizer, as Qwen2's head is
    guide.mask(logits)
    brace = tokenizer.encode("{", add_special_tokens=False)[0]
    assert logits[brace] == 0 and np.isinf(logits[-3:]).all()
    assert np.isinf(logits).sum() == len(logits) - np.isfinite(logits).sum() > 0


def test_slow_tokenizer_is_refused_naming_the_backend(tmp_path):
    from transformers import BertTokenizer

    tm.bert_char_tokenizer(tmp_path)
    slow = BertTokenizer(str(Path(tmp_path) / "vocab.txt"))
    guides = hf_guides(slow, {3}, lambda t: b"", len(slow))
    with pytest.raises(DanluError, match="transformers backend cannot enforce"):
        guides.start(grammar.json_object())
