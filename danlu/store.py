"""The model store under `$DANLU_HOME/models`: where weights live, and how danlu knows they are whole.

Layout: `models/<model-id>/<variant>/<file>`, plus `danlu-manifest.json` per variant recording the
source, each file's size and sha256, whether the sha256 matched the catalog, and when the pull finished.

A variant is *complete* when its manifest exists and every file it lists has the recorded size
(cheap, checked on every load); the sha256 is computed while pulling and recorded, and `verify()`
recomputes it. Every write goes to `<name>.partial`, is fsynced, then `os.replace`d into place, and
the manifest is written last: an interrupted pull never leaves anything that looks complete.

Names coming from users or catalogs (model ids, variants, file names) never leave the store: ids
are single path components from a small alphabet, file names are relative paths without `..`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Iterator

from danlu import catalog
from danlu.catalog.schema import ModelSpec, Variant
from danlu.config import Settings, get_settings
from danlu.errors import DanluError, IntegrityError, NotDownloaded
from danlu.private import open_private

__all__ = [
    "FileRecord", "InstalledModel", "Manifest", "Store", "MANIFEST", "PARTIAL_SUFFIX",
    "atomic_write_bytes", "atomic_write_json", "atomic_writer", "fsync_dir", "partial_path",
    "read_json", "resolve_model_path", "safe_name", "safe_relpath", "sha256_file", "variant_of",
]

MANIFEST = "danlu-manifest.json"
PARTIAL_SUFFIX = ".partial"
_LOCK = ".lock"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HASH_BLOCK = 4 << 20
_WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pth", ".pt", ".ggml")


# ---------------------------------------------------------------- names that stay inside the store

_WHAT = {"model": ("模型 id", "model id"), "variant": ("变体名", "variant name")}


def safe_name(name: str, what: str = "model") -> str:
    """One path component: letters, digits, `.`, `_`, `-`, not starting with a dot (so never `..`)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        zh, en = _WHAT[what]
        raise DanluError(f"{zh}不合法 / invalid {en}: {name!r} "
                         "(只能用字母、数字和 . _ - / only letters, digits and . _ -; no slashes, no '..')")
    return name


def safe_relpath(name: str) -> PurePosixPath:
    """A file name inside a variant dir; sub-folders are allowed (Hub repos have them), `..` and `/x` are not."""
    parts = name.replace("\\", "/").split("/")  # split by hand: PurePosixPath would hide "a//b" and "./x"
    if not name or "\0" in name or any(part in ("", ".", "..") for part in parts):
        raise DanluError(f"文件名不合法 / invalid file name: {name!r}")
    return PurePosixPath(*parts)


def _inside(root: Path, path: Path) -> Path:
    """Defence in depth against symlinks: the resolved path must still be under the store."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise DanluError(f"路径越出模型库 / path escapes the model store: {path}")
    return path


# ---------------------------------------------------------------- atomic writes and hashing

def partial_path(path: Path) -> Path:
    """Where `path` is written before it is complete."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def fsync_dir(path: Path) -> None:
    """Make a rename durable: the directory entry, not only the data, must reach the disk."""
    if os.name != "posix":
        return  # Windows cannot open a directory for fsync; os.replace is already atomic there
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: Path, mode: str = "wb", *, private: bool = False) -> Iterator[IO[Any]]:
    """Write `<path>.partial`, fsync, rename over `path`; on any error the partial file is removed.
    `private`: the file is created 0600 (it holds a secret), not with the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        with (open_private(tmp, mode) if private else open(tmp, mode)) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, *, private: bool = False) -> None:
    with atomic_writer(path, "wb", private=private) as handle:
        handle.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, ensure_ascii=False, indent=2).encode("utf-8"))


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing or unreadable (treated as absent)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sha256_file(path: Path, advance: Callable[[int], None] | None = None, limit: int | None = None) -> str:
    """sha256 of a file (or of its first `limit` bytes), reporting bytes read to `advance`."""
    return hash_file_into(hashlib.sha256(), path, advance, limit).hexdigest()


def hash_file_into(digest: Any, path: Path, advance: Callable[[int], None] | None = None,
                   limit: int | None = None) -> Any:
    """Feed a file's bytes into an existing hash object; used to resume a hash over a partial file."""
    remaining = limit if limit is not None else float("inf")
    with open(path, "rb") as handle:
        while remaining > 0 and (block := handle.read(int(min(_HASH_BLOCK, remaining)))):
            digest.update(block)
            remaining -= len(block)
            if advance:
                advance(len(block))
    return digest


# ---------------------------------------------------------------- manifest

@dataclass(frozen=True)
class FileRecord:
    """One file of a variant, relative to the variant dir."""

    path: str
    size: int
    sha256: str


