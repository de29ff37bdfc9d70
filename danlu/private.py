"""Files and folders only their owner may read: the sessions database (chats), remote records (API keys),
LoRA adapters and their checkpoints (trained on the user's own data).

They are created private (files 0600, folders 0700) instead of with the umask, which on most systems lets
every local user read them; a database an older danlu created readable by others is tightened when opened.
On Windows, where POSIX modes mean little, these are plain creations.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
_POSIX = os.name == "posix"


def private_dir(path: Path) -> Path:
    """Create `path` (and its parents) if needed, and make it the owner's alone."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    _chmod(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """Create an empty `path` readable by its owner only, or tighten an existing one that others could read."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE))
    except FileExistsError:
        tighten(path)
    return path


def tighten(path: Path) -> None:
    """An existing file of ours that others may read becomes 0600; anything else is left alone."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if _POSIX and info.st_mode & 0o077 and info.st_uid == os.getuid():
        _chmod(path, PRIVATE_FILE)


def open_private(path: Path, mode: str = "wb") -> IO[Any]:
    """Open `path` for writing, created (or truncated) with mode 0600 whatever the umask."""
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, PRIVATE_FILE)
    if _POSIX:
        os.fchmod(fd, PRIVATE_FILE)  # a stale file of the same name keeps its old mode otherwise
    return os.fdopen(fd, mode)


def make_private(tree: Path) -> Path:
    """A folder and everything in it: folders 0700, files 0600."""
    for path in [tree, *tree.rglob("*")]:
        if not path.is_symlink():
            _chmod(path, PRIVATE_DIR if path.is_dir() else PRIVATE_FILE)
    return tree


def _chmod(path: Path, mode: int) -> None:
    if _POSIX:
        os.chmod(path, mode)
