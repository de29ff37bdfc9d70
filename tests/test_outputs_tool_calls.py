"""Tool-call parsers: every protocol's replies give the same content and calls however the stream is cut, the
deltas arrive in OpenAI's shape (index, id and name first, then arguments) and the official SDK assembles them,
Chinese arguments come back intact, and a call the model got wrong comes back as content, never an exception."""

from __future__ import annotations

import json

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from stream_cuts import every_cut

from danlu.errors import DanluError
from danlu.outputs.tool_calls import (
    Parsed,
    ToolCallDelta,
    get_tool_parser,
    parse_tool_calls,
    tool_names,
    tool_parser_names,
)
from danlu.outputs.glm_calls import tool_call_keywords

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "查询城市天气",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
TOOLS = [WEATHER, TIME]


def run(protocol: str, pieces: list[str], tools=TOOLS, seed: int = 3):
    parser = get_tool_parser(protocol)(tools, seed=seed)
    total = Parsed()
    for piece in pieces:
        total += parser.feed(piece)
    total += parser.flush()
    return total, parser.calls


def summary(total: Parsed, calls) -> tuple[str, list[tuple[str, dict]]]:
    return total.content, [(call.name, json.loads(call.arguments)) for call in calls]


def assemble(deltas: list[ToolCallDelta]) -> list[dict]:
    """What a client does with the stream: the first delta of a call opens it, later ones append arguments."""
    calls: dict[int, dict] = {}
    for delta in deltas:
        if delta.index not in calls:
            assert delta.id and delta.id.startswith("call_") and delta.name and delta.arguments == ""
            calls[delta.index] = {"id": delta.id, "name": delta.name, "arguments": ""}
        else:
            assert delta.id is None and delta.name is None
            calls[delta.index]["arguments"] += delta.arguments
    return [calls[index] for index in sorted(calls)]


def call(name, **arguments):
    return name, arguments


def verbatim(text):
    """A reply with no call in it: all of it is content, as written."""
    return text, text, []


HERMES = [
    ("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"北京\"}}\n</tool_call>",
     "", [call("get_weather", city="北京")]),
    ("我来查一下北京和上海的天气。\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"北京\", \"days\": 2}}"
     "\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"上海\"}}\n</tool_call>",
     "我来查一下北京和上海的天气。", [call("get_weather", city="北京", days=2), call("get_weather", city="上海")]),
    ("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"深圳\\\"}\"}\n</tool_call>",
     "", [call("get_weather", city="深圳")]),  # arguments written as a JSON string
    ("<tool_call>\n{\"name\": \"get_time\"}\n</tool_call>", "", [call("get_time")]),
    ("北京今天晴，25°C。", "北京今天晴，25°C。", []),
    ("比较 a<b 和 <tool_c 这些文字", "比较 a<b 和 <tool_c 这些文字", []),
    # broken: invalid JSON, unknown function, no closing tag, arguments not an object
    ("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": 北京}}\n</tool_call>",
     "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": 北京}}\n</tool_call>", []),
    ("<tool_call>\n{\"name\": \"rm_rf\", \"arguments\": {}}\n</tool_call>",
     "<tool_call>\n{\"name\": \"rm_rf\", \"arguments\": {}}\n</tool_call>", []),
    ("好的<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"北京\"}}",
     "好的<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"北京\"}}", []),
    ("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": [1]}\n</tool_call>",
     "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": [1]}\n</tool_call>", []),
    # one good, one broken: the good one is a call, the broken one content
    ("<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{oops}\n</tool_call>",
     "<tool_call>\n{oops}\n</tool_call>", [call("get_time")]),
]

QWEN_FENCED = '```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "city": "北京"\n  }\n}\n```'
PY_BLOCK = '看这段代码：\n```python\nconfig = {"name": "get_weather", "arguments": {}}\nprint(config["name"])\n```\n运行即可。'