@dataclass
class Manifest:
    """What a finished pull wrote; its presence (with matching sizes) is what "complete" means."""

    model: str
    variant: str
    source: str
    main: str | None
    files: list[FileRecord]
    verified: bool = field(default=False, metadata={"doc": "sha256 matched the catalog's"})
    completed: str = ""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def record(self, rel: str) -> FileRecord | None:
        return next((f for f in self.files if f.path == rel), None)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        files = [FileRecord(**f) for f in data.get("files", [])]
        return cls(**{**data, "files": files})


@dataclass(frozen=True)
class InstalledModel:
    """A row of `danlu list`."""

    id: str
    variant: str
    path: Path
    size: int
    verified: bool
    source: str = ""
    complete: bool = True


# ---------------------------------------------------------------- the store

class Store:
    """The models folder of one DANLU_HOME."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.root = self.settings.models_dir
        # inside the store so that os.replace and hard links never cross filesystems
        self.tmp_dir = self.root / ".tmp"

    # paths ---------------------------------------------------------

    def model_dir(self, model_id: str) -> Path:
        return _inside(self.root, self.root / safe_name(model_id))

    def variant_dir(self, spec: ModelSpec, variant: Variant | str | None = None) -> Path:
        chosen = _variant(spec, variant)
        return _inside(self.root, self.model_dir(spec.id) / safe_name(chosen.name, "variant"))

    def file_path(self, spec: ModelSpec, variant: Variant | str | None, rel: str) -> Path:
        folder = self.variant_dir(spec, variant)
        return _inside(folder, folder / safe_relpath(rel))

    def weight_path(self, spec: ModelSpec, variant: Variant | str | None = None) -> Path:
        """The main file (a GGUF, a .pth), or the variant dir for a multi-file checkpoint."""
        chosen = _variant(spec, variant)
        manifest = self.read_manifest(spec, chosen)
        main = manifest.main if manifest else chosen.file
        return self.file_path(spec, chosen, main) if main else self.variant_dir(spec, chosen)

    def manifest_path(self, spec: ModelSpec, variant: Variant | str | None = None) -> Path:
        return self.variant_dir(spec, variant) / MANIFEST

    # state ---------------------------------------------------------

    def read_manifest(self, spec: ModelSpec, variant: Variant | str | None = None) -> Manifest | None:
        return _load_manifest(self.manifest_path(spec, variant))

    def is_complete(self, spec: ModelSpec, variant: Variant | str | None = None) -> bool:
        """Manifest present, every listed file has its recorded size, and the catalog sha256 still agrees."""
        chosen = _variant(spec, variant)
        manifest = self.read_manifest(spec, chosen)
        if manifest is None or not manifest.files:
            return False
        main = manifest.record(manifest.main) if manifest.main else None
        if chosen.sha256 and main is not None and main.sha256 != chosen.sha256.lower():
            return False  # the catalog now names a different file: the old one is stale
        return all(_has_size(self.file_path(spec, chosen, f.path), f.size) for f in manifest.files)

    def record(self, spec: ModelSpec, variant: Variant | str | None, source: str,
               files: list[FileRecord], main: str | None, verified: bool) -> Manifest:
        """Write the manifest last, after every file is in place: this is what makes a pull complete."""
        chosen = _variant(spec, variant)
        completed = datetime.now(timezone.utc).isoformat(timespec="seconds")
        manifest = Manifest(spec.id, chosen.name, source, main, files, verified, completed)
        atomic_write_json(self.manifest_path(spec, chosen), manifest.to_json())
        return manifest

    def forget(self, spec: ModelSpec, variant: Variant | str | None = None) -> None:
        """Drop the manifest so the variant stops looking complete (before re-pulling over it)."""
        self.manifest_path(spec, variant).unlink(missing_ok=True)

    def verify(self, spec: ModelSpec, variant: Variant | str | None = None,
               advance: Callable[[int], None] | None = None) -> str:
        """Recompute every file's sha256; returns the main file's. A mismatch un-completes the variant."""
        chosen = _variant(spec, variant)
        manifest = self._complete_manifest(spec, chosen)
        for record in manifest.files:
            actual = sha256_file(self.file_path(spec, chosen, record.path), advance)
            expected = _expected_sha(chosen, manifest, record)
            if actual != expected:
                self.forget(spec, chosen)
                raise IntegrityError(_mismatch(spec, record.path, expected, actual))
        main = manifest.record(manifest.main) if manifest.main else None
        return main.sha256 if main else ""

    def list(self, include_partial: bool = False) -> list[InstalledModel]:
        """Installed variants, sorted by id then variant; partial downloads only when asked."""
        rows = []
        for variant_dir in sorted(self.root.glob("*/*")):
            if variant_dir.is_dir() and _NAME.fullmatch(variant_dir.parent.name) and _NAME.fullmatch(variant_dir.name):
                row = self._row(variant_dir)
                if row.complete or include_partial:
                    rows.append(row)
        return rows

    def remove(self, model_id: str, variant: str | None = None) -> int:
        """Delete a model (or one variant) from disk; returns the bytes freed."""
        target = self.model_dir(model_id)
        if variant is not None:
            target = _inside(self.root, target / safe_name(variant, "variant"))
        if not target.exists():
            raise NotDownloaded(f"未安装 / not installed: {model_id}{':' + variant if variant else ''}")
        freed = _tree_size(target)
        shutil.rmtree(target)
        return freed

    @contextmanager
    def lock(self, spec: ModelSpec, variant: Variant | str | None = None) -> Iterator[Path]:
        """One writer per variant: a second `danlu pull` of the same variant stops with a clear message."""
        folder = self.variant_dir(spec, variant)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / _LOCK, "a+") as handle:
            if not _try_lock(handle):
                raise DanluError(f"另一个 danlu pull 正在下载 {spec.id} / another pull of {spec.id} is running; "
                                 "等它结束再试 / wait for it to finish")
            yield folder

    def ensure_space(self, needed: int) -> None:
        """Fail before downloading, not at 99 %, when the disk cannot hold the file."""
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        if needed > free:
            raise DanluError(f"磁盘空间不足 / not enough disk space in {self.root}: "
                             f"need {needed / 1e9:.2f} GB, free {free / 1e9:.2f} GB")

    def scratch_dir(self) -> Path:
        """A fresh temporary folder inside the store (same filesystem as the weights)."""
        import tempfile

        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.tmp_dir))

    # helpers -------------------------------------------------------

    def _complete_manifest(self, spec: ModelSpec, variant: Variant) -> Manifest:
        manifest = self.read_manifest(spec, variant)
        if manifest is None or not self.is_complete(spec, variant):
            raise NotDownloaded(f"模型未下载 / not downloaded: run `danlu pull {spec.id}`")
        return manifest

    def _row(self, variant_dir: Path) -> InstalledModel:
        manifest = _load_manifest(variant_dir / MANIFEST)
        model_id, variant = variant_dir.parent.name, variant_dir.name
        if manifest is None:
            return InstalledModel(model_id, variant, variant_dir, _tree_size(variant_dir), False, complete=False)
        complete = all(_has_size(variant_dir / f.path, f.size) for f in manifest.files)
        path = variant_dir / manifest.main if manifest.main else variant_dir
        return InstalledModel(model_id, variant, path, manifest.size, manifest.verified, manifest.source, complete)


def _load_manifest(path: Path) -> Manifest | None:
    data = read_json(path)
    try:
        return Manifest.from_json(data) if data else None
    except TypeError:
        return None  # written by an incompatible version: counts as absent, so the next pull redoes it


def variant_of(spec: ModelSpec, variant: Variant | str | None) -> Variant:
    """A Variant from a Variant, a name, or None (the default); an unknown name is a user error."""
    if isinstance(variant, Variant):
        return variant
    try:
        return spec.variant(variant)
    except KeyError as exc:
        raise DanluError(f"没有这个变体 / unknown variant: {exc.args[0]}") from exc


_variant = variant_of


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def _expected_sha(variant: Variant, manifest: Manifest, record: FileRecord) -> str:
    """The catalog's sha256 for the main file when it has one, else what the pull recorded."""
    if record.path == manifest.main and variant.sha256:
        return variant.sha256.lower()
    return record.sha256


