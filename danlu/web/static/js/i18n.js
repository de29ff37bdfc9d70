// Interface text: Chinese by default, English with ?lang=en or the toggle (remembered in localStorage).
// Static elements carry data-i18n="key" (text) or data-i18n-placeholder="key"; scripts call t("key").

const TEXT = {
  "tab.chat": ["对话", "Chat"],
  "tab.arena": ["竞技场", "Arena"],
  "tab.board": ["排行榜", "Leaderboard"],
  "key.button": ["API 密钥", "API key"],
  "key.title": ["API 密钥", "API key"],
  "key.explain": ["服务器以 --api-key 启动时需要它；只保存在这个浏览器里（localStorage），以 Authorization: Bearer 发送。",
                  "Needed when the server runs with --api-key. Kept only in this browser (localStorage) and sent as Authorization: Bearer."],
  "key.needed": ["服务器要求 API 密钥（401）：请输入 danlu serve --api-key 的值。", "The server asks for an API key (401): enter the value given to danlu serve --api-key."],
  "key.placeholder": ["粘贴密钥", "paste the key"],
  "key.clear": ["清除", "Clear"],
  "key.save": ["保存", "Save"],
  "model": ["模型", "Model"],
  "send": ["发送", "Send"],
  "stop": ["停止", "Stop"],
  "chat.new": ["＋ 新对话", "＋ New chat"],
  "chat.sessions": ["已保存的会话", "Saved sessions"],
  "chat.noSessions": ["还没有会话", "No sessions yet"],
  "chat.settings": ["参数与人设", "Settings & persona"],
  "chat.persona": ["人设", "Persona"],
  "chat.system": ["系统提示", "System prompt"],
  "chat.systemPlaceholder": ["（可选）例如：你是一位耐心的中文老师。", "(optional) e.g. You are a patient Chinese teacher."],
  "chat.placeholder": ["输入消息，Enter 发送，Shift+Enter 换行", "Type a message: Enter sends, Shift+Enter for a new line"],
  "chat.regenerate": ["重新生成", "Regenerate"],
  "chat.empty": ["选一个模型，开始对话。每轮说完即存入与 danlu chat 相同的会话库。",
                 "Pick a model and start. Every finished turn is saved in the same sessions database as danlu chat."],
  "chat.saved": ["已保存", "saved"],
  "chat.firstToken": ["首字", "first token"],
  "chat.stopped": ["[已停止]", "[stopped]"],
  "chat.notRunnable": ["这个模型现在不能用：", "This model cannot run now: "],
  "chat.loading": ["首次使用会先加载模型…", "loading the model on first use…"],
  "chat.messages": ["条消息", "messages"],
  "persona.none": ["无（模型默认）", "None (the model's default)"],
  "persona.assistant": ["中文助手", "Chinese assistant"],
  "persona.teacher": ["语文老师", "Chinese teacher"],
  "persona.coder": ["编程助手", "Coding assistant"],
  "persona.translator": ["中英翻译", "Translator"],
  "group.ready": ["可运行（已下载、放得下）", "Ready (downloaded, fits)"],
  "group.download": ["可下载（danlu pull 后可用）", "Downloadable (usable after danlu pull)"],
  "group.other": ["本机放不下或暂不支持", "Does not fit here or unsupported"],
  "group.remote": ["远程", "Remote"],
  "info.loaded": ["已加载", "loaded"],
  "info.pull": ["下载后可用：", "download first: "],
  "info.ready": ["可运行", "ready"],
  "info.memory": ["预测内存", "predicted memory"],
  "info.speed": ["速度", "speed"],
  "speed.fast": ["快", "fast"],
  "speed.medium": ["中", "medium"],
  "speed.slow": ["慢", "slow"],
  "speed.very slow": ["很慢", "very slow"],
  "speed.-": ["-", "-"],
  "arena.anonymous": ["匿名对战", "Anonymous battle"],
  "arena.sideBySide": ["并排对比", "Side by side"],
  "arena.left": ["左", "Left"],
  "arena.right": ["右", "Right"],
  "arena.start": ["开始新对战", "New battle"],
  "arena.hint": ["匿名对战：服务器从已下载且放得下的模型中随机挑两个，投票之后才显示名字；只有匿名对战的投票计入排行榜。",
                 "Anonymous battle: the server draws two downloaded models that fit, and shows their names only after your vote. Only anonymous votes count for the leaderboard."],
  "arena.hintNamed": ["并排对比：两个选定的模型回答同样的问题；看得见名字的投票会保存，但不计入排行榜。",
                      "Side by side: two chosen models answer the same turns; votes cast with the names visible are stored but not rated."],
  "arena.modelA": ["模型 A", "Model A"],
  "arena.modelB": ["模型 B", "Model B"],
  "arena.placeholder": ["同一句话会同时发给两边", "The same message goes to both sides at once"],
  "arena.send": ["发给两边", "Send to both"],
  "arena.ready": ["对战已开始：发一条消息，两边同时作答；可以多轮，然后投票。", "The battle is on: send a message, both answer at once; go on for several turns, then vote."],
  "arena.canVote": ["第 {n} 轮已保存。继续追问，或者投票。", "Turn {n} saved. Ask more, or vote."],
  "arena.voted": ["已记录投票：{vote}。开始新对战再来一局。", "Vote recorded: {vote}. Start a new battle for another round."],
  "arena.start.first": ["先点“开始新对战”。", "Click “New battle” first."],
  "arena.notSaved": ["这一轮没有完成，未保存；可以再发一次。", "This turn did not finish and was not saved; send it again."],
  "vote.a": ["◀ 左边更好", "◀ Left is better"],
  "vote.b": ["右边更好 ▶", "Right is better ▶"],
  "vote.tie": ["＝ 平局", "＝ Tie"],
  "vote.bothBad": ["✕ 都不好", "✕ Both bad"],
  "board.title": ["竞技场排行榜", "Arena leaderboard"],
  "board.refresh": ["刷新", "Refresh"],
  "board.rank": ["排名", "Rank"],
  "board.rating": ["评分", "Rating"],
  "board.ci": ["95% 区间", "95% CI"],
  "board.votes": ["票数", "Votes"],
  "board.record": ["胜/负/平", "W/L/T"],
  "board.summary": ["{n} 票匿名投票计入排名；{m} 票并排（看得见名字）投票不计入。",
                    "{n} anonymous votes are rated; {m} side-by-side votes (names visible) are not."],
  "board.few": ["票数还少：一方全胜时评分会拉得很开、区间缩成一个点；多投几票再下结论。",
                "Few votes so far: when one side has won every time the ratings spread far apart and the interval shrinks to a point; vote more before concluding."],
  "board.empty": ["还没有匿名投票：去竞技场打一局。", "No anonymous votes yet: play a battle in the arena."],
  "board.method": ["评分：Bradley–Terry（逻辑回归，平局算半胜，评分 = 400·β + 1000）；区间：100 轮自助法 95% 置信区间；排名 = 1 + 下界高于本模型上界的模型数；Elo（K=4）按投票顺序在线更新，仅供对照。",
                   "Rating: Bradley–Terry (logistic regression, a tie is half a win, rating = 400·β + 1000); interval: 95% from 100 bootstrap rounds; rank = 1 + the number of models whose lower bound is above this one's upper bound; Elo (K=4) is updated vote by vote and shown only for comparison."],
  "board.ref": ["参考", "ref"],
  "board.measured": ["本机", "measured"],
  "error.network": ["连不上服务器：", "Cannot reach the server: "],
};

const params = new URLSearchParams(location.search);
let lang = (params.get("lang") || localStorage.getItem("danlu.lang") || "zh").startsWith("en") ? "en" : "zh";

export function currentLang() { return lang; }

export function t(key, values = {}) {
  const pair = TEXT[key];
  let text = pair ? pair[lang === "en" ? 1 : 0] : key;
  for (const [name, value] of Object.entries(values)) text = text.replaceAll(`{${name}}`, value);
  return text;
}

export function applyText(root = document) {
  document.documentElement.lang = lang === "en" ? "en" : "zh-CN";
  root.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  root.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
}

export function toggleLang() {
  lang = lang === "en" ? "zh" : "en";
  localStorage.setItem("danlu.lang", lang);
  const url = new URL(location.href);
  url.searchParams.set("lang", lang);
  history.replaceState(null, "", url);
  applyText();
}
