"""`gen` on thinking models: the think block is taken off before the answer regexes, its tokens and seconds are
recorded per question, a reply cut inside its thinking is wrong and flagged, and a hybrid model runs with thinking
on and off side by side.

Scripted engines (one token per text piece, the real Qwen3 and DeepSeek-R1 templates) make every number known in
advance; the tiny random Qwen3 (tests/tiny_modern.py) runs `danlu eval --thinking both` through the real loader.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from danlu import catalog
from danlu.backends.base import Capabilities, Chunk
from danlu.chat import tokenize_segments
from danlu.errors import DanluError
from danlu.evaluate import EvalConfig, make_protocol, run_evaluation, run_thinking_modes
from danlu.evaluate.datasets import CEVAL, Question
from danlu.evaluate.protocols import Generate, extract_answer
from danlu.evaluate.report import leaderboard
from danlu.evaluate.thinking import ANSWER_ALLOWANCE, check_switch, gen_max_tokens, splitter_factory
from danlu.formats import from_template, get_format, to_text
from danlu.loader import with_catalog_facts
from test_eval_run import ANSWERS  # the sample's answer key, read once

SAMPLE = Path(str(resources.files("danlu") / "data" / "ceval_sample"))
TEMPLATES = Path(__file__).parent / "reference_templates"
EMPTY_THINK = "<think>\n\n</think>\n\n"  # what Qwen3's template writes after the generation prompt, thinking off
SUBJECTS = ("civil_servant", "middle_school_physics")


class ScriptEngine:
    """Replies with `reply(prompt_text)` (a list of text pieces, one token each); records every prompt."""

    capabilities = Capabilities(chat_template=True)
    n_ctx = 100_000

    def __init__(self, reply):
        self.reply, self.prompts = reply, []

    def tokenize(self, text, *, special=False, add_bos=False):
        return [ord(c) for c in text]

    def detokenize(self, ids):
        return "".join(map(chr, ids)).encode("utf-8")

    def bos_token_id(self):
        return None

    def generate(self, ids, params):
        prompt = "".join(map(chr, ids))
        self.prompts.append(prompt)
        pieces = self.reply(prompt)
        for piece in pieces[: params.max_tokens]:
            yield Chunk(piece, [ord(piece[0])])
        yield Chunk("", [], finish_reason="length" if len(pieces) > params.max_tokens else "stop")


class Clock:
    """A clock that moves one second each time it is read: seconds become counts of reads."""

    def __init__(self):
        self.now = -1.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def loaded_with(engine, template: str, spec=None) -> SimpleNamespace:
    """What danlu.loader.load gives for a model rendered by its own template (engine, format, catalog entry)."""
    fmt = from_template((TEMPLATES / template).read_text(encoding="utf-8"), eos_token="<|im_end|>")
    return SimpleNamespace(engine=engine, resolved=SimpleNamespace(spec=spec), fmt=fmt)


def catalog_loaded(model_id: str) -> SimpleNamespace:
    """A catalog model as the loader describes it before any weights (its named format with the catalog's facts)."""
    spec = catalog.get(model_id)
    return SimpleNamespace(engine=None, resolved=SimpleNamespace(spec=spec),
                           fmt=with_catalog_facts(get_format(spec.prompt_format), spec))


def right_answer(prompt: str) -> str:
    return next(answer for question, answer in ANSWERS.items() if f"{question}\nA. " in prompt)


def thinks_then_answers(prompt: str) -> list[str]:
    """A hybrid model: with thinking on it reasons (naming a wrong letter first) and answers right; with the empty
    think block in its prompt it answers at once, always A."""
    if prompt.endswith(EMPTY_THINK):
        return ["答案：", "A"]
    right = right_answer(prompt)
    return ["<think>", "\n", "答案是A吗？", f"不对，是{right}。", "\n", "</think>", "\n\n", "答案：", right]


QUESTION = Question("s", "0", "问题", ("甲", "乙", "丙", "丁"), "B")


def ask(pieces: list[str], template: str = "qwen3.jinja", max_tokens: int = 64):
    engine = ScriptEngine(lambda prompt: pieces)
    loaded = loaded_with(engine, template)
    protocol = Generate(engine, engine.tokenize, max_tokens=max_tokens, splitter=splitter_factory(loaded, None),
                        clock=Clock())
    return protocol.answer("", CEVAL.question_text(QUESTION), QUESTION)


# --- one reply -----------------------------------------------------------------------------------------------
def test_letters_inside_the_thinking_are_not_read_as_the_answer():
    pieces = ["<think>", "\n我先想：答案是A吗？", "不是A，也不是C。", "\n", "</think>", "\n\n", "答案：B"]
    answer = ask(pieces)
    assert answer.pred == "B"
    assert answer.text == "".join(pieces)  # the whole reply is kept
    assert extract_answer(answer.text) == "A"  # what the regexes would have read without the strip


def test_thinking_tokens_and_the_seconds_until_the_block_closed_are_recorded():
    pieces = ["<think>", "\n嗯", "，选项B对。", "\n", "</think>", "\n\n", "答案：", "B"]
    stats = ask(pieces).stats
    # The clock reads 0 at the request, then once per chunk: "</think>" arrives at 5, the end of the stream at 10.
    assert (stats.reasoning_tokens, stats.answer_tokens) == (5, 3)
    assert (stats.reasoning_s, stats.total_s) == (5.0, 10.0)
    assert not stats.thinking_unfinished


def test_a_reply_without_thinking_has_no_thinking_tokens():
    stats = ask(["答案：", "B"]).stats
    assert (stats.reasoning_tokens, stats.answer_tokens, stats.reasoning_s) == (0, 2, 0.0)


def test_an_r1_reply_starts_inside_its_thinking():
    answer = ask(["嗯，答案是A？", "不对。", "</think>", "\n\n", "答案：C"], template="deepseek-r1-distill-qwen.jinja")
    assert answer.pred == "C" and answer.stats.reasoning_tokens == 3 and answer.stats.answer_tokens == 2


def test_a_reply_cut_inside_its_thinking_names_no_option_even_if_it_wrote_one():
    answer = ask(["<think>", "答案：B", "吗？再想想", "……", "还是B"], max_tokens=4)
    assert answer.pred is None and answer.stats.thinking_unfinished
    assert answer.stats.reasoning_tokens == 4 and answer.stats.reasoning_s == answer.stats.total_s


# --- a run ---------------------------------------------------------------------------------------------------
def test_a_run_cut_in_its_thinking_counts_wrong_and_flags_every_reply(tmp_path):
    engine = ScriptEngine(lambda prompt: ["<think>", *["想"] * 100, f"答案是{right_answer(prompt)}", "</think>", "B"])
    config = EvalConfig("scripted", SAMPLE, protocol="gen", shots=0, subjects=SUBJECTS, limit=2, max_tokens=10)
    outcome = run_evaluation(loaded_with(engine, "qwen3.jinja"), config, tmp_path, show_progress=False)
    assert outcome.scores.average == 0.0
    data = json.loads(outcome.paths["json"].read_text(encoding="utf-8"))
    assert [p["thinking_unfinished"] for p in data["predictions"]] == [True] * 4
    assert data["thinking"]["unfinished"] == 4 and data["thinking"]["reasoning_tokens"] == 10 + ANSWER_ALLOWANCE
    assert "thinking did not finish" in outcome.paths["markdown"].read_text(encoding="utf-8")
    logged = [json.loads(line) for line in (outcome.folder / "predictions.jsonl").read_text().splitlines()]
    assert logged[0]["text"].startswith("<think>想想")  # the whole reply is in the log


def test_thinking_on_and_off_run_the_same_questions_side_by_side(tmp_path):
    engine = ScriptEngine(thinks_then_answers)
    config = EvalConfig("scripted-qwen3", SAMPLE, protocol="gen", shots=0, subjects=SUBJECTS, limit=2)
    comparison = run_thinking_modes(loaded_with(engine, "qwen3.jinja"), config, tmp_path, show_progress=False)
    on_prompts, off_prompts = engine.prompts[:4], engine.prompts[4:]
    assert off_prompts == [prompt + EMPTY_THINK for prompt in on_prompts]  # the template's switch, nothing else

    data = json.loads(comparison.paths["json"].read_text(encoding="utf-8"))
    side = data["side_by_side"]
    expected_off = 100.0 * sum(right_answer(p) == "A" for p in on_prompts) / 4
    assert side["average"]["on"] == 100.0 and side["micro_average"]["off"] == expected_off
    assert side["thinking"]["on"]["reasoning_tokens"] == 6.0 and side["thinking"]["off"]["reasoning_tokens"] == 0.0
    assert side["thinking"]["off"]["reasoning_s"] == 0.0
    assert side["thinking"]["on"]["reasoning_s"] <= side["thinking"]["on"]["total_s"]
    assert set(side["subjects"]) == set(SUBJECTS) and data["modes"]["off"]["config"]["thinking"] == "off"
    table = comparison.paths["markdown"].read_text(encoding="utf-8")
    assert "思考 on acc %" in table and "不思考 off acc %" in table and "思考 token thinking tokens | 6.0 | 0.0" in table
    assert comparison.paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len({o.folder for o in comparison.outcomes.values()} | {comparison.folder}) == 3


def test_stored_results_keep_the_thinking_mode_and_a_rerun_resumes(tmp_path):
    engine = ScriptEngine(thinks_then_answers)
    config = EvalConfig("scripted-qwen3", SAMPLE, protocol="gen", shots=0, subjects=SUBJECTS, limit=2)
    first = run_thinking_modes(loaded_with(engine, "qwen3.jinja"), config, tmp_path, show_progress=False)
    rows = [r for r in leaderboard(tmp_path / "danlu.db") if r["kind"] == "measured"]
    assert sorted(r["thinking"] for r in rows) == ["off", "on"]
    assert any("thinking on" in r["protocol"] or "，思考" in r["protocol"] for r in rows)
    again = run_thinking_modes(loaded_with(engine, "qwen3.jinja"), config, tmp_path, show_progress=False)
    assert all(o.answered_now == 0 for o in again.outcomes.values()) and len(engine.prompts) == 8
    assert [p.reasoning_tokens for p in again.outcomes["on"].predictions] == [6] * 4  # read back from the log
    assert again.paths["json"].read_text() == first.paths["json"].read_text()


# --- limits and switches -------------------------------------------------------------------------------------
def test_the_token_limit_is_the_thinking_budget_plus_the_answer_allowance():
    qwen3 = catalog_loaded("qwen3-4b")
    assert gen_max_tokens(qwen3, None) == qwen3.resolved.spec.thinking_budget + ANSWER_ALLOWANCE
    assert gen_max_tokens(qwen3, "on", max_tokens=100) == 100 + ANSWER_ALLOWANCE
    assert gen_max_tokens(qwen3, "off", max_tokens=100) == ANSWER_ALLOWANCE  # no thinking, the same answer room
    assert gen_max_tokens(catalog_loaded("qwen3-4b-instruct-2507"), None) == ANSWER_ALLOWANCE


@pytest.mark.parametrize("model_id, says", [("deepseek-r1-distill-qwen-1.5b", "always thinks"),
                                             ("qwen3-4b-instruct-2507", "no thinking mode")])
@pytest.mark.parametrize("switch", ["on", "off", "both"])
def test_a_model_that_cannot_switch_its_thinking_is_refused(model_id, says, switch):
    with pytest.raises(DanluError, match=says):
        check_switch(catalog_loaded(model_id), switch, "gen")


def test_a_hybrid_model_whose_prompt_format_has_no_switch_is_refused():
    qwen3_as_chatml = catalog_loaded("qwen3-4b")  # the named fallback, for a GGUF that lost its template
    with pytest.raises(DanluError, match="no thinking switch"):
        check_switch(qwen3_as_chatml, "off", "gen")


def test_the_thinking_switch_and_budget_belong_to_gen(tmp_path):
    loaded = loaded_with(ScriptEngine(thinks_then_answers), "qwen3.jinja")
    with pytest.raises(DanluError, match="--protocol gen"):
        check_switch(loaded, "on", "ao")
    with pytest.raises(DanluError, match="on, off or both"):
        check_switch(loaded, "maybe", "gen")
    with pytest.raises(DanluError, match="--max-tokens"):
        run_evaluation(loaded, EvalConfig("m", SAMPLE, protocol="ppl", max_tokens=8), tmp_path, show_progress=False)


# --- the tiny random Qwen3 -------------------------------------------------------------------------------------
def eval_app() -> typer.Typer:
    """`danlu eval` as danlu/cli/commands.py registers it."""
    from danlu.cli import friendly
    from danlu.evaluate.cli import eval_command

    app = typer.Typer()
    app.command("eval")(friendly(eval_command))
    app.command("noop")(lambda: None)  # two commands, so typer keeps the "eval" name
    return app


def test_tiny_qwen3_prompts_differ_exactly_as_its_template_says(tiny_qwen3_dir):
    from transformers import AutoTokenizer

    from danlu.loader import load

    loaded = load(str(tiny_qwen3_dir), n_ctx=1024)
    reference = AutoTokenizer.from_pretrained(str(tiny_qwen3_dir))
    messages = [{"role": "user", "content": CEVAL.header("civil_servant") + CEVAL.question_text(QUESTION)}]
    fed = {mode: make_protocol("gen", loaded, CEVAL, thinking=mode).render(messages[0]["content"])
           for mode in ("on", "off", None)}
    for mode, enable in (("on", True), ("off", False)):
        segments = loaded.fmt.render(messages, True, enable_thinking=enable)
        assert to_text(segments) == reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                                  enable_thinking=enable)
        assert fed[mode] == tokenize_segments(loaded.engine, segments)
    assert fed["off"] == fed["on"] + loaded.engine.tokenize(EMPTY_THINK, special=True)
    assert fed[None] == fed["on"]  # the template's default is thinking on