# The "good bad" forms llama.cpp's Hermes-2-Pro parser accepts besides <tool_call>.
HERMES_FORMS = [
    (QWEN_FENCED, "", [call("get_weather", city="北京")]),  # what qwen2.5-coder-1.5b-instruct writes
    ('```\n{"name": "get_time", "arguments": {}}\n```', "", [call("get_time")]),
    ('```xml\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "上海"}}\n</tool_call>\n```', "",
     [call("get_weather", city="上海")]),
    ('```json\n  <tools>\n{"name": "get_weather", "parameters": {"city": "杭州"}}\n</tools>\n```', "",
     [call("get_weather", city="杭州")]),
    ('<response> {"name": "get_time"} </response>', "", [call("get_time")]),
    ('{"name": "get_weather", "arguments": {"city": "成都", "days": 3}}', "", [call("get_weather", city="成都", days=3)]),
    ('<function=get_weather>{"city": "上海", "days": 2}</function>', "", [call("get_weather", city="上海", days=2)]),
    ('<function name="get_time">\n{}\n</function>', "", [call("get_time")]),
    ("好的，我查一下。\n" + QWEN_FENCED + "\n请稍候。", "好的，我查一下。请稍候。", [call("get_weather", city="北京")]),
    # several in a row, every form mixed
    ('<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n' + QWEN_FENCED +
     '\n<function=get_weather>{"city": "广州"}</function>\n<JSON>{"name": "get_time"}</JSON>', "",
     [call("get_time"), call("get_weather", city="北京"), call("get_weather", city="广州"), call("get_time")]),
    # not a call: the whole text, fence and all, is content as written
    verbatim('```json\n{"name": "search_web", "arguments": {"q": "天气"}}\n```'),  # not one of the request's tools
    verbatim('```json\n{"city": "北京", "temp": 25}\n```'),  # a JSON answer
    verbatim('```json\n{"name": "get_weather", "arguments": {"city": 北京}}\n```'),  # broken JSON
    verbatim('```json\n{"name": "get_weather", "arguments": {"city": "北京"}}\n'),  # the fence never closes
    verbatim('```json\n{"name": "get_time"}\n还有\n```'),  # more than the call inside the fence
    verbatim('<json>{"name": "get_time"}</tools>'),  # the wrong close tag
    verbatim('<function=rm_rf>{"path": "/"}</function>'),
    verbatim('<function=get_weather>北京</function>'),
    verbatim('<function=get_weather>{"city": "北京"}'),
    verbatim('```json\n{"name": "get_weather", "arguments": [1]}\n```'),
    verbatim(PY_BLOCK),  # a dict in someone's code stays code
    verbatim("用 `{x}` 和 a<b、``` 这些符号"),
    ('```python\nprint(1)\n```\n' + QWEN_FENCED, "```python\nprint(1)\n```", [call("get_weather", city="北京")]),
]

LLAMA3 = [
    ('{"name": "get_weather", "parameters": {"city": "北京"}}', "", [call("get_weather", city="北京")]),
    ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "杭州", "days": 3}}', "",
     [call("get_weather", city="杭州", days=3)]),
    ('{"type": "function", "name": "get_time", "parameters": {}}; {"name": "get_weather", "parameters": {"city": "上海"}}',
     "", [call("get_time"), call("get_weather", city="上海")]),
    ('  \n{"name": "get_weather", "arguments": {"city": "{brace} \\"quoted\\" 城"}}', "",
     [call("get_weather", city='{brace} "quoted" 城')]),
    ('{"answer": 42, "unit": "km"}', '{"answer": 42, "unit": "km"}', []),  # JSON that is not a call
    ('北京今天晴。{"name": "get_weather"} 只是举例', '北京今天晴。{"name": "get_weather"} 只是举例', []),
    ('先说明一下。<|python_tag|>{"name": "get_weather", "parameters": {"city": "北京"}}', "先说明一下。",
     [call("get_weather", city="北京")]),
    ('{"name": "get_weather", "parameters": {"city": "北京"', '{"name": "get_weather", "parameters": {"city": "北京"', []),
    ('{"name": "launch", "parameters": {}}', '{"name": "launch", "parameters": {}}', []),
    ('<|python_tag|>brave_search.call(query="天气")', '<|python_tag|>brave_search.call(query="天气")', []),
]

