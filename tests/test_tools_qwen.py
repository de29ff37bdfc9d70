"""Tool calls and JSON output with the real qwen2.5-coder-1.5b-instruct through `danlu serve` and the official
openai client: the weather tool is called with the city from a Chinese question, its result goes back and the
answer uses it, the same streamed, tool_choice none / required / named, `chat.completions.parse` with a pydantic
model at temperature 1.0, json_object output that always parses, four schemas in one batch."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from pydantic import BaseModel

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
