// The leaderboard view: Bradley–Terry ratings with 95% intervals and ranks, votes, online Elo, and C-Eval/CMMLU.
import { getJSON } from "./api.js";
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function scoreText(score) {
  if (!score) return "-";
  return score.kind === "measured" ? score.score.toFixed(1) : `${score.score.toFixed(1)} (${t("board.ref")})`;
}

// The interval as a bar on a shared scale, the point estimate as a tick.
function intervalCell(row, low, high) {
  const td = cell(`${Math.round(row.lower)} – ${Math.round(row.upper)}`, "ci");
  const span = Math.max(high - low, 1);
  const bar = document.createElement("div");
  bar.className = "ci-bar";
  const range = document.createElement("span");
  range.style.left = `${((row.lower - low) / span) * 100}%`;
  range.style.width = `${Math.max(((row.upper - row.lower) / span) * 100, 1)}%`;
  const point = document.createElement("i");
  point.style.left = `${((row.rating - low) / span) * 100}%`;
  bar.append(range, point);
  td.append(bar);
  return td;
}

function arenaRows(rows) {
  const low = Math.min(...rows.map((r) => r.lower)) - 10;
  const high = Math.max(...rows.map((r) => r.upper)) + 10;
  return rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.model = r.model;
    tr.append(cell(r.rank, "num"), cell(r.model, "model"), cell(Math.round(r.rating), "num rating"),
              intervalCell(r, low, high), cell(r.votes, "num n-votes"), cell(`${r.wins}/${r.losses}/${r.ties}`, "num"),
              cell(Math.round(r.elo), "num"), cell(scoreText(r.ceval), "num"), cell(scoreText(r.cmmlu), "num"));
    return tr;
  });
}

function evalRows(rows) {
  return rows.map((r) => {
    const tr = document.createElement("tr");
    const kind = cell(r.kind === "measured" ? t("board.measured") : t("board.ref"), `kind ${r.kind}`);
    const source = cell(r.source, "source");
    const protocol = document.createElement("div");
    protocol.className = "protocol";
    protocol.textContent = r.protocol;
    source.title = r.protocol;
    source.append(protocol);
    tr.append(cell(r.model, "model"), cell(r.score.toFixed(1), "num"), kind, source);
    return tr;
  });
}

let latest = 0;  // refreshes may overlap (a vote and a tab click): only the newest one draws

export async function refreshBoard() {
  const mine = ++latest;
  const board = await getJSON("/api/leaderboard");
  if (mine !== latest) return;
  const body = $("board-table").querySelector("tbody");
  body.replaceChildren(...arenaRows(board.arena));
  if (!board.arena.length) {
    const tr = document.createElement("tr");
    const td = cell(t("board.empty"), "none");
    td.colSpan = 9;
    tr.append(td);
    body.append(tr);
  }
  const few = board.few_votes ? ` ${t("board.few")}` : "";
  $("board-summary").textContent = t("board.summary", { n: board.n_votes, m: board.n_named_votes }) + few;
  $("board-summary").dataset.votes = board.n_votes;
  $("board-ceval").querySelector("tbody").replaceChildren(...evalRows(board.evals.ceval));
  $("board-cmmlu").querySelector("tbody").replaceChildren(...evalRows(board.evals.cmmlu));
}
