"""C-Eval and CMMLU on disk: the official layouts, subject names and categories, read into `Question`s.

C-Eval (hkust-nlp/ceval): `{split}/{subject}_{split}.csv`, columns `id,question,A,B,C,D,answer,explanation`;
splits dev (5 per subject, with explanations), val, test (answers may be empty). Subjects and categories
are the repository's `subject_mapping.json` (`subject: [English name, Chinese name, category]`).
CMMLU (haonan-li/CMMLU): `{split}/{subject}.csv`, columns `,Question,A,B,C,D,Answer` (an unnamed index
first); splits dev and test. Categories come from its `src/categories.py`: a subject maps to one or
more sub-categories, and a subject can sit in two categories (ancient_chinese: Social Science and
China specific), so `Subject.categories` is a tuple.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from danlu.errors import DanluError

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Subject:
    key: str
    name_en: str
    name_zh: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class Question:
    """One four-option question; `answer` is None where the split withholds it (C-Eval test)."""

    subject: str
    id: str
    question: str
    choices: tuple[str, str, str, str]
    answer: str | None
    explanation: str = ""


# subject_mapping.json, in its order. clinical_medicine has no category there (the file's one gap);
# the C-Eval paper lists it under Other, which is what we use.
CEVAL_SUBJECTS: dict[str, tuple[str, str, str]] = {
    "computer_network": ("Computer Network", "计算机网络", "STEM"),
    "operating_system": ("Operating System", "操作系统", "STEM"),
    "computer_architecture": ("Computer Architecture", "计算机组成", "STEM"),
    "college_programming": ("College Programming", "大学编程", "STEM"),
    "college_physics": ("College Physics", "大学物理", "STEM"),
    "college_chemistry": ("College Chemistry", "大学化学", "STEM"),
    "advanced_mathematics": ("Advanced Mathematics", "高等数学", "STEM"),
    "probability_and_statistics": ("Probability and Statistics", "概率统计", "STEM"),
    "discrete_mathematics": ("Discrete Mathematics", "离散数学", "STEM"),
    "electrical_engineer": ("Electrical Engineer", "注册电气工程师", "STEM"),
    "metrology_engineer": ("Metrology Engineer", "注册计量师", "STEM"),
    "high_school_mathematics": ("High School Mathematics", "高中数学", "STEM"),
    "high_school_physics": ("High School Physics", "高中物理", "STEM"),
    "high_school_chemistry": ("High School Chemistry", "高中化学", "STEM"),
    "high_school_biology": ("High School Biology", "高中生物", "STEM"),
    "middle_school_mathematics": ("Middle School Mathematics", "初中数学", "STEM"),
    "middle_school_biology": ("Middle School Biology", "初中生物", "STEM"),
    "middle_school_physics": ("Middle School Physics", "初中物理", "STEM"),
    "middle_school_chemistry": ("Middle School Chemistry", "初中化学", "STEM"),
    "veterinary_medicine": ("Veterinary Medicine", "兽医学", "STEM"),
    "college_economics": ("College Economics", "大学经济学", "Social Science"),
    "business_administration": ("Business Administration", "工商管理", "Social Science"),
    "marxism": ("Marxism", "马克思主义基本原理", "Social Science"),
    "mao_zedong_thought": ("Mao Zedong Thought", "毛泽东思想和中国特色社会主义理论体系概论", "Social Science"),
    "education_science": ("Education Science", "教育学", "Social Science"),
    "teacher_qualification": ("Teacher Qualification", "教师资格", "Social Science"),
    "high_school_politics": ("High School Politics", "高中政治", "Social Science"),
    "high_school_geography": ("High School Geography", "高中地理", "Social Science"),
    "middle_school_politics": ("Middle School Politics", "初中政治", "Social Science"),
    "middle_school_geography": ("Middle School Geography", "初中地理", "Social Science"),
    "modern_chinese_history": ("Modern Chinese History", "近代史纲要", "Humanities"),
    "ideological_and_moral_cultivation": ("Ideological and Moral Cultivation", "思想道德修养与法律基础", "Humanities"),
    "logic": ("Logic", "逻辑学", "Humanities"),
    "law": ("Law", "法学", "Humanities"),
    "chinese_language_and_literature": ("Chinese Language and Literature", "中国语言文学", "Humanities"),
    "art_studies": ("Art Studies", "艺术学", "Humanities"),
    "professional_tour_guide": ("Professional Tour Guide", "导游资格", "Humanities"),
    "legal_professional": ("Legal Professional", "法律职业资格", "Humanities"),
    "high_school_chinese": ("High School Chinese", "高中语文", "Humanities"),
    "high_school_history": ("High School History", "高中历史", "Humanities"),
    "middle_school_history": ("Middle School History", "初中历史", "Humanities"),
    "civil_servant": ("Civil Servant", "公务员", "Other"),
    "sports_science": ("Sports Science", "体育学", "Other"),
    "plant_protection": ("Plant Protection", "植物保护", "Other"),
    "basic_medicine": ("Basic Medicine", "基础医学", "Other"),
    "clinical_medicine": ("Clinical Medicine", "临床医学", "Other"),
    "urban_and_rural_planner": ("Urban and Rural Planner", "注册城乡规划师", "Other"),
    "accountant": ("Accountant", "注册会计师", "Other"),
    "fire_engineer": ("Fire Engineer", "注册消防工程师", "Other"),
    "environmental_impact_assessment_engineer": ("Environmental Impact Assessment Engineer", "环境影响评价工程师", "Other"),
    "tax_accountant": ("Tax Accountant", "税务师", "Other"),
    "physician": ("Physician", "医师资格", "Other"),
}
CEVAL_CATEGORIES = ("STEM", "Social Science", "Humanities", "Other")
CEVAL_HARD = ("advanced_mathematics", "discrete_mathematics", "probability_and_statistics", "college_chemistry",
              "college_physics", "high_school_mathematics", "high_school_chemistry", "high_school_physics")

# CMMLU src/categories.py: subject -> (Chinese name, sub-categories); sub-category -> category below.
CMMLU_SUBJECTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "agronomy": ("农学", ("other",)), "anatomy": ("解剖学", ("biology",)),
    "ancient_chinese": ("古汉语", ("linguistics", "china specific")), "arts": ("艺术学", ("arts",)),
    "astronomy": ("天文学", ("physics",)), "business_ethics": ("商业伦理", ("business",)),
    "chinese_civil_service_exam": ("中国公务员考试", ("politics", "china specific")),
    "chinese_driving_rule": ("中国驾驶规则", ("other", "china specific")),
    "chinese_food_culture": ("中国饮食文化", ("culture", "china specific")),
    "chinese_foreign_policy": ("中国外交政策", ("politics", "china specific")),
    "chinese_history": ("中国历史", ("history", "china specific")),
    "chinese_literature": ("中国文学", ("literature", "china specific")),
    "chinese_teacher_qualification": ("中国教师资格", ("education", "china specific")),
    "clinical_knowledge": ("临床知识", ("other",)), "college_actuarial_science": ("大学精算学", ("math",)),
    "college_education": ("大学教育学", ("education",)),
    "college_engineering_hydrology": ("大学工程水文学", ("engineering",)), "college_law": ("大学法律", ("law",)),
    "college_mathematics": ("大学数学", ("math",)), "college_medical_statistics": ("大学医学统计", ("statistics",)),
    "college_medicine": ("大学医学", ("other",)), "computer_science": ("计算机科学", ("computer science",)),
    "computer_security": ("计算机安全", ("other",)), "conceptual_physics": ("概念物理学", ("physics",)),
    "construction_project_management": ("建设工程管理", ("other", "china specific")),
    "economics": ("经济学", ("economics",)), "education": ("教育学", ("education",)),
    "electrical_engineering": ("电气工程", ("engineering",)),
    "elementary_chinese": ("小学语文", ("linguistics", "china specific")),
    "elementary_commonsense": ("小学常识", ("other", "china specific")),
    "elementary_information_and_technology": ("小学信息技术", ("other",)),
    "elementary_mathematics": ("初等数学", ("math",)), "ethnology": ("民族学", ("culture", "china specific")),
    "food_science": ("食品科学", ("other",)), "genetics": ("遗传学", ("biology",)),
    "global_facts": ("全球事实", ("global",)), "high_school_biology": ("高中生物", ("biology",)),
    "high_school_chemistry": ("高中化学", ("chemistry",)), "high_school_geography": ("高中地理", ("geography",)),
    "high_school_mathematics": ("高中数学", ("math",)), "high_school_physics": ("高中物理学", ("physics",)),
    "high_school_politics": ("高中政治", ("politics", "china specific")), "human_sexuality": ("人类性行为", ("other",)),
    "international_law": ("国际法学", ("law",)), "journalism": ("新闻学", ("sociology",)),
    "jurisprudence": ("法理学", ("law",)), "legal_and_moral_basis": ("法律与道德基础", ("other",)),
    "logical": ("逻辑学", ("philosophy",)), "machine_learning": ("机器学习", ("computer science",)),
    "management": ("管理学", ("business",)), "marketing": ("市场营销", ("business",)),
    "marxist_theory": ("马克思主义理论", ("philosophy",)),
    "modern_chinese": ("现代汉语", ("linguistics", "china specific")), "nutrition": ("营养学", ("other",)),
    "philosophy": ("哲学", ("philosophy",)), "professional_accounting": ("专业会计", ("business",)),
    "professional_law": ("专业法学", ("law",)), "professional_medicine": ("专业医学", ("other",)),
    "professional_psychology": ("专业心理学", ("psychology",)), "public_relations": ("公共关系", ("politics",)),
    "security_study": ("安全研究", ("politics",)), "sociology": ("社会学", ("culture",)),
    "sports_science": ("体育学", ("other",)),
    "traditional_chinese_medicine": ("中医中药", ("other", "china specific")),
    "virology": ("病毒学", ("biology",)), "world_history": ("世界历史", ("history",)),
    "world_religions": ("世界宗教", ("global",)),
}
CMMLU_GROUPS: dict[str, tuple[str, ...]] = {
    "STEM": ("physics", "chemistry", "biology", "computer science", "math", "engineering", "statistics"),
    "Humanities": ("history", "philosophy", "law", "arts", "literature", "global"),
    "Social Science": ("linguistics", "business", "politics", "culture", "economics", "geography", "psychology",
                       "education", "sociology"),
    "Other": ("other",),
    "China specific": ("china specific",),
}
CMMLU_CATEGORIES = tuple(CMMLU_GROUPS)


def _cmmlu_categories(subcategories: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(cat for cat, subs in CMMLU_GROUPS.items() if any(s in subs for s in subcategories))


@dataclass(frozen=True)
class Suite:
    """One benchmark's layout and prompt wording; `header`/`question_text` give the official prompt pieces."""

    name: str
    subjects: dict[str, Subject]
    categories: tuple[str, ...]
    splits: tuple[str, ...]
    answer_tail: str  # what every question ends with, right before the answer letter

    def subject(self, key: str) -> Subject:
        """A known subject, or an uncategorized one for a CSV that is not in the official list."""
        return self.subjects.get(key) or Subject(key, key, key, ("Other",))

    def header(self, key: str) -> str:
        name = self.subject(key).name_zh
        if self.name == "ceval":
            return f"以下是中国关于{name}考试的单项选择题，请选出其中的正确答案。\n\n"
        return f"以下是关于{name}的单项选择题，请直接给出正确答案的选项。\n\n"

    def question_text(self, q: Question) -> str:
        """The question as the official prompt writes it, ending with the answer cue (no answer)."""
        options = "".join(f"\n{letter}. {text}" for letter, text in zip(LETTERS, q.choices))
        start = "" if self.name == "ceval" else "题目："
        return f"{start}{q.question}{options}\n{self.answer_tail}"

    def shot_text(self, q: Question) -> str:
        return f"{self.question_text(q)}{q.answer}\n\n"

    def csv_path(self, root: Path, split: str, subject: str) -> Path:
        name = f"{subject}_{split}.csv" if self.name == "ceval" else f"{subject}.csv"
        return root / split / name