def _mismatch(spec: ModelSpec, name: str, expected: str, actual: str) -> str:
    return (f"校验失败 / checksum mismatch for {spec.id} {name}: expected sha256 {expected}, got {actual}. "
            f"文件已损坏或来源有误，请重新运行 / the file is damaged or the source is wrong; re-run `danlu pull {spec.id}`")


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _try_lock(handle: IO[Any]) -> bool:
    try:
        import fcntl
    except ImportError:
        return True  # no flock on Windows; concurrent pulls there are the user's own race
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# ---------------------------------------------------------------- names or paths given by a user

def resolve_model_path(name_or_path: str, settings: Settings | None = None) -> Path:
    """A path to weights: a local GGUF file or directory as-is, or a pulled catalog model (`id` or `id:variant`)."""
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise DanluError(f"文件不存在 / no such file or directory: {path}")
        return path.resolve()
    model_id, _, variant = name_or_path.partition(":")
    spec = catalog.get(model_id)
    store = Store(settings)
    if not store.is_complete(spec, variant or None):
        raise NotDownloaded(f"模型未下载 / not downloaded: run `danlu pull {model_id}`")
    return store.weight_path(spec, variant or None)


def _looks_like_path(text: str) -> bool:
    """A separator, a leading `.`/`~`, or a weight-file suffix means a path; a bare word is a catalog id,
    unless no catalog id has that name and a file or folder of that name exists here."""
    has_separator = "/" in text or "\\" in text
    if has_separator or text.startswith((".", "~")) or text.lower().endswith(_WEIGHT_SUFFIXES):
        return True
    known = {spec.id for spec in catalog.all_models()}
    return text.partition(":")[0] not in known and Path(text).exists()
