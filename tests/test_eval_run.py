"""The evaluation loop on a scripted fake engine: protocols, averages, outputs, storage, resuming after a kill.

The fake engine "knows" a fixed letter per question (read back from the prompt text), so every
number below is known in advance; real models are in test_eval_models.py.
"""

from __future__ import annotations

import csv
import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from danlu.backends.base import Capabilities, Chunk
from danlu.evaluate import EvalConfig, engine_only, fit_to_context, make_protocol, run_evaluation
from danlu.evaluate.datasets import CEVAL, CMMLU, Question
from danlu.evaluate.protocols import AnswerOnly, Generate, Perplexity
from danlu.evaluate.report import leaderboard, markdown, score, submission_json
from danlu.evaluate.run import Prediction, PredictionLog, evaluate, plan_questions, run_dir

SAMPLE = Path(str(resources.files("danlu") / "data" / "ceval_sample"))


class FakeEngine:
    """Characters are tokens. It answers with `pick(question_text)`; counts the tokens it has to run."""

    spec = None
    capabilities = Capabilities(logits=True)

    def __init__(self, pick=lambda text: "A", n_ctx: int = 100_000, reply: str = "答案是B"):
        self.pick, self.n_ctx, self.reply = pick, n_ctx, reply
        self.cached: list[int] = []
        self.fed = 0  # tokens run after the reused prefix, over all calls

    def tokenize(self, text, *, special=False, add_bos=False):
        return [ord(c) for c in text]

    def bos_token_id(self):
        return None

    def next_token_logits(self, ids):
        ids = list(ids)
        keep = next((i for i, (a, b) in enumerate(zip(self.cached, ids)) if a != b), min(len(self.cached), len(ids)))
        self.fed += len(ids) - keep
        self.cached = ids
        logits = np.zeros(0x10000, dtype=np.float32)
        logits[ord(self.pick("".join(map(chr, ids))))] = 5.0
        return logits

    def loglikelihood(self, context_ids, continuation_ids):
        text = "".join(map(chr, context_ids))
        chosen = self._option_text(text, self.pick(text))
        return 0.0 if "".join(map(chr, continuation_ids)) == chosen else -3.0 * len(continuation_ids)

    @staticmethod
    def _option_text(text: str, letter: str) -> str:
        return text.rsplit(f"\n{letter}. ", 1)[1].split("\n", 1)[0]

    def generate(self, ids, params):
        yield Chunk(self.reply, [1])
        yield Chunk("", [], finish_reason="stop")


def by_answer_key(text: str) -> str:
    """An oracle: the right answer for every question of the sample (looked up by question text)."""
    return ANSWERS.get(text.rsplit("\n\n", 1)[-1].split("\nA. ")[0], "A")


def _answer_key() -> dict[str, str]:
    key = {}
    for path in (SAMPLE / "val").glob("*.csv"):
        with open(path, encoding="utf-8") as fh:
            key.update({row["question"]: row["answer"] for row in csv.DictReader(fh)})
    return key


ANSWERS = _answer_key()


# --- protocols -----------------------------------------------------------------------------------------
def test_ao_reads_the_letter_logits_and_decodes_the_shared_prefix_once(tmp_path):
    engine = FakeEngine(by_answer_key)
    plan = plan_questions(EvalConfig("fake", SAMPLE, subjects=("civil_servant",)))
    protocol = AnswerOnly(engine, CEVAL.answer_tail)
    predictions = evaluate(plan, protocol, PredictionLog(tmp_path / "p.jsonl"))
    assert all(p.correct for p in predictions)
    prefix = len(plan.prefixes["civil_servant"])
    questions = sum(len(CEVAL.question_text(q)) for q in plan.questions["civil_servant"])
    assert engine.fed <= prefix + questions  # the prefix ran once, not once per question


def test_ppl_picks_the_option_text_with_the_lowest_mean_cross_entropy():
    engine = FakeEngine(lambda text: "C")
    question = Question("s", "0", "问题", ("甲", "乙", "丙丙", "丁"), "C")
    answer = Perplexity(engine, CEVAL.answer_tail).answer("前缀\n\n", CEVAL.question_text(question), question)
    assert answer.pred == "C" and answer.scores[2] == 0.0 and answer.scores[0] < 0


def test_gen_extracts_the_answer_from_the_reply():
    engine = FakeEngine(reply="根据分析，答案是B。")
    question = Question("s", "0", "问题", ("甲", "乙", "丙", "丁"), "B")
    answer = Generate(engine, lambda prompt: engine.tokenize(prompt)).answer("", CEVAL.question_text(question), question)
    assert answer.pred == "B" and answer.text == "根据分析，答案是B。"


def test_a_model_without_logits_is_told_to_use_gen():
    engine = FakeEngine()
    engine.capabilities = Capabilities(logits=False)
    with pytest.raises(Exception, match="gen"):
        make_protocol("ao", engine_only(engine), CEVAL)


