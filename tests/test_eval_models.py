"""Evaluation on real engines: a tiny random transformers model and gemma-3-270m, checked against
lm-evaluation-harness (0.4.13, offline, a local task over the shipped CSVs).

The agreement tests hand lm-eval the very model object danlu's transformers engine runs, so both
harnesses see the same weights and the same numerics: they must agree on ≥ 99% of questions, and
lm-eval's scored context must equal danlu's prompt byte for byte.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import tiny_models as tm
from danlu.backends import load_engine
from danlu.backends.base import LoadPlan
from danlu.evaluate import EvalConfig, engine_only, lmeval, run_evaluation
from danlu.evaluate.datasets import CEVAL, list_subjects
from danlu.evaluate.run import few_shot_prefix, plan_questions

SAMPLE = Path(str(resources.files("danlu") / "data" / "ceval_sample"))
needs_lm_eval = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                   reason="lm-evaluation-harness not installed: pip install lm_eval==0.4.13")


def tiny_qwen2(folder: Path) -> Path:
    """A Qwen2 like tiny_models.qwen2 but with 2048 positions, so a 5-shot prompt fits untruncated."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = tm.byte_bpe_tokenizer(folder, specials=("<|endoftext|>",), eos="<|endoftext|>", bos=None)
    tm.seeded(3)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True, initializer_range=0.2)
    Qwen2ForCausalLM(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    return tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


def agreement_with_lm_eval(engine, home: Path, shots: int = 5, limit: int | None = None) -> tuple[float, list, int]:
    """(percent agreeing, differing keys, contexts that differ from danlu's prompt)."""
    config = EvalConfig("agreement", SAMPLE, shots=shots, limit=limit)
    outcome = run_evaluation(engine_only(engine), config, home, show_progress=False)
    subjects = list_subjects(CEVAL, SAMPLE, "val")
    tasks = lmeval.write_tasks("ceval", SAMPLE, subjects, "val", home / "lm-eval-tasks")
    samples, _ = lmeval.run_lmeval(engine.model, engine.tokenizer, tasks, home / "lm-eval-tasks", shots, limit)
    reference = lmeval.read_samples(samples, "ceval")
    plan = plan_questions(config)
    prompts = {(s, q.id): few_shot_prefix(CEVAL, config, s) + CEVAL.question_text(q) for s in plan.subjects for q in plan.questions[s]}
    differ = [(p.subject, p.id) for p in outcome.predictions if reference[(p.subject, p.id)].pred != p.pred]
    other_context = sum(reference[key].context != prompt for key, prompt in prompts.items())
    return 100.0 * (len(outcome.predictions) - len(differ)) / len(outcome.predictions), differ, other_context


# --- a tiny random model ------------------------------------------------------------------------------
@needs_lm_eval
def test_tiny_model_agrees_with_lm_evaluation_harness(tiny_path, tmp_path):
    engine = load_engine(None, None, LoadPlan(path=tiny_path, n_ctx=2048), "transformers")
    percent, differ, other_context = agreement_with_lm_eval(engine, tmp_path)
    assert other_context == 0  # lm-eval scored exactly danlu's prompt
    assert percent >= 99.0, differ


@pytest.mark.parametrize("protocol", ["ao", "ppl", "gen"])
def test_every_protocol_runs_on_a_tiny_model_through_the_real_loader(tiny_path, tmp_path, protocol):
    from danlu.loader import load

    outcome = run_evaluation(load(str(tiny_path), n_ctx=2048), EvalConfig("tiny", SAMPLE, protocol=protocol, limit=1),
                             tmp_path, show_progress=False)
    assert outcome.scores.n_questions == 5 and len(outcome.predictions) == 5
    assert all(p.pred in ("A", "B", "C", "D", None) for p in outcome.predictions)
    if protocol != "gen":
        assert all(len(p.scores) == 4 for p in outcome.predictions)


# --- gemma-3-270m -----------------------------------------------------------------------------------------
def eval_app() -> typer.Typer:
    """`danlu eval` as danlu/cli/commands.py registers it."""
    from danlu.cli import friendly
    from danlu.evaluate.cli import eval_command

    app = typer.Typer()
    app.command("eval")(friendly(eval_command))
    app.command("noop")(lambda: None)  # two commands, so typer keeps the "eval" name
    return app


@pytest.mark.weights
@pytest.mark.parametrize("protocol", ["ao", "ppl"])
def test_danlu_eval_gemma_on_the_shipped_sample(home_with_models, protocol):
    result = CliRunner().invoke(eval_app(), ["eval", "gemma-3-270m", "--data", str(SAMPLE), "--protocol", protocol,
                                             "--limit", "2", "--ctx", "2048"])
    assert result.exit_code == 0, result.output
    assert "middle_school_physics" in result.output and "macro" in result.output
    folder = next((home_with_models / "evals").glob(f"gemma-3-270m-ceval-val-{protocol}-5shot-*"))
    assert (folder / "chart.png").stat().st_size > 1000 and (folder / "report.md").exists()


@pytest.mark.weights
@pytest.mark.slow
@needs_lm_eval
def test_gemma_agrees_with_lm_evaluation_harness(gemma_path, tmp_path):
    """gemma-3-270m's GGUF dequantized by transformers (~100 s to load), both harnesses on it. lm-eval
    needs seconds per question here (it computes the 262k-vocabulary log-softmax at every position), so
    the test takes the first 4 questions of each subject; bench/eval_speed.py runs all 40."""
    engine = load_engine(None, None, LoadPlan(path=gemma_path, n_ctx=2048), "transformers")
    try:
        percent, differ, other_context = agreement_with_lm_eval(engine, tmp_path, limit=4)
    finally:
        engine.close()
    assert other_context == 0
    assert percent >= 99.0, differ
