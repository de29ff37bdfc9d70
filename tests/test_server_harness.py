"""Helpers the server tests share: a real uvicorn server on 127.0.0.1 (a free port) in a thread.

Every server gets its own DANLU_HOME, passed in its settings (tests' per-test DANLU_HOME env does not
reach a module-scoped server); the real pulled models are linked in read-only when a test needs them.
All traffic stays on loopback.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from danlu.config import Settings
from danlu.server import ServerSettings
from danlu.server.app import background_server

GEMMA = "gemma-3-270m"


def home_with(tmp: Path, models_dir: Path | None) -> Settings:
    """Settings for a fresh DANLU_HOME, the real models linked in when `models_dir` is given."""
    if models_dir is not None:
        (tmp / "models").symlink_to(models_dir, target_is_directory=True)
    # One decode thread: on a 2-core machine shared with other test runs, llama.cpp's spinning thread
    # barriers make 2 threads several times slower than 1 whenever the other core is busy.
    return Settings(home=tmp, threads=1)


def models_dir_of(gguf: Path) -> Path:
    """models/<id>/<variant>/<file>.gguf → models/"""
    return gguf.parents[2]


@contextmanager
def running_server(settings: ServerSettings) -> Iterator[str]:
    """`create_app(settings)` under uvicorn on a free 127.0.0.1 port, in a thread; yields the base URL."""
    settings.host, settings.port = "127.0.0.1", 0
    with background_server(settings) as url:
        yield url