CHATGLM3 = [
    ("get_weather\n```python\ntool_call(city=\"北京\", days=3)\n```", "", [call("get_weather", city="北京", days=3)]),
    ("\n 北京今天晴。", "北京今天晴。", []),
    ("\n好的，我先查一下。<|assistant|>get_weather\n ```python\ntool_call(city='上海')\n```", "好的，我先查一下。",
     [call("get_weather", city="上海")]),
    ("get_time\n```python\ntool_call()\n```<|observation|>", "", [call("get_time")]),
    ("get_weather\n```python\ntool_call(city=__import__('os').system('rm -rf /'))\n```",
     "get_weather\n```python\ntool_call(city=__import__('os').system('rm -rf /'))\n```", []),  # never evaluated
    ("get_weather\n```python\ntool_call(city=\"北京\"\n```", "get_weather\n```python\ntool_call(city=\"北京\"\n```", []),
    ("get_weather\n```python\ntool_call(city=\"北京\")", "get_weather\n```python\ntool_call(city=\"北京\")", []),
    ("unknown_fn\n```python\ntool_call()\n```", "unknown_fn\n```python\ntool_call()\n```", []),
    ("Hello there, 你好", "Hello there, 你好", []),  # no metadata line at all
    ("get_weather 很好用\n是的", "get_weather 很好用\n是的", []),
]

GLM4 = [
    ('get_weather\n{"city": "北京"}', "", [call("get_weather", city="北京")]),
    ('get_weather\n {"city": "北京", "note": "}{"}\n', "", [call("get_weather", city="北京", note="}{")]),
    ('get_weather\n{"city": "北京", "days": 1}<|assistant|>get_time\n{}', "",
     [call("get_weather", city="北京", days=1), call("get_time")]),
    ("\n北京今天晴。", "北京今天晴。", []),
    ('\n让我查查。<|assistant|>get_weather\n{"city": "广州"}<|observation|>', "让我查查。", [call("get_weather", city="广州")]),
    ('get_weather\n{"city": 北京}', 'get_weather\n{"city": 北京}', []),
    ('get_weather\n查不到', 'get_weather\n查不到', []),
    ('get_weather\n{"city": "北京"', 'get_weather\n{"city": "北京"', []),
    ('shell\n{"cmd": "ls"}', 'shell\n{"cmd": "ls"}', []),
]

PROTOCOL_CASES = [("hermes", *c) for c in HERMES + HERMES_FORMS] + [("llama3-json", *c) for c in LLAMA3] + \
    [("chatglm3", *c) for c in CHATGLM3] + [("glm4", *c) for c in GLM4]


@pytest.mark.parametrize("protocol,text,content,calls", PROTOCOL_CASES)
def test_reply_parses_the_same_however_it_is_cut(protocol, text, content, calls):
    whole, whole_calls = run(protocol, [text])
    assert summary(whole, whole_calls) == (content, calls)
    for pieces in every_cut(text, seed=len(text), rounds=25):
        total, parsed = run(protocol, pieces)
        assert summary(total, parsed) == (content, calls), pieces
        assert parsed == whole_calls  # same seed, same ids
        assert assemble(total.calls) == [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in parsed]


@pytest.mark.parametrize("protocol,text,content,calls", PROTOCOL_CASES)
def test_parse_tool_calls_reads_whole_replies(protocol, text, content, calls):
    parsed_content, parsed = parse_tool_calls(text, protocol, TOOLS, seed=1)
    assert (parsed_content, [(c.name, json.loads(c.arguments)) for c in parsed]) == (content, calls)


def test_arguments_are_compact_json_with_chinese_intact():
    _, calls = parse_tool_calls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京", "days": 2}}\n'
                                "</tool_call>", "hermes", TOOLS)
    assert calls[0].arguments == '{"city":"北京","days":2}'


def test_raw_markup_never_leaks_into_content_of_valid_calls():
    text = '先查北京。\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>\n'
    for pieces in every_cut(text):
        total, _ = run("hermes", pieces)
        assert total.content == "先查北京。"
        assert "<tool" not in total.content and "tool_call" not in total.content


def test_content_streams_before_a_call_is_complete():
    parser = get_tool_parser("hermes")(TOOLS, seed=0)
    assert parser.feed("我来查一下。\n<tool_").content == "我来查一下。"
    held = parser.feed('call>\n{"name": "get_weather", "arguments": {"city": "北')
    assert held.content == "" and held.calls == []  # the call is buffered until it is complete and valid
    done = parser.feed('京"}}\n</tool_call>')
    assert [d.name for d in done.calls if d.name] == ["get_weather"]
    assert done.calls[0].arguments == "" and done.calls[1].arguments == '{"city":"北京"}'


