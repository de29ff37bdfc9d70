"""A scripted engine served by the real server: its replies are given text pieces, its prompts are recorded.

For the server's parsing paths (thinking, tool calls, budgets, switches) without a model's randomness: the
engine's tokens are code points (markup offset by CONTROL, as the remote backend does), it renders with a
real chat template, and each request takes the next script from the queue. `scripted_server` puts it in a
real app under a name, behind the real scheduler's ThreadRunner, and serves that app on loopback.
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from danlu.backends.base import Capabilities, Chunk, GenerationParams, Timings
from danlu.backends.remote import CONTROL, CharTokens
from danlu.config import Settings
from danlu.formats import from_template
from danlu.loader import Resolved
from danlu.server import ServerSettings
from danlu.server.app import background_server, create_app
from danlu.server.runners import ThreadRunner
from danlu.server.scheduler import ServedModel

TEMPLATES = Path(__file__).parent / "reference_templates"


class ScriptedEngine(CharTokens):
    """Replies with the next script (a list of text pieces); `prompts` holds each request's prompt text."""

    spec = None
    n_ctx = 4096

    def __init__(self, template: str, scripts: list[list[str]] | None = None, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.template, self.scripts, self.prompts, self.prompt_ids = template, deque(scripts or []), [], []
        self.capabilities = Capabilities(chat_template=True)

    def typed_as_text(self, text: str) -> bool:
        """Whether the control-token text inside each occurrence of `text` in the last prompt reached the engine
        as plain ids (this tokenizer offsets everything tokenized with special tokens on, markup or not)."""
        prompt, ids = self.prompts[-1], self.prompt_ids[-1]
        starts = [i for i in range(len(prompt)) if prompt.startswith(text, i)]
        spans = [(i + j, len(c)) for i in starts for c in self.control_tokens() for j in range(len(text))
                 if text.startswith(c, j)]
        return bool(starts) and bool(spans) and all(t < CONTROL for at, n in spans for t in ids[at:at + n])

    def chat_template(self) -> str:
        return self.template

    def control_tokens(self) -> tuple[str, ...]:
        return ("<|im_start|>", "<|im_end|>", "<|endoftext|>")

    def generate(self, ids: Sequence[int], params: GenerationParams) -> Iterator[Chunk]:
        self.prompts.append(self.detokenize(ids).decode("utf-8"))
        self.prompt_ids.append(list(ids))
        pieces = self.scripts.popleft() if self.scripts else ["好的。"]
        sent = 0
        for piece in pieces[: params.max_tokens]:
            time.sleep(self.delay_s)
            sent += 1
            yield Chunk(piece, [ord(c) for c in piece])
        reason = "length" if len(pieces) > params.max_tokens else "stop"
        yield Chunk("", [], finish_reason=reason, timings=Timings(len(ids), 0, sent, 0.01, 100.0, 50.0))

    def close(self) -> None:
        pass


def template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def serve(app, name: str, engine: ScriptedEngine) -> None:
    """Put `engine` into the app's scheduler as a loaded model called `name`."""
    fmt = from_template(engine.template, control_tokens=engine.control_tokens())
    resolved = Resolved(None, None, Path(name), "scripted")
    scheduler = app.state.scheduler
    scheduler.resolver.aliases[name] = resolved
    scheduler.loaded[name] = ServedModel(name, resolved, ThreadRunner(engine), engine, fmt, GenerationParams(), None, 0)


@contextmanager
def scripted_server(tmp: Path, engines: dict[str, ScriptedEngine], **settings) -> Iterator[str]:
    """A real danlu server on loopback serving the scripted engines by name; yields the base URL."""
    server_settings = ServerSettings(base=Settings(home=tmp, threads=1), host="127.0.0.1", port=0, keep_alive_s=-1,
                                     **settings)
    app = create_app(server_settings)
    for name, engine in engines.items():
        serve(app, name, engine)
    with background_server(server_settings, app=app) as url:
        yield url
