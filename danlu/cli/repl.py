"""The interactive chat loop behind `danlu chat`: slash commands, ChatRWKV's + commands, streaming output.

Every finished message goes to SQLite as it happens, so a killed process loses no completed turn.
Ctrl-C stops the current reply (what was said is kept) without leaving the chat.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from danlu.backends.base import Chunk
from danlu.chat import Message
from danlu.errors import DanluError
from danlu.i18n import t
from danlu.loader import Loaded
from danlu.sessions import SessionStore
from danlu.cli.reply_view import ReplyView
from danlu.terminal import one_line, plain

SETTABLE = {"temperature": float, "top_p": float, "top_k": int, "repetition_penalty": float,
            "max_tokens": int, "presence_penalty": float, "frequency_penalty": float, "seed": int}

def help_text() -> str:
    """The command list in the interface language (chosen at run time, not import time)."""
    return t(
    "命令：/system 文本 设置系统提示 · /reset 新对话 · /retry 重新生成 · /set 参数 值 · /save 名称 · /load 名称 · "
    "/history 历史 · /think 与 /nothink 开关思考 · /help 帮助 · /bye 退出；ChatRWKV 命令：+gen 文本（自由续写）· +qa 问题（无历史问答）· +qq 问题（Q/A 续写）· +reset · ++ 重试 · +++ 接着写。"
    "生成中按 Ctrl-C 停止。",
    "Commands: /system TEXT · /reset · /retry · /set KEY VALUE · /save NAME · /load NAME · /history · /think · /nothink "
    "· /help · /bye; "
    "ChatRWKV: +gen TEXT (free generation) · +qa Q (question without history) · +qq Q (Q/A completion) · +reset · "
    "++ (retry) · +++ (continue). "
    "Ctrl-C stops a reply.",
    )


class ChatREPL:
    """One user, one model, one session at a time."""

    def __init__(self, loaded: Loaded, sessions: SessionStore, console: Console | None = None,
                 read: Callable[[str], str] = input, model_id: str = ""):
        self.loaded, self.sessions = loaded, sessions
        self.console = console or Console()
        self.read = read
        self.model_id = model_id or loaded.resolved.label
        self.session_id = sessions.create(self.model_id)
        self.conv = loaded.conversation(on_message=self._persist)

    def _persist(self, message: Message) -> None:
        self.sessions.add_message(self.session_id, message.role, message.content)

    # --- loop -------------------------------------------------------------------------------
    def run(self) -> None:
        model = escape(one_line(self.model_id))
        self.console.print(t(f"[bold]丹炉[/] · {model} · 输入 /help 查看命令", f"[bold]danlu[/] · {model} · /help for commands"))
        while True:
            try:
                line = self.read(t("你> ", "you> "))
            except (EOFError, KeyboardInterrupt):
                self.console.print()
                return
            if self.handle(line.strip()) == "bye":
                return

    def handle(self, line: str) -> str | None:
        """Run one input line; returns "bye" to leave."""
        if not line:
            return None
        try:
            return self._dispatch(line)
        except DanluError as exc:
            self.console.print(plain(exc, "red"))
            return None

    def _dispatch(self, line: str) -> str | None:
        head, _, rest = line.partition(" ")
        command = COMMANDS.get(head)
        if command:
            return command(self, rest.strip())
        if head.startswith("/"):
            self.console.print(plain(t(f"未知命令 {head}。", f"Unknown command {head}.") + " " + help_text()))
            return None
        self.stream(self.conv.send(line))
        self._save_state()
        return None

    def _save_state(self) -> None:
        """Recurrent-state engines (RWKV) keep their state with the session: a resumed chat reads nothing again."""
        export = getattr(self.loaded.engine, "export_state", None)
        if export:
            self.sessions.save_state(self.session_id, export())

    # --- output -----------------------------------------------------------------------------
    def stream(self, chunks: Iterator[Chunk]) -> Chunk | None:
        """Print chunks as they come (thinking dimmed, then folded: reply_view.py); Ctrl-C closes the generator
        (the reply so far is kept)."""
        last = None
        sys.stdout.write(t("助手> ", "assistant> "))
        view = ReplyView(self.console, self.conv.fmt.reasoning, self.conv.thinking)
        try:
            for chunk in chunks:
                view.feed(chunk.text)  # the model's escape sequences are shown, never obeyed
                last = chunk
        except KeyboardInterrupt:
            getattr(chunks, "close", lambda: None)()
            sys.stdout.write(t(" [已停止]", " [stopped]"))
        finally:
            view.close()
        sys.stdout.write("\n")
        self._notice_dropped()
        return last

    def _notice_dropped(self) -> None:
        prompt = self.conv.last_prompt
        if prompt and prompt.dropped:
            n = len(prompt.dropped)
            self.console.print(t(f"[yellow]上下文已满：丢弃了最早的 {n} 条消息（系统提示保留）。[/]",
                                 f"[yellow]Context full: dropped the {n} oldest messages (system prompt kept).[/]"))
            prompt.dropped.clear()

    # --- commands ---------------------------------------------------------------------------
    def cmd_bye(self, _: str) -> str:
        return "bye"

    def cmd_help(self, _: str) -> None:
        self.console.print(help_text())

    def cmd_system(self, text: str) -> None:
        self.conv.system = text or None
        self.sessions.add_message(self.session_id, "system", text)
        if not self.conv.fmt.supports_system:
            self.console.print(t(f"[yellow]注意：{self.conv.fmt.name} 格式没有系统提示，这段文字不会发给模型。[/]",
                                 f"[yellow]Note: the {self.conv.fmt.name} format has no system prompt; it will not reach the model.[/]"))
            return
        self.console.print(t("系统提示已设置。", "System prompt set."))

    def cmd_reset(self, _: str) -> None:
        self.conv.reset()
        self.session_id = self.sessions.create(self.model_id)
        self.console.print(t("已开始新对话。", "New conversation."))

    def cmd_retry(self, _: str) -> None:
        self.stream(self.conv.retry())
        self.sessions.replace_messages(self.session_id, self._transcript())

    def _transcript(self) -> list[tuple[str, str]]:
        system = [("system", self.conv.system)] if self.conv.system else []
        return system + [(m.role, m.content) for m in self.conv.history]

    def cmd_set(self, rest: str) -> None:
        key, _, value = rest.partition(" ")
        if key not in SETTABLE or not value:
            self.console.print(t(f"用法：/set 参数 值；参数可为 {', '.join(SETTABLE)}", f"usage: /set KEY VALUE; KEY in {', '.join(SETTABLE)}"))
            return
        try:
            setattr(self.conv.params, key, SETTABLE[key](value))
        except ValueError:
            self.console.print(plain(t(f"{key} 需要一个数字，收到 {value!r}", f"{key} needs a number, got {value!r}")))
            return
        self.console.print(f"{key} = {getattr(self.conv.params, key)}")

    def cmd_save(self, name: str) -> None:
        if not name:
            self.console.print(t("用法：/save 名称", "usage: /save NAME"))
            return
        self.sessions.name(self.session_id, name)
        self.console.print(plain(t(f"已保存为 {name}。", f"Saved as {name}.")))

    def cmd_load(self, name: str) -> None:
        info = self.sessions.find(name)
        if info.model != self.model_id:
            self.console.print(plain(t(f"注意：该会话原用模型 {one_line(info.model)}。",
                                       f"Note: this session used {one_line(info.model)}."), "yellow"))
        self.session_id = info.id
        self.conv.load([Message(r, c) for r, c in self.sessions.messages(info.id)])
        state, restore = self.sessions.load_state(info.id), getattr(self.loaded.engine, "import_state", None)
        if state and restore and info.model == self.model_id:
            restore(state)
        n = len(self.conv.history)
        self.console.print(plain(t(f"已载入 {name}（{n} 条消息）。", f"Loaded {name} ({n} messages).")))

    def cmd_think(self, _: str) -> None:
        self._switch_thinking(True)

    def cmd_nothink(self, _: str) -> None:
        self._switch_thinking(False)

    def _switch_thinking(self, on: bool) -> None:
        """/think, /nothink: a hybrid model's switch; a model that always or never thinks says so."""
        mode = self.conv.fmt.thinking
        if mode != "hybrid":
            self.console.print(plain(t(f"这个模型{'总是思考' if mode == 'always' else '没有思考模式'}，无法切换。",
                                       f"This model {'always thinks' if mode == 'always' else 'has no thinking mode'}: "
                                       "nothing to switch."), "yellow"))
            return
        self.conv.thinking = on
        self.console.print(t("思考已打开。" if on else "思考已关闭。", "Thinking on." if on else "Thinking off."))

    def cmd_history(self, _: str) -> None:
        """Stored text (it may have been written through the web page): plain, control characters shown."""
        if self.conv.system:
            self.console.print(Text.assemble(("system: ", "dim"), plain(self.conv.system)))
        for m in self.conv.history:
            self.console.print(Text.assemble(plain(f"{m.role}: ", "bold", single_line=True), plain(m.content)))

    # ChatRWKV's commands
    def cmd_gen(self, text: str) -> None:
        """+gen: free generation from "\\n" + text, outside the conversation (no chat newline rules)."""
        self._free_generation("\n" + text, stop=[])

    def cmd_qq(self, question: str) -> None:
        """+qq: ChatRWKV's `\\nQ: …\\nA:` question from a fresh state, outside the conversation."""
        self._free_generation(f"\nQ: {question}\nA:", stop=["\n\n"])

    def _free_generation(self, text: str, stop: list[str]) -> None:
        engine = self.loaded.engine
        rules = getattr(engine, "chat_rules", None)
        if rules is not None:
            engine.chat_rules = None
        try:
            ids = engine.tokenize(text, add_bos=engine.bos_token_id() is not None)
            self.stream(engine.generate(ids, replace(self.conv.params, stop=stop)))
        finally:
            if rules is not None:
                engine.chat_rules = rules

    def cmd_continue(self, _: str) -> None:
        """+++: continue the last reply."""
        self.stream(self.conv.continue_reply())
        self.sessions.replace_messages(self.session_id, self._transcript())

    def cmd_qa(self, question: str) -> None:
        """+qa: a question answered without the chat history."""
        single = self.loaded.conversation(self.conv.params, self.conv.system)
        self.stream(single.send(question))


COMMANDS: dict[str, Callable[[ChatREPL, str], str | None]] = {
    "/bye": ChatREPL.cmd_bye, "/exit": ChatREPL.cmd_bye, "/quit": ChatREPL.cmd_bye,
    "/help": ChatREPL.cmd_help, "/system": ChatREPL.cmd_system, "/reset": ChatREPL.cmd_reset,
    "/retry": ChatREPL.cmd_retry, "/set": ChatREPL.cmd_set, "/save": ChatREPL.cmd_save,
    "/load": ChatREPL.cmd_load, "/history": ChatREPL.cmd_history, "/think": ChatREPL.cmd_think,
    "/nothink": ChatREPL.cmd_nothink,
    "+gen": ChatREPL.cmd_gen, "+qa": ChatREPL.cmd_qa, "+qq": ChatREPL.cmd_qq, "+reset": ChatREPL.cmd_reset,
    "++": ChatREPL.cmd_retry, "+": ChatREPL.cmd_retry, "+++": ChatREPL.cmd_continue,
}