def test_ids_are_random_without_a_seed_and_repeatable_with_one():
    text = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    first, second = parse_tool_calls(text, "hermes")[1][0].id, parse_tool_calls(text, "hermes")[1][0].id
    assert first != second and len(first) == len("call_") + 24 and int(first[5:], 16) >= 0
    assert parse_tool_calls(text, "hermes", seed=9)[1][0].id == parse_tool_calls(text, "hermes", seed=9)[1][0].id


def test_any_function_name_is_accepted_when_no_tools_are_given():
    _, calls = parse_tool_calls('<tool_call>\n{"name": "anything", "arguments": {}}\n</tool_call>', "hermes", None)
    assert [c.name for c in calls] == ["anything"]


def test_openai_sdk_assembles_the_streamed_deltas():
    text = ('我来查询。\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
    state = ChatCompletionStreamState()
    parser = get_tool_parser("hermes")(TOOLS, seed=5)
    for pieces in (list(text), ["<flush>"]):
        for piece in pieces:
            part = parser.flush() if piece == "<flush>" else parser.feed(piece)
            delta = {"role": "assistant", "content": part.content or None,
                     "tool_calls": [d.to_openai() for d in part.calls] or None}
            state.handle_chunk(_chunk(delta, None))
    state.handle_chunk(_chunk({}, "tool_calls"))
    message = state.get_final_completion().choices[0].message
    assert message.content == "我来查询。"
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == \
        [(c.id, c.name, c.arguments) for c in parser.calls]
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "北京"}


def _chunk(delta: dict, finish_reason):
    return ChatCompletionChunk.model_validate({
        "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": "danlu",
        "choices": [{"index": 0, "delta": {k: v for k, v in delta.items() if v is not None},
                     "finish_reason": finish_reason}]})


def test_tool_call_keywords_takes_literals_only():
    assert tool_call_keywords('tool_call(city="北京", days=3, flags=[True, None], extra={"a": 1.5})') == \
        {"city": "北京", "days": 3, "flags": [True, None], "extra": {"a": 1.5}}
    for code in ["tool_call(city=os.getcwd())", "tool_call('北京')", "tool_call(**kw)", "other(city='x')",
                 "tool_call(city=1+1j)", "tool_call(", "tool_call(city=(lambda: 1)())", "x" * 10 + "(" * 500]:
        assert tool_call_keywords(code) is None, code


def test_tool_names_reads_openai_tools_bare_functions_and_names():
    assert tool_names(TOOLS) == {"get_weather", "get_time"}
    assert tool_names([{"name": "f"}, "g"]) == {"f", "g"}
    assert tool_names(None) is None


def test_delta_to_openai_shape():
    assert ToolCallDelta(0, "call_x", "f", "").to_openai() == \
        {"index": 0, "id": "call_x", "type": "function", "function": {"name": "f", "arguments": ""}}
    assert ToolCallDelta(0, arguments='{"a":1}').to_openai() == {"index": 0, "function": {"arguments": '{"a":1}'}}


def test_registry_lists_protocols_and_refuses_unknown_names_bilingually():
    assert {"hermes", "llama3-json", "chatglm3", "glm4"} <= set(tool_parser_names())
    with pytest.raises(DanluError, match="unknown tool-call protocol 'nope'"):
        get_tool_parser("nope")


