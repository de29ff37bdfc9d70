"""C-Eval / CMMLU data and prompts: official layouts, subject tables, prompts byte for byte, answer regexes.

The reference renderings are written out literally, and also rebuilt with the official evaluators'
own string logic (C-Eval `evaluators/llama.py::format_example` + `generate_few_shot_prompt`, CMMLU
`src/mp_utils.py::format_example` + `gen_prompt`) over every shipped question.
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import pytest

from danlu.errors import DanluError
from danlu.evaluate.datasets import (CEVAL, CEVAL_HARD, CMMLU, LETTERS, get_suite, list_subjects,
                                     load_questions)
from danlu.evaluate.protocols import extract_answer
from danlu.evaluate.run import EvalConfig, few_shot_prefix

SAMPLE = Path(str(resources.files("danlu") / "data" / "ceval_sample"))
CMMLU_SAMPLE = Path(str(resources.files("danlu") / "data" / "cmmlu_sample"))


# --- subject tables ---------------------------------------------------------------------------------
def test_ceval_has_52_subjects_in_four_categories():
    assert len(CEVAL.subjects) == 52
    counts = {cat: sum(cat in s.categories for s in CEVAL.subjects.values()) for cat in CEVAL.categories}
    assert counts == {"STEM": 20, "Social Science": 10, "Humanities": 11, "Other": 11}
    assert set(CEVAL_HARD) <= set(CEVAL.subjects)


def test_cmmlu_has_67_subjects_and_china_specific_is_a_second_category():
    assert len(CMMLU.subjects) == 67
    assert all(s.categories for s in CMMLU.subjects.values())
    assert CMMLU.subjects["ancient_chinese"].categories == ("Social Science", "China specific")
    assert CMMLU.subjects["chinese_history"].categories == ("Humanities", "China specific")
    assert CMMLU.subjects["anatomy"].categories == ("STEM",)


def test_unknown_suite_is_a_clear_error():
    with pytest.raises(DanluError, match="ceval"):
        get_suite("mmlu")


# --- the shipped sample -------------------------------------------------------------------------------
def test_sample_has_official_layout_and_checked_answers():
    subjects = list_subjects(CEVAL, SAMPLE, "val")
    assert len(subjects) == 5 and all(s in CEVAL.subjects for s in subjects)
    assert {CEVAL.subject(s).categories[0] for s in subjects} == set(CEVAL.categories)
    for subject in subjects:
        with open(SAMPLE / "val" / f"{subject}_val.csv", encoding="utf-8") as fh:
            assert next(csv.reader(fh)) == ["id", "question", "A", "B", "C", "D", "answer", "explanation"]
        dev = load_questions(CEVAL, SAMPLE, "dev", subject)
        assert len(dev) == 5 and all(q.explanation for q in dev)
        for q in dev + load_questions(CEVAL, SAMPLE, "val", subject):
            assert q.answer in LETTERS and len(set(q.choices)) == 4


def test_cmmlu_sample_reads_the_unnamed_index_column():
    questions = load_questions(CMMLU, CMMLU_SAMPLE, "test", "chinese_history")
    assert [q.id for q in questions] == ["0", "1", "2", "3", "4"]
    assert questions[4].answer == "D" and questions[4].choices[3] == "司马迁"


# --- prompts, byte for byte -----------------------------------------------------------------------------
def test_ceval_one_shot_prompt_is_the_official_text():
    config = EvalConfig("m", SAMPLE, shots=1)
    question = load_questions(CEVAL, SAMPLE, "val", "middle_school_mathematics")[0]
    prompt = few_shot_prefix(CEVAL, config, "middle_school_mathematics") + CEVAL.question_text(question)
    assert prompt == (
        "以下是中国关于初中数学考试的单项选择题，请选出其中的正确答案。\n\n"
        "计算 3 + 4 × 2 的结果是\nA. 14\nB. 11\nC. 10\nD. 9\n答案：B\n\n"
        "计算 (-2)³ 的结果是\nA. -6\nB. 6\nC. -8\nD. 8\n答案："
    )


def test_cmmlu_one_shot_prompt_is_the_official_text():
    config = EvalConfig("m", CMMLU_SAMPLE, suite="cmmlu", split="test", shots=1)
    question = load_questions(CMMLU, CMMLU_SAMPLE, "test", "chinese_history")[0]
    prompt = few_shot_prefix(CMMLU, config, "chinese_history") + CMMLU.question_text(question)
    assert prompt == (
        "以下是关于中国历史的单项选择题，请直接给出正确答案的选项。\n\n"
        "题目：中国历史上第一个统一的中央集权制国家是\nA. 夏朝\nB. 商朝\nC. 秦朝\nD. 汉朝\n答案是：C\n\n"
        "题目：商鞅变法发生在\nA. 秦国\nB. 齐国\nC. 楚国\nD. 赵国\n答案是："
    )


def _official_ceval(subject_zh: str, dev: list[dict], row: dict) -> str:
    """hkust-nlp/ceval evaluators/llama.py, answer-only branch, transcribed."""
    def format_example(line, include_answer=True):
        example = line["question"]
        for choice in ["A", "B", "C", "D"]:
            example += f'\n{choice}. {line[f"{choice}"]}'
        return example + ("\n答案：" + line["answer"] + "\n\n" if include_answer else "\n答案：")
    prompt = f"以下是中国关于{subject_zh}考试的单项选择题，请选出其中的正确答案。\n\n"
    for line in dev:
        prompt += format_example(line)
    return prompt + format_example(row, include_answer=False)


def _official_cmmlu(subject_zh: str, dev: list[dict], row: dict) -> str:
    """haonan-li/CMMLU src/mp_utils.py format_example + gen_prompt (no tokenizer), transcribed."""
    def format_example(line, include_answer=True):
        prompt = "题目：" + line["Question"]
        for choice in ["A", "B", "C", "D"]:
            prompt += "\n{}. {}".format(choice, line[choice])
        prompt += "\n答案是："
        return prompt + ("{}\n\n".format(line["Answer"]) if include_answer else "")
    prompt = "以下是关于{}的单项选择题，请直接给出正确答案的选项。\n\n".format(subject_zh)
    for line in dev:
        prompt += format_example(line)
    return prompt + format_example(row, include_answer=False)


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("shots", [0, 5])
def test_every_sample_prompt_matches_the_official_evaluator(shots):
    for suite, root, split, official in ((CEVAL, SAMPLE, "val", _official_ceval), (CMMLU, CMMLU_SAMPLE, "test", _official_cmmlu)):
        config = EvalConfig("m", root, suite=suite.name, split=split, shots=shots)
        for subject in list_subjects(suite, root, split):
            dev = _rows(suite.csv_path(root, "dev", subject))[:shots]
            prefix = few_shot_prefix(suite, config, subject)
            for row, question in zip(_rows(suite.csv_path(root, split, subject)), load_questions(suite, root, split, subject)):
                assert prefix + suite.question_text(question) == official(suite.subject(subject).name_zh, dev, row)


def test_too_few_dev_questions_for_the_shots_is_an_error():
    with pytest.raises(DanluError, match="shots"):
        few_shot_prefix(CEVAL, EvalConfig("m", SAMPLE, shots=6), "civil_servant")


# --- answer extraction ------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply, expected", [
    ("B", "B"),                                   # first character is the answer (C-Eval)
    ("C. 秦朝", "C"),
    ("答案是 D。", "D"),                          # C-Eval: 答案是\s?选?项?\s?([A-D])
    ("我认为答案为选项A", "A"),
    ("根据题意，答案：C", "C"),
    ("首先排除A和B，答案是C，不是D", "C"),        # the first matching pattern decides
    ("答案是B……再想想，答案是D", "D"),            # C-Eval takes the pattern's last match
    ("正确的选项为 B", "B"),                       # CMMLU single match
    ("选项C正确", "C"),
    ("分析：A和B都不对，C当选", "C"),              # CMMLU recursive: the innermost "当选"
    ("我选D", "D"),
    ("这道题应该是：B", "B"),                      # CMMLU weak match
    ("只能是 D 了", "D"),                          # the only letter mentioned
    ("我不知道。", None),                          # nothing: no random guess, counted wrong
    ("", None),
])
def test_answer_extraction(reply, expected):
    assert extract_answer(reply) == expected


def test_lm_eval_task_config_avoids_both_traps(tmp_path):
    from danlu.evaluate.lmeval import write_tasks

    tasks = write_tasks("ceval", SAMPLE, ["civil_servant"], "val", tmp_path)
    text = (tmp_path / f"{tasks[0]}.yaml").read_text(encoding="utf-8")
    assert 'target_delimiter: ""' in text  # else lm-eval scores "答案： A"
    assert "features: !function danlu_features.CEVAL" in text  # else `explanation` (full in dev, empty in val) fails
    assert '"以下是中国关于公务员考试的单项选择题，请选出其中的正确答案。\\n\\n"' in text
    assert 'value("string")' in (tmp_path / "danlu_features.py").read_text().lower()
