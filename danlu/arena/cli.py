"""`danlu leaderboard [--json]`: arena ratings (Bradley–Terry with 95% intervals, rank, votes, online Elo) and
C-Eval/CMMLU scores; danlu/cli/commands.py registers the typer function. Printing only: the numbers come from
danlu.arena.leaderboard.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from danlu.arena.leaderboard import SUITES, leaderboard
from danlu.config import get_settings
from danlu.i18n import t
from danlu.terminal import plain

console = Console()
SUITE_NAMES = {"ceval": "C-Eval", "cmmlu": "CMMLU"}


def leaderboard_command(as_json: bool = typer.Option(False, "--json", help="输出 JSON / print JSON")) -> None:
    """竞技场排行榜与 C-Eval/CMMLU 成绩 / the arena leaderboard with C-Eval/CMMLU scores."""
    board = leaderboard(get_settings().db_path)
    if as_json:
        print(json.dumps(board, ensure_ascii=False, indent=2))
        return
    console.print(arena_table(board))
    console.print(t(f"评分：Bradley–Terry（400·β + 1000）。匿名投票 {board['n_votes']} 票计入排名；看得见名字的并排投票 {board['n_named_votes']} 票不计入。"
                    f"区间：{board['bootstrap_rounds']} 轮自助法 95% 置信区间；Elo 仅供对照（与投票顺序有关）。",
                    f"Rating: Bradley–Terry (400·β + 1000). {board['n_votes']} anonymous votes are rated; {board['n_named_votes']} side-by-side votes with "
                    f"the names visible are not. Intervals: 95% from {board['bootstrap_rounds']} bootstrap rounds; "
                    "Elo only for comparison (it depends on the order of the votes)."), highlight=False)
    if board["few_votes"]:
        console.print(t("[yellow]票数还少：一方全胜时评分会拉得很开、区间缩成一个点；多投几票再下结论。[/]",
                        "[yellow]Few votes so far: when one side has won every time the ratings spread far apart and "
                        "the interval shrinks to a point; vote more before concluding.[/]"))
    for suite in SUITES:
        console.print(eval_table(suite, board["evals"][suite]))


def _score_text(score: dict | None) -> str:
    if score is None:
        return "-"
    return f"{score['score']:.1f}" + ("" if score["kind"] == "measured" else t(" (参考)", " (ref)"))


def arena_table(board: dict) -> Table:
    table = Table(title=t("竞技场排行榜", "Arena leaderboard"))
    for col in (t("排名", "rank"), t("模型", "model"), t("评分", "rating"), t("95% 区间", "95% CI"), t("票数", "votes"),
                t("胜/负/平", "W/L/T"), "Elo", "C-Eval", "CMMLU"):
        table.add_column(col, justify="left" if col == t("模型", "model") else "right")
    for r in board["arena"]:
        table.add_row(str(r["rank"]), plain(r["model"], single_line=True), f"{r['rating']:.0f}", f"{r['lower']:.0f} – {r['upper']:.0f}",
                      str(r["votes"]), f"{r['wins']}/{r['losses']}/{r['ties']}", f"{r['elo']:.0f}",
                      _score_text(r["ceval"]), _score_text(r["cmmlu"]))
    if not board["arena"]:
        table.caption = t("还没有匿名投票：danlu serve 后在网页的竞技场里投票", "no anonymous votes yet: vote in the web "
                          "page's arena (danlu serve)")
    return table


def eval_table(suite: str, rows: list[dict]) -> Table:
    table = Table(title=f"{SUITE_NAMES[suite]} ({t('本机测得在前，其次为公开参考分', 'measured here, then published')})")
    for col in (t("模型", "model"), t("分数", "score"), t("类型", "kind"), t("来源", "source"), t("口径", "protocol")):
        table.add_column(col)
    for r in rows:
        kind = t("本机", "measured") if r["kind"] == "measured" else t("参考", "reference")
        table.add_row(plain(r["model"], single_line=True), f"{r['score']:.1f}", kind, plain(r["source"]), plain(r["protocol"]))
    return table
