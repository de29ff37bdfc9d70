"""Tool calls and JSON output with the real qwen2.5-coder-1.5b-instruct through `danlu serve` and the official
openai client: the weather tool is called with the city from a Chinese question, its result goes back and the
answer uses it, the same streamed, tool_choice none / required / named, `chat.completions.parse` with a pydantic
model at temperature 1.0, json_object output that always parses, four schemas in one batch."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from typing import Annotated

from pydantic import BaseModel, Field

from danlu.server import ServerSettings
from test_server_harness import home_with, models_dir_of, running_server

pytestmark = pytest.mark.weights
QWEN = "qwen2.5-coder-1.5b-instruct"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "查询某个城市的天气", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "description": "城市名"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "查询某个城市的当前时间", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
# An agent's usual instruction: without it this 1.5B coder model calls the tool again after the result came back.
SYSTEM = {"role": "system", "content": "你是一个助手。需要时调用工具；拿到工具结果后，直接用中文回答用户的问题。"}
ASK = [SYSTEM, {"role": "user", "content": "杭州今天天气怎么样？"}]


@pytest.fixture(scope="module")
def url(tmp_path_factory, qwen_path):
    home = home_with(tmp_path_factory.mktemp("tools-home"), models_dir_of(qwen_path))
    with running_server(ServerSettings(base=home, n_ctx=2048, keep_alive_s=-1, models=[QWEN])) as base:
        yield base


@pytest.fixture
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)


def test_the_weather_tool_is_called_with_the_city_and_its_result_is_used(client):
    first = client.chat.completions.create(model=QWEN, messages=ASK, tools=[WEATHER, TIME], temperature=0,
                                           max_tokens=80)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "杭州"}
    result = json.dumps({"city": "杭州", "weather": "小雨", "temperature_c": 12}, ensure_ascii=False)
    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": result}]
    answer = client.chat.completions.create(model=QWEN, messages=history, tools=[WEATHER, TIME], temperature=0,
                                            max_tokens=80).choices[0]
    assert answer.finish_reason == "stop" and ("小雨" in answer.message.content or "12" in answer.message.content)


def test_the_streamed_call_is_assembled_by_the_sdk(client):
    with client.chat.completions.stream(model=QWEN, messages=ASK, tools=[WEATHER], temperature=0,
                                        max_tokens=80) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] == "杭州"


def test_tool_choice_none_answers_in_words(client):
    choice = client.chat.completions.create(model=QWEN, messages=ASK, tools=[WEATHER], tool_choice="none",
                                            temperature=0, max_tokens=40).choices[0]
    assert not choice.message.tool_calls and choice.message.content and choice.finish_reason != "tool_calls"


def test_tool_choice_required_and_named_force_a_call(client):
    chat = [SYSTEM, {"role": "user", "content": "你好，介绍一下你自己。"}]  # nothing here asks for a tool
    required = client.chat.completions.create(model=QWEN, messages=chat, tools=[WEATHER, TIME], tool_choice="required",
                                              temperature=0, max_tokens=60).choices[0]
    assert required.finish_reason == "tool_calls" and required.message.tool_calls[0].function.name in (
        "get_weather", "get_time")
    named = client.chat.completions.create(model=QWEN, messages=ASK, tools=[WEATHER, TIME], max_tokens=60,
                                           tool_choice={"type": "function", "function": {"name": "get_time"}},
                                           temperature=0).choices[0]
    call = named.message.tool_calls[0]
    assert call.function.name == "get_time" and json.loads(call.function.arguments)["city"]


Short = Annotated[str, Field(max_length=24)]


class CityFact(BaseModel):
    """Bounded as an application would bound it: at temperature 1.0 a 1.5B model otherwise rambles on."""

    city: Short
    province: Short
    population_millions: float
    famous_for: list[Short] = Field(max_length=4)


def test_parse_returns_a_valid_object_for_every_seed_at_temperature_1(client):
    for seed in range(20):
        completion = client.chat.completions.parse(
            model=QWEN, messages=[{"role": "user", "content": "用 JSON 介绍一下成都。"}], response_format=CityFact,
            temperature=1.0, seed=seed, max_tokens=400)
        fact = completion.choices[0].message.parsed
        assert isinstance(fact, CityFact), completion.choices[0].message.content
        assert all("\ufffd" not in text for text in [fact.city, fact.province, *fact.famous_for])


def test_json_object_output_always_parses(client):
    for seed in range(5):
        reply = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "给我一个简短的 JSON 对象"
                                                                      "（三个字段），描述一本中文小说。"}],
                                               response_format={"type": "json_object"}, temperature=1.0, seed=seed,
                                               max_tokens=400)
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", choice.message.content  # the grammar ended it, not max_tokens
        assert isinstance(json.loads(choice.message.content), dict)


def test_four_schemas_in_one_batch_each_get_their_own(url):
    schemas = [{"type": "object", "properties": {"城市": {"type": "string"}}, "required": ["城市"],
                "additionalProperties": False},
               {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["n"],
                "additionalProperties": False},
               {"type": "object", "properties": {"ok": {"type": "boolean"}, "why": {"type": "string", "maxLength": 20}},
                "required": ["ok", "why"], "additionalProperties": False},
               {"type": "array", "items": {"type": "string", "enum": ["春", "夏", "秋", "冬"]}, "minItems": 2,
                "maxItems": 3}]

    async def one(schema, client):
        return await client.chat.completions.create(
            model=QWEN, messages=[{"role": "user", "content": "按要求回答：随便说点什么。"}], max_tokens=60,
            temperature=0.8, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema,
                                                                                      "strict": True}})

    async def run():
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
        return await asyncio.gather(*(one(s, client) for s in schemas))

    import jsonschema

    for schema, reply in zip(schemas, asyncio.run(run())):
        jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