def test_qwen3_thinking_then_a_call_composes_with_the_reasoning_splitter():
    from danlu.outputs.reasoning import get_reasoning

    text = ('<think>\n用户问北京天气，需要调用 get_weather。\n</think>\n\n'
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>')
    for pieces in every_cut(text, rounds=15):
        splitter, parser = get_reasoning("think")(), get_tool_parser("hermes")(TOOLS, seed=1)
        reasoning, content = "", ""
        for piece in [*pieces, None]:
            split = splitter.flush() if piece is None else splitter.feed(piece)
            reasoning += split.reasoning
            parsed = parser.feed(split.content) + (parser.flush() if piece is None else Parsed())
            content += parsed.content
        assert reasoning == "用户问北京天气，需要调用 get_weather。" and content == ""
        assert [(c.name, c.arguments) for c in parser.calls] == [("get_weather", '{"city":"北京"}')]


@pytest.mark.parametrize("tag", ["<function_call>", "<tool>", "<tools>", "<response>", "<json>", "<xml>", "<JSON>"])
@pytest.mark.parametrize("fence", ["", "```\n", "```json\n", "```xml\n"])
def test_every_tag_and_fence_llama_cpp_accepts_is_a_call(tag, fence):
    text = f'{fence}{tag}\n{{"name": "get_weather", "arguments": {{"city": "西安"}}}}\n</{tag[1:]}'
    text += "\n```" if fence else ""
    for pieces in [[text], *every_cut(text, seed=len(text), rounds=3)]:
        assert summary(*run("hermes", pieces)) == ("", [call("get_weather", city="西安")]), pieces


def test_code_blocks_stream_on_with_nothing_held_but_a_possible_fence():
    """A Python block is content at once: all that is held back is a "<" or up to three backticks (they may
    still open a call) and the whitespace the base class keeps until it knows no call follows."""
    text = "示例：\n```python\ndef f(x):\n    return {\"a\": x < 3}\n```\n````\n完毕。"
    parser, shown = get_tool_parser("hermes")(TOOLS), ""
    for index, char in enumerate(text):
        shown += parser.feed(char).content
        held = text[:index + 1][len(shown):]
        assert text.startswith(shown) and held.lstrip(" \n") in ("", "<", "`", "``", "```"), (shown, held)
    assert shown + parser.flush().content == text


@pytest.mark.parametrize("text,shown_at", [
    ('```json\n{\n  "city": "北京"}', len('```json\n{\n  "c')),  # a JSON answer: out at its first key
    ('```json\n{"name": "search", "q": 1}', len('```json\n{"name": "s')),  # a name no tool starts with
    ('<json>\n[1, 2]', len("<json>\n[")),
    ('```\nimport os', len("```\ni")),
    ('<function=shell>ls -l', len("<function=s")),
])
def test_text_is_held_only_while_it_may_still_become_a_call(text, shown_at):
    parser, shown = get_tool_parser("hermes")(TOOLS), ""
    for index, char in enumerate(text):
        shown += parser.feed(char).content
        assert shown == ("" if index + 1 < shown_at else text[:index + 1].rstrip()), shown


def test_a_call_that_may_still_come_is_held_until_it_is_complete():
    parser = get_tool_parser("hermes")(TOOLS, seed=0)
    assert parser.feed("好的。\n```json\n").content == "好的。"
    assert parser.feed('{"name": "get_w').content == ""
    held = parser.feed('eather", "arguments": {"city": "北京"}}\n')
    assert held.content == "" and held.calls == []  # the closing fence decides
    done = parser.feed("```")
    assert done.content == "" and [d.name for d in done.calls] == ["get_weather", None]
    assert done.calls[1].arguments == '{"city":"北京"}' and parser.flush().content == ""


def test_fenced_calls_take_any_name_when_no_tools_are_given():
    _, calls = parse_tool_calls('```json\n{"name": "anything", "arguments": {"k": "值"}}\n```', "hermes", None)
    assert [(c.name, c.arguments) for c in calls] == [("anything", '{"k":"值"}')]


def test_match_head_tells_not_yet_from_never():
    from danlu.outputs.hermes_calls import NEED_MORE, Head, match_head

    known = frozenset({"get_weather"})
    assert match_head('```json\n{"name": "get_', 0, known) == NEED_MORE
    assert match_head('```json\n{"name": "set_', 0, known) is None
    assert match_head("```jsonx", 0, known) is None and match_head("<tool", 0, known) == NEED_MORE
    assert match_head('说<tools>{"name": "get_weather", ', 1, known) == Head(Head.JSON, 7, "</tools>", False)
    assert match_head('<function name="get_weather">\n{', 0, known) == \
        Head(Head.ARGUMENTS, 30, "</function>", False, "get_weather")
    assert match_head("```\n" + " " * 500 + "{", 0, None) is None  # a call does not open with a page of blanks