CEVAL = Suite("ceval", {k: Subject(k, en, zh, (cat,)) for k, (en, zh, cat) in CEVAL_SUBJECTS.items()},
              CEVAL_CATEGORIES, ("dev", "val", "test"), "答案：")
CMMLU = Suite("cmmlu", {k: Subject(k, k.replace("_", " ").title(), zh, _cmmlu_categories(subs))
                        for k, (zh, subs) in CMMLU_SUBJECTS.items()},
              CMMLU_CATEGORIES, ("dev", "test"), "答案是：")
SUITES = {"ceval": CEVAL, "cmmlu": CMMLU}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise DanluError(f"未知的评测集 {name!r}（可选 ceval、cmmlu）/ unknown suite {name!r}: use ceval or cmmlu")
    return SUITES[name]


def data_root(root: Path) -> Path:
    """The folder holding the split folders; a checkout of the CMMLU repo keeps them under data/."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DanluError(f"找不到数据目录 / data folder not found: {root}")
    return root / "data" if (root / "data").is_dir() and not (root / "dev").is_dir() else root


def list_subjects(suite: Suite, root: Path, split: str) -> list[str]:
    """Subjects that have a CSV for this split, in the suite's official order (unknown ones last)."""
    folder = data_root(root) / split
    if not folder.is_dir():
        raise DanluError(f"{root} 下没有 {split}/ 目录 / no {split}/ folder under {root}")
    suffix = f"_{split}.csv" if suite.name == "ceval" else ".csv"
    found = {p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}")}
    known = [k for k in suite.subjects if k in found]
    return known + sorted(found - set(known))


def load_questions(suite: Suite, root: Path, split: str, subject: str) -> list[Question]:
    """Every question of one subject and split, in file order."""
    path = suite.csv_path(data_root(root), split, subject)
    if not path.exists():
        raise DanluError(f"找不到 {path} / missing file: {path}")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return [_row_to_question(suite, subject, row, i) for i, row in enumerate(csv.DictReader(fh))]


def _row_to_question(suite: Suite, subject: str, row: dict, index: int) -> Question:
    if suite.name == "ceval":
        qid, text, answer = row.get("id") or str(index), row["question"], row.get("answer")
    else:  # CMMLU: unnamed index column, capitalised names
        qid, text, answer = row.get("") or str(index), row["Question"], row.get("Answer")
    answer = (answer or "").strip().upper() or None
    return Question(subject, str(qid), text, tuple(row[letter] for letter in LETTERS), answer,
                    (row.get("explanation") or "").strip())
