"""Engines keeping to constraints with real weights: llama.cpp batched and single-stream, transformers, RWKV.

gemma-3-270m carries most tests (fast); its schemas are bounded (enums, maxLength, maxItems) so a 270M model at
temperature 1 still finishes inside max_tokens. qwen2.5-coder-1.5b-instruct is used where instruction following
matters: any JSON object (unbounded, so the model itself has to close it) and a tool call through its
<tool_call> special token. The transformers tier uses a tiny random model and needs no weights.
"""

from __future__ import annotations

import json
import re
import threading

import jsonschema
import pytest

import tiny_models as tm
from danlu.backends.base import GenerationParams, LoadPlan, complete
from danlu.errors import DanluError
from danlu.outputs import grammar

GEMMA_TURN = "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n"
QWEN_TURN = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"

PET = {"type": "object", "properties": {
    "名字": {"type": "string", "maxLength": 12}, "年龄": {"type": "integer", "minimum": 0, "maximum": 30},
    "颜色": {"enum": ["黑色", "白色", "橘色"]}}, "required": ["名字", "年龄", "颜色"], "additionalProperties": False}
CITY = {"type": "object", "properties": {"城市": {"enum": ["北京", "上海", "广州", "深圳"]},
                                         "人口万": {"type": "integer", "minimum": 1, "maximum": 5000}},
        "required": ["城市", "人口万"], "additionalProperties": False}
TAGS = {"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["猫", "狗", "鱼"]},
                                                  "minItems": 1, "maxItems": 3}, "ok": {"type": "boolean"}},
        "required": ["tags", "ok"], "additionalProperties": False}
POEM = {"type": "object", "properties": {"诗句": {"type": "string", "pattern": "^[\u4e00-\u9fff，。]{2,16}$"}},
        "required": ["诗句"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "查询城市天气", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "description": "城市名", "maxLength": 10}},
    "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "现在几点", "parameters": {
    "type": "object", "properties": {}, "additionalProperties": False}}}


def _batched(path):
    from danlu.backends import llamacpp_batched

    return llamacpp_batched.load(None, None, LoadPlan(path, n_ctx=1024, n_threads=2))


@pytest.fixture(scope="session")
def gemma_batched(gemma_path):
    engine = _batched(gemma_path)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def qwen_batched(qwen_path):
    engine = _batched(qwen_path)
    yield engine
    engine.close()


def prompt(engine, turn: str, question: str) -> list[int]:
    return engine.tokenize(turn.format(question), special=True, add_bos=turn is GEMMA_TURN)


def constrained(engine, ids, constraint, seed=0, temperature=1.0, max_tokens=200) -> tuple[str, str]:
    params = GenerationParams(max_tokens=max_tokens, temperature=temperature, seed=seed, constraint=constraint)
    text, last = complete(engine, ids, params)
    return text, last.finish_reason


# --- llama.cpp, batched --------------------------------------------------------------------------
@pytest.mark.weights
def test_json_object_always_parses_at_temperature_one(qwen_batched):
    ids = prompt(qwen_batched, QWEN_TURN, "用一个 JSON 对象回答：中国的首都是哪里？")
    for seed in range(6):
        text, finish = constrained(qwen_batched, ids, grammar.json_object(), seed=seed)
        assert finish == "stop", text
        assert isinstance(json.loads(text), dict), text


@pytest.mark.weights
def test_schema_output_validates_at_temperature_one(gemma_batched):
    ids = prompt(gemma_batched, GEMMA_TURN, "用 JSON 描述一只猫：名字、年龄、颜色。")
    for seed in range(4):
        text, finish = constrained(gemma_batched, ids, grammar.json_schema(PET), seed=seed)
        assert finish == "stop", text
        jsonschema.validate(json.loads(text), PET)


@pytest.mark.weights
def test_schema_holds_with_penalties_in_the_chain(gemma_batched):
    """Penalties remember accepted tokens, so this takes the other path: a refused draw never reaches the chain."""
    ids = prompt(gemma_batched, GEMMA_TURN, "用 JSON 描述一只猫：名字、年龄、颜色。")
    params = GenerationParams(max_tokens=200, temperature=1.0, seed=1, repetition_penalty=1.3, presence_penalty=0.5,
                              constraint=grammar.json_schema(PET))
    text, last = complete(gemma_batched, ids, params)
    assert last.finish_reason == "stop", text
    jsonschema.validate(json.loads(text), PET)


@pytest.mark.weights
def test_four_schemas_in_one_batch_each_validate(gemma_batched):
    from danlu.backends.requests import SubmitOptions

    schemas = [PET, CITY, TAGS, POEM]
    ids = prompt(gemma_batched, GEMMA_TURN, "请用 JSON 回答。")
    texts, done, most_active = [[] for _ in schemas], threading.Semaphore(0), [0]

    def sink_for(i):
        def sink(event):
            assert event.error is None, event.error
            texts[i].append(event.chunk.text)
            most_active[0] = max(most_active[0], gemma_batched.load_info()["active"])
            if event.chunk.finish_reason:
                done.release()
        return sink

    for i, schema in enumerate(schemas):
        params = GenerationParams(max_tokens=200, temperature=1.0, seed=i, constraint=grammar.json_schema(schema))
        gemma_batched.submit(ids, params, sink_for(i), SubmitOptions())
    for _ in schemas:
        assert done.acquire(timeout=300)
    assert most_active[0] == 4  # all four were decoded in the same batch
    for schema, parts in zip(schemas, texts):
        jsonschema.validate(json.loads("".join(parts)), schema)


