"""The same CSVs as an lm-evaluation-harness task, run offline, read back as predictions: the agreement check.

Written for lm-eval 0.4.13. One task per subject (`danlu_<suite>_<subject>`), a multiple-choice task over
local CSVs (`dataset_path: csv`), prompt identical to danlu's `ao` byte for byte: `description` is the
subject header, `doc_to_text` the question ending in the answer cue, `fewshot_split: dev` with the
`first_n` sampler. Two traps, both handled: lm-eval puts `target_delimiter` (a space by default) before
each choice, so it is set to ""; and `datasets` infers column types per split (C-Eval's `explanation` is
filled in dev and empty in val; option columns of numbers become ints), so every column is declared a
string through explicit `features`. lm-eval scores one log-likelihood per choice; with one-token
choices after the same context its argmax equals `ao`'s argmax over the four letter logits.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .datasets import LETTERS, Suite, data_root, get_suite

FEATURES_MODULE = '''"""Explicit string features for the CSVs (written by danlu)."""
import datasets

CEVAL = datasets.Features({name: datasets.Value("string") for name in
                           ("id", "question", "A", "B", "C", "D", "answer", "explanation")})
# pandas names CMMLU's unnamed index column "Unnamed: 0"
CMMLU = datasets.Features({name: datasets.Value("string") for name in ("Unnamed: 0", "Question", "A", "B", "C", "D", "Answer")})
'''


def task_name(suite: Suite, subject: str) -> str:
    return f"danlu_{suite.name}_{subject}"


def write_tasks(suite_name: str, data: Path, subjects: list[str], split: str, folder: Path) -> list[str]:
    """A YAML per subject plus the features module in `folder` (pass it as --include_path); task names back."""
    suite = get_suite(suite_name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "danlu_features.py").write_text(FEATURES_MODULE, encoding="utf-8")
    root = data_root(data).resolve()
    for subject in subjects:
        (folder / f"{task_name(suite, subject)}.yaml").write_text(_task_yaml(suite, root, subject, split), encoding="utf-8")
    return [task_name(suite, s) for s in subjects]


def _task_yaml(suite: Suite, root: Path, subject: str, split: str) -> str:
    q, answer, features = ("question", "answer", "CEVAL") if suite.name == "ceval" else ("Question", "Answer", "CMMLU")
    start = "" if suite.name == "ceval" else "题目："
    text = start + "{{" + q + "}}" + "".join(f"\n{x}. {{{{{x}}}}}" for x in LETTERS) + "\n" + suite.answer_tail
    files = {"dev": str(suite.csv_path(root, "dev", subject)), split: str(suite.csv_path(root, split, subject))}
    return "\n".join([
        f"task: {task_name(suite, subject)}",
        "dataset_path: csv",
        "dataset_kwargs:",
        f"  data_files: {json.dumps(files, ensure_ascii=False)}",
        f"  features: !function danlu_features.{features}",
        f"test_split: {split}",
        "fewshot_split: dev",
        "fewshot_config:",
        "  sampler: first_n",
        "output_type: multiple_choice",
        f"description: {json.dumps(suite.header(subject), ensure_ascii=False)}",
        f"doc_to_text: {json.dumps(text, ensure_ascii=False)}",
        f'doc_to_choice: {json.dumps(list(LETTERS))}',
        f"doc_to_target: \"{{{{{list(LETTERS)}.index({answer})}}}}\"",
        'target_delimiter: ""',
        'fewshot_delimiter: "\\n\\n"',
        "metric_list:",
        "  - metric: acc",
        "    aggregation: mean",
        "    higher_is_better: true",
        "",
    ])


OFFLINE_VARS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextlib.contextmanager
def offline_env() -> Iterator[None]:
    """lm-eval and datasets must never reach for the Hub here (set before and after their import);
    restored afterwards so the rest of the process (danlu pull) still reaches its Hub."""
    saved_env = {name: os.environ.get(name) for name in OFFLINE_VARS}
    os.environ.update({name: "1" for name in OFFLINE_VARS})
    import datasets
    import huggingface_hub.constants

    saved = (datasets.config.HF_DATASETS_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    datasets.config.HF_DATASETS_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved
        for name, value in saved_env.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


@dataclass(frozen=True)
class Sample:
    """lm-eval's view of one question: its choice, the context it scored, the four log-likelihoods."""

    pred: str
    context: str
    logliks: tuple[float, ...]


def run_lmeval(model, tokenizer, tasks: list[str], include_path: Path, shots: int,
               limit: int | None = None) -> tuple[dict, float]:
    """lm-eval's `hf` model over an already loaded transformers model (the very object danlu's transformers
    engine runs, so both harnesses see the same weights); returns (samples per task, seconds evaluating).
    The CLI equivalent: `lm_eval --model hf --model_args pretrained=DIR[,gguf_file=F] --tasks … --include_path
    DIR --num_fewshot N --batch_size 1 --log_samples`."""
    with offline_env():
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
        manager = TaskManager(include_path=str(include_path))
        start = time.perf_counter()
        results = simple_evaluate(model=lm, tasks=tasks, num_fewshot=shots, task_manager=manager, log_samples=True,
                                  batch_size=1, limit=limit)  # limit: the first N questions of each subject
    return results["samples"], time.perf_counter() - start


def read_samples(samples: dict, suite_name: str) -> dict[tuple[str, str], Sample]:
    """{(subject, id): Sample} from lm-eval's samples: the argmax of the four log-likelihoods."""
    suite = get_suite(suite_name)
    out: dict[tuple[str, str], Sample] = {}
    prefix = f"danlu_{suite.name}_"
    for task, rows in samples.items():
        subject = task[len(prefix):]
        for row in rows:
            logliks = tuple(float(r[0]) for r in row["filtered_resps"])
            qid = row["doc"].get("id" if suite.name == "ceval" else "Unnamed: 0")
            context = _first_context(row["arguments"])
            key = (subject, str(qid if qid is not None else row["doc_id"]))
            out[key] = Sample(LETTERS[logliks.index(max(logliks))], context, logliks)
    return out


def _first_context(arguments) -> str:
    """In memory the arguments are [(context, choice), …]; in the samples files {"gen_args_0": {"arg_0": …}}."""
    if isinstance(arguments, dict):
        return arguments["gen_args_0"]["arg_0"]
    return arguments[0][0]
