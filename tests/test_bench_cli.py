"""`danlu bench` on gemma-3-270m through the server's engine: the table's shape and the JSON's, never its numbers;
and the OpenMP wait policy danlu sets before llama.cpp loads."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from danlu.cli import app
from danlu.threads import DEFAULT_POLICY, POLICIES, apply_wait_policy

ARGS = ["bench", "gemma-3-270m", "--pp", "16", "--tg", "4", "--repeat", "1", "--streams", "4", "--threads", "1"]


@pytest.mark.weights
def test_bench_table_has_one_row_per_stream_count_with_every_figure(home_with_models):
    out = CliRunner().invoke(app, ARGS, env={"COLUMNS": "200", "DANLU_LANG": "en"})
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if line.startswith("│")]
    assert [line.split("│")[1].strip() for line in lines] == ["1", "4"]
    assert all(len(line.split("│")) == 7 for line in lines)  # streams, prefill, TTFT, decode, per stream
    for header in ("prefill tok/s", "TTFT (s)", "decode tok/s"):
        assert header in out.output
    assert "16-token prompts, 4 new tokens" in out.output


@pytest.mark.weights
def test_bench_json_has_the_same_rows_and_the_machine(home_with_models):
    out = CliRunner().invoke(app, [*ARGS, "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert [r["streams"] for r in report["rows"]] == [1, 4]
    assert all({"prefill_tps", "ttft_s", "decode_tps", "per_stream_tps"} <= r.keys() for r in report["rows"])
    assert all(r["prefill_tps"] > 0 and r["decode_tps"] > 0 for r in report["rows"])
    assert report["model"] == "gemma-3-270m:q4_k_m" and report["threads"] == 1 and report["cpu_count"] >= 1


def test_bench_of_a_model_that_is_not_pulled_says_how_to_get_it():
    out = CliRunner().invoke(app, ["bench", "gemma-3-270m"])
    assert out.exit_code == 1 and "danlu pull" in out.output


def test_wait_policy_is_set_unless_the_user_set_openmp_itself():
    env = {}
    assert apply_wait_policy(env) == DEFAULT_POLICY and env == POLICIES[DEFAULT_POLICY]
    env = {"DANLU_OMP_WAIT": "spin"}
    assert apply_wait_policy(env) == "spin" and "OMP_WAIT_POLICY" not in env
    env = {"OMP_WAIT_POLICY": "active", "DANLU_OMP_WAIT": "passive"}
    assert apply_wait_policy(env) == "user" and env["OMP_WAIT_POLICY"] == "active"
