// The leaderboard view: Bradley–Terry ratings with 95% intervals and ranks, votes, online Elo, and one C-Eval /
// CMMLU score per model (measured here first, else one published score by the stated rule; the others in the
// tooltip). Cells carry their column name, so on a phone each row stacks into a card. When the server cannot
// be reached the last board stays, with a notice, never a blank.
import { getJSON } from "./api.js";
import { t } from "./i18n.js";
import { pickLang } from "./models.js";

const $ = (id) => document.getElementById(id);
const ARENA_COLUMNS = ["board.rank", "model", "board.rating", "board.ci", "board.votes", "board.record", "Elo", "C-Eval", "CMMLU"];
let last = null;

function cell(text, className, label) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  if (label) td.dataset.label = t(label);  // a text key, or a name such as Elo that t() gives back
  return td;
}

function scoreText(score) {
  if (!score) return "-";
  return score.kind === "measured" ? `${score.score.toFixed(1)} (${t("board.measured")})` : `${score.score.toFixed(1)} (${t("board.ref")})`;
}

function scoreCell(score, label) {
  const td = cell(scoreText(score), "num", label);
  if (score && score.note) td.title = pickLang(score.note);
  return td;
}

// The interval as a bar on a shared scale, the point estimate as a tick.
function intervalCell(row, low, high) {
  const td = cell(`${Math.round(row.lower)} – ${Math.round(row.upper)}`, "ci", "board.ci");
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
    tr.append(cell(r.rank, "num", "board.rank"), cell(r.model, "model", "model"), cell(Math.round(r.rating), "num rating", "board.rating"),
              intervalCell(r, low, high), cell(r.votes, "num n-votes", "board.votes"),
              cell(`${r.wins}/${r.losses}/${r.ties}`, "num", "board.record"), cell(Math.round(r.elo), "num", "Elo"),
              scoreCell(r.ceval, "C-Eval"), scoreCell(r.cmmlu, "CMMLU"));
    return tr;
  });
}

function othersText(row) {
  if (!row.others || !row.others.length) return "";
  const lines = row.others.map((o) => `${o.score.toFixed(1)} — ${pickLang(o.note)}`);
  return `\n${t("board.others")}\n${lines.join("\n")}`;
}

function evalRows(rows) {
  return rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.model = r.model;
    const kind = cell(r.kind === "measured" ? t("board.measured") : t("board.ref"), `kind ${r.kind}`, "board.kind");
    const source = cell(pickLang(r.note || r.source), "source", "board.source");
    const protocol = document.createElement("div");
    protocol.className = "protocol";
    protocol.textContent = r.protocol;
    source.append(protocol);
    const score = cell(r.score.toFixed(1), "num score", "board.score");
    if (r.others && r.others.length) score.classList.add("has-others");
    tr.title = `${pickLang(r.note || r.source)}\n${r.protocol}${othersText(r)}`;
    tr.append(cell(r.model, "model", "model"), score, kind, source);
    return tr;
  });
}

function emptyRow(key) {
  const tr = document.createElement("tr");
  const td = cell(t(key), "none");
  td.colSpan = ARENA_COLUMNS.length;
  tr.append(td);
  return tr;
}

function draw(board) {
  const body = $("board-table").querySelector("tbody");
  body.replaceChildren(...arenaRows(board.arena));
  if (!board.arena.length) body.append(emptyRow("board.empty"));
  const few = board.few_votes ? ` ${t("board.few")}` : "";
  const summaryKey = board.n_votes === 1 ? "board.summaryOne" : "board.summary";
  $("board-summary").textContent = t(summaryKey, { n: board.n_votes, m: board.n_named_votes }) + few;
  $("board-summary").dataset.votes = board.n_votes;
  $("board-rule").textContent = pickLang(board.score_rule || "");
  $("board-ceval").querySelector("tbody").replaceChildren(...evalRows(board.evals.ceval));
  $("board-cmmlu").querySelector("tbody").replaceChildren(...evalRows(board.evals.cmmlu));
}

let latest = 0;  // refreshes may overlap (a vote and a tab click): only the newest one draws

export async function refreshBoard() {
  const mine = ++latest;
  try {
    const board = await getJSON("/api/leaderboard");
    if (mine !== latest) return;
    last = board;
    $("board-error").hidden = true;
    draw(board);
  } catch (error) {
    if (mine !== latest) return;
    $("board-error").textContent = `${t("board.unavailable")}${pickLang(error.message)}`;
    $("board-error").hidden = false;
    if (!last) $("board-table").querySelector("tbody").replaceChildren(emptyRow("board.noData"));
  }
}

export function retranslateBoard() {
  if (last) draw(last);
}