def test_danlu_eval_thinking_both_on_the_tiny_qwen3(tiny_qwen3_dir, danlu_home):
    args = ["eval", str(tiny_qwen3_dir), "--data", str(SAMPLE), "--protocol", "gen", "--shots", "0", "--limit", "1",
            "--subjects", ",".join(SUBJECTS), "--thinking", "both", "--max-tokens", "4", "--ctx", "1024"]
    result = CliRunner().invoke(eval_app(), args)
    assert result.exit_code == 0, result.output
    assert "thinking on vs off" in result.output or "思考 开 / 关 并排" in result.output
    folder = next((danlu_home / "evals").glob("tiny-qwen3-ceval-val-gen-think-vs-nothink-0shot-*"))
    data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    assert set(data["side_by_side"]["average"]) == {"on", "off"}
    for mode, limit in (("on", 4 + ANSWER_ALLOWANCE), ("off", ANSWER_ALLOWANCE)):
        predictions = data["modes"][mode]["predictions"]
        assert [p["subject"] for p in predictions] == list(SUBJECTS)
        assert all(p["reasoning_tokens"] + p["answer_tokens"] <= limit for p in predictions)
        assert all(p["pred"] in ("A", "B", "C", "D", None) for p in predictions)
    assert "不思考 off acc %" in (folder / "report.md").read_text(encoding="utf-8")
    assert (folder / "chart.png").stat().st_size > 1000


