"""Local source: a file or folder the user already has (`danlu pull ID --source PATH`).

A file becomes the variant's main file (under the catalog's `file` name); a folder is copied file by
file, names kept. Files are hard-linked when the store is on the same filesystem (instant, no extra
disk) and copied otherwise; either way they land under a `.partial` name first, are checked against
the catalog's sha256, and only then renamed into place. The user's own files are never modified.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from danlu.errors import DanluError
from danlu.sources import PullJob, install_file, main_file_name, remove_tree
from danlu.store import partial_path

STAGING = ".local-copy"
_COPY_BLOCK = 4 << 20


def missing_client() -> str | None:
    return None  # needs nothing beyond the standard library


def fetch(job: PullJob, path: Path) -> Path:
    """Bring a local file or folder into the store, verified."""
    if path.is_dir():
        return _fetch_folder(job, path)
    if not path.is_file():
        raise DanluError(f"不是文件或目录 / not a file or folder: {path}")
    name = job.variant.file or path.name
    staged = partial_path(job.store.file_path(job.spec, job.variant, name))
    _link_or_copy(job, path, staged)
    record = install_file(job, staged, name, main=True)
    return job.complete([record], name, f"local:{path}")


def _fetch_folder(job: PullJob, folder: Path) -> Path:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not _hidden(p.relative_to(folder))]
    if not files:
        raise DanluError(f"目录是空的 / the folder has no files: {folder}")
    names = [p.relative_to(folder).as_posix() for p in files]
    main = main_file_name(job.variant, names)
    staging = job.folder / STAGING
    records = []
    for source, name in zip(files, names):
        staged = staging / (name + ".partial")
        _link_or_copy(job, source, staged)
        records.append(install_file(job, staged, name, main=(name == main)))
    remove_tree(staging)
    return job.complete(records, main, f"local:{folder}")


def _link_or_copy(job: PullJob, source: Path, staged: Path) -> None:
    """A hard link when possible; otherwise a copy with a progress bar, fsynced."""
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.unlink(missing_ok=True)
    try:
        os.link(source, staged)
        return
    except OSError:
        pass  # another filesystem, or links not allowed: copy instead
    bar = job.board.bytes_bar(f"复制 / copying {source.name}", source.stat().st_size)
    with open(source, "rb") as src, open(staged, "wb") as out:
        while block := src.read(_COPY_BLOCK):
            out.write(block)
            bar.advance(len(block))
        out.flush()
        os.fsync(out.fileno())
    shutil.copystat(source, staged)
    bar.close()


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)
