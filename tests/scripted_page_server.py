"""A danlu server with a slow scripted engine, for the web page's tests: in-process (`serve_scripted`) or as its
own process (`python tests/scripted_page_server.py HOME PORT`), which a test can kill mid-reply and start
again on the same port and home. The engine is the scripted one of scripted.py, with a pause before each
piece so the page really streams; its name is MODEL and it renders with Qwen3's real chat template."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).parent))

from scripted import ScriptedEngine, serve, template  # noqa: E402

from danlu.config import Settings  # noqa: E402
from danlu.server import ServerSettings  # noqa: E402
from danlu.server.app import background_server, create_app  # noqa: E402

MODEL, MODEL_B = "scripted-qwen3", "scripted-qwen3-b"  # the second one answers the arena's right side
LONG = [f"第{n}句。" for n in range(1, 400)]  # a reply that takes a while (the kill test cuts it)


class SlowEngine(ScriptedEngine):
    """The scripted engine, `delay` seconds before each piece."""

    delay = 0.02

    def generate(self, ids, params):
        for chunk in super().generate(ids, params):
            time.sleep(self.delay)
            yield chunk


@contextmanager
def serve_scripted(home: Path, port: int = 0, scripts: list[list[str]] | None = None,
                   delay: float = 0.02) -> Iterator[tuple[str, SlowEngine, SlowEngine]]:
    """A real server on 127.0.0.1 serving two slow engines as MODEL and MODEL_B; yields the URL and both."""
    engines = [SlowEngine(template("qwen3.jinja"), scripts), SlowEngine(template("qwen3.jinja"))]
    settings = ServerSettings(base=Settings(home=home, threads=1), host="127.0.0.1", port=port, keep_alive_s=-1,
                              parallel=2)
    app = create_app(settings)
    for name, engine in zip((MODEL, MODEL_B), engines):
        engine.delay = delay
        serve(app, name, engine)
    with background_server(settings, app=app) as url:
        yield url, *engines


if __name__ == "__main__":  # HOME PORT: serve long replies until killed
    with serve_scripted(Path(sys.argv[1]), int(sys.argv[2]), [LONG] * 20, delay=0.05) as (url, _, _):
        print(url, flush=True)
        while True:
            time.sleep(1)