def test_shots_are_dropped_when_the_prompt_would_not_fit_the_context():
    config = EvalConfig("fake", SAMPLE, subjects=("civil_servant",))
    plan = plan_questions(config)
    full = len(plan.prefixes["civil_servant"])
    warnings = fit_to_context(plan, config, FakeEngine(n_ctx=full), reserve=1)
    assert len(plan.prefixes["civil_servant"]) < full and "civil_servant" in warnings[0]


# --- averages ---------------------------------------------------------------------------------------------
def test_macro_average_weights_subjects_equally_and_micro_weights_questions():
    predictions = [Prediction("civil_servant", "0", "A", "A")] + [
        Prediction("middle_school_physics", str(i), "A", answer) for i, answer in enumerate("ABC")]
    scores = score(predictions, CEVAL)
    assert scores.subjects == {"civil_servant": 100.0, "middle_school_physics": 33.33}
    assert scores.average == pytest.approx(66.67, abs=0.01)  # (100 + 33.33) / 2
    assert scores.micro_average == 50.0  # 2 of 4 questions
    assert scores.categories == {"STEM": 33.33, "Other": 100.0}
    table = markdown(scores, CEVAL, "t")
    assert "macro" in table and "micro" in table and "| 公务员 civil_servant | Other | 1 | 100.00 |" in table


def test_a_subject_in_two_cmmlu_categories_counts_in_both():
    scores = score([Prediction("chinese_history", "0", "A", "A"), Prediction("elementary_mathematics", "0", "B", "A")], CMMLU)
    assert scores.categories == {"STEM": 0.0, "Humanities": 100.0, "China specific": 100.0}


def test_submission_json_is_the_official_shape():
    predictions = [Prediction("law", "0", "A", None), Prediction("law", "1", None, None), Prediction("logic", "0", "D", None)]
    assert submission_json(predictions) == {"law": {"0": "A", "1": ""}, "logic": {"0": "D"}}


# --- a whole run ------------------------------------------------------------------------------------------
def test_run_writes_table_chart_json_and_stores_for_the_leaderboard(tmp_path):
    config = EvalConfig("fake-model", SAMPLE, limit=2)
    outcome = run_evaluation(engine_only(FakeEngine(by_answer_key)), config, tmp_path, show_progress=False)
    assert outcome.scores.average == 100.0 and outcome.scores.n_questions == 10
    data = json.loads(outcome.paths["json"].read_text(encoding="utf-8"))
    assert set(data["results"]) == {"subjects", "categories", "average"}
    assert data["predictions"][0] == {"subject": "middle_school_mathematics", "id": "0", "pred": "C", "answer": "C"}
    assert outcome.paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "初中物理 middle_school_physics" in outcome.paths["markdown"].read_text(encoding="utf-8")
    rows = leaderboard(tmp_path / "danlu.db", "ceval")
    assert rows[0]["model"] == "fake-model" and rows[0]["kind"] == "measured"
    assert any(r["kind"] == "reference" and r["source"] for r in rows)


def test_test_split_without_answers_writes_the_submission(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE / "dev", data / "dev")
    (data / "test").mkdir()
    with open(data / "test" / "civil_servant_test.csv", "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([["id", "question", "A", "B", "C", "D"], ["7", "问题", "甲", "乙", "丙", "丁"]])
    outcome = run_evaluation(engine_only(FakeEngine()), EvalConfig("m", data, split="test"), tmp_path, show_progress=False)
    assert json.loads(outcome.paths["submission"].read_text()) == {"civil_servant": {"7": "A"}}
    assert outcome.scores.n_questions == 0  # nothing to score without the key


class Killed(Exception):
    pass


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    config = EvalConfig("fake", SAMPLE)
    engine = FakeEngine(by_answer_key)
    protocol = AnswerOnly(engine, CEVAL.answer_tail)
    asked = []

    def answer_then_die(prefix, text, question):
        if len(asked) == 13:
            raise Killed  # the process dies while answering question 14
        asked.append(question.id)
        return AnswerOnly.answer(protocol, prefix, text, question)

    protocol.answer = answer_then_die
    log = PredictionLog(run_dir(tmp_path, config) / "predictions.jsonl")
    with pytest.raises(Killed):
        evaluate(plan_questions(config), protocol, log)
    with open(log.path, "a", encoding="utf-8") as fh:
        fh.write('{"subject": "middle_school_physics", "id": "5", "pr')  # a line cut off by the kill
    assert len(log.read()) == 13

    outcome = run_evaluation(engine_only(engine), config, tmp_path, show_progress=False)
    assert outcome.answered_now == 40 - 13
    assert outcome.scores.n_questions == 40 and outcome.scores.average == 100.0
    again = run_evaluation(engine_only(engine), config, tmp_path, show_progress=False)
    assert again.answered_now == 0 and again.scores == outcome.scores