def test_danlu_eval_refuses_the_thinking_switch_outside_gen(tiny_qwen3_dir):
    result = CliRunner().invoke(eval_app(), ["eval", str(tiny_qwen3_dir), "--data", str(SAMPLE), "--protocol", "ao",
                                             "--thinking", "off", "--ctx", "1024"])
    assert result.exit_code == 1 and "--protocol gen" in result.output


def test_results_stored_before_the_thinking_column_still_read(tmp_path):
    import sqlite3

    from danlu.sessions import MIGRATIONS, SessionStore

    names = [fn.__name__ for fn in MIGRATIONS]
    before = MIGRATIONS[: names.index("m005_eval_thinking")]
    db = sqlite3.connect(tmp_path / "danlu.db")  # a database from before m005, with one stored run
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied REAL)")
    for fn in before:
        fn(db)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", (fn.__name__,))
    db.execute("INSERT INTO eval_results VALUES ('k', 'old-model', 'ceval', 'val', 'gen', 5, 40, 30.0, 31.0, '{}', "
               "'/data', 0)")
    db.commit()
    db.close()
    SessionStore(tmp_path / "danlu.db").close()  # migrates
    old = next(r for r in leaderboard(tmp_path / "danlu.db") if r["model"] == "old-model")
    assert old["thinking"] is None and old["protocol"].startswith("gen, 5-shot, val (40 ")
    assert "思考" not in old["protocol"] and "thinking" not in old["protocol"]