@pytest.mark.weights
def test_chinese_strings_in_values_come_back_intact(gemma_batched):
    ids = prompt(gemma_batched, GEMMA_TURN, "哪个城市最大？写一句诗。")
    for schema in (CITY, POEM):
        text, _ = constrained(gemma_batched, ids, grammar.json_schema(schema), seed=3)
        value = json.loads(text)
        jsonschema.validate(value, schema)
        assert "\ufffd" not in text
        assert re.search("[\u4e00-\u9fff]", next(v for v in value.values() if isinstance(v, str)))


@pytest.mark.weights
def test_tool_call_constraint_calls_the_required_function(qwen_batched):
    system = ("你可以调用工具。调用时输出 <tool_call>\n{\"name\": 函数名, \"arguments\": 参数}\n</tool_call>。工具：\n"
              + json.dumps([WEATHER, TIME], ensure_ascii=False))
    ids = qwen_batched.tokenize(f"<|im_start|>system\n{system}<|im_end|>\n" + QWEN_TURN.format("北京今天天气怎么样？"),
                                special=True)
    text, finish = constrained(qwen_batched, ids, grammar.tool_calls([WEATHER, TIME], required_name="get_weather"),
                               temperature=0.7)
    assert finish == "stop"
    body = re.fullmatch(r"<tool_call>\n(.*)\n</tool_call>", text, re.S)
    assert body, text
    called = json.loads(body.group(1))
    assert called["name"] == "get_weather"
    jsonschema.validate(called["arguments"], WEATHER["function"]["parameters"])
    assert "北京" in called["arguments"]["city"]


@pytest.mark.weights
def test_tool_call_with_tags_spelled_out_on_gemma(gemma_batched):
    ids = prompt(gemma_batched, GEMMA_TURN, "现在几点？")
    text, finish = constrained(gemma_batched, ids, grammar.tool_calls([WEATHER, TIME], required_name="get_time"))
    body = re.fullmatch(r"<tool_call>\n(.*)\n</tool_call>", text, re.S)
    assert finish == "stop" and body, text
    assert json.loads(body.group(1)) == {"name": "get_time", "arguments": {}}


@pytest.mark.weights
def test_a_bad_constraint_is_an_error_event_not_a_fault(gemma_batched):
    bogus = grammar.Constraint("json_schema", json.dumps({"type": "object", "not": {}}))  # skipped the builder
    with pytest.raises(DanluError, match="`not`"):
        constrained(gemma_batched, prompt(gemma_batched, GEMMA_TURN, "你好"), bogus)
    text, _ = complete(gemma_batched, prompt(gemma_batched, GEMMA_TURN, "你好"), GenerationParams(max_tokens=4))
    assert text  # the engine goes on serving


# --- llama.cpp, one stream (danlu run / chat) ------------------------------------------------------
@pytest.mark.weights
def test_single_stream_engine_keeps_to_a_schema(gemma_engine):
    ids = prompt(gemma_engine, GEMMA_TURN, "用 JSON 描述一只猫。")
    for seed in range(2):
        text, finish = constrained(gemma_engine, ids, grammar.json_schema(PET), seed=seed)
        assert finish == "stop"
        jsonschema.validate(json.loads(text), PET)
    free, _ = complete(gemma_engine, ids, GenerationParams(max_tokens=8, temperature=0))  # plain path still works
    assert free


@pytest.mark.weights
@pytest.mark.parametrize("engine_name", ["gemma_engine", "gemma_batched"])
def test_after_trigger_lets_free_text_precede_the_json(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    ids = prompt(engine, GEMMA_TURN, "先想一想，再回答：猫是什么颜色？")
    free, _ = complete(engine, ids, GenerationParams(max_tokens=12, temperature=0))
    trigger = free[:6]  # greedy decoding repeats this prefix, so the trigger is sure to be generated
    assert trigger.strip()
    text, finish = constrained(engine, ids, grammar.json_schema(PET, after=trigger), temperature=0)
    assert finish == "stop" and text.startswith(trigger), text
    jsonschema.validate(json.loads(text[len(trigger):]), PET)


# --- transformers and RWKV ----------------------------------------------------------------------
def test_transformers_engine_output_parses_with_a_json_constraint(tmp_path):
    from danlu.backends import load_engine

    path = tm.qwen2(tmp_path / "qwen2")
    engine = load_engine(None, None, LoadPlan(path=path, n_ctx=512, n_threads=1), "transformers")
    schema = {"type": "object", "properties": {"城市": {"type": "string", "maxLength": 6},
                                               "n": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["城市", "n"], "additionalProperties": False}
    ids = engine.tokenize("你好")
    for seed in range(3):
        text, finish = constrained(engine, ids, grammar.json_schema(schema), seed=seed, max_tokens=300)
        assert finish == "stop", text  # a random model still closes the object: the grammar ends the reply
        jsonschema.validate(json.loads(text), schema)


def test_rwkv_engine_refuses_a_constraint_clearly(tmp_path):
    from danlu.backends import load_engine

    path = tm.rwkv4_pth(tmp_path / "tiny.pth")
    engine = load_engine(None, None, LoadPlan(path=path, n_ctx=256, n_threads=1), "rwkv")
    with pytest.raises(DanluError, match="RWKV backend cannot enforce"):
        engine.generate(engine.tokenize("你好"), GenerationParams(constraint=grammar.json_object()))
