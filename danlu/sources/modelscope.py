"""ModelScope (魔搭) source, through the `modelscope` package's `snapshot_download`.

`modelscope` is optional (`pip install modelscope`) and imported only here, only when used. Its
endpoint is the library's own choice (`MODELSCOPE_ENDPOINT`, formerly `MODELSCOPE_DOMAIN`, default
https://www.modelscope.cn); danlu reads the same variables to probe it first and to name it in errors.
Files download into `.ms-download/` inside the variant dir, where modelscope resumes partial files;
then they are checked and renamed into place exactly as for the Hugging Face source.

Which files: the catalog's `files` (the first is the main one); for a whole repo the same rule as
the Hub: safetensors / gguf / json / tokenizer files, pickled `.bin` only when nothing safer came.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from danlu.errors import DanluError
from danlu.progress import callback_class
from danlu.sources import (
    PICKLED_WEIGHTS, SAFE_WEIGHTS, PullJob, install_file, is_network_error, is_weight_file, main_file_name,
    remove_tree, stored_names, supported_kwargs, unreachable_reason,
)
from danlu.sources.hf import SUPPORT_FILES, choose_repo_files

DEFAULT_ENDPOINT = "https://www.modelscope.cn"
STAGING = ".ms-download"
INSTALL_HINT = "未安装 modelscope / the modelscope client is not installed: `pip install modelscope`"


def missing_client() -> str | None:
    return INSTALL_HINT if importlib.util.find_spec("modelscope") is None else None


def endpoint() -> str:
    value = os.environ.get("MODELSCOPE_ENDPOINT") or os.environ.get("MODELSCOPE_DOMAIN") or DEFAULT_ENDPOINT
    return (value if value.startswith(("http://", "https://")) else f"https://{value}").rstrip("/")


def fetch(job: PullJob) -> Path:
    """Download the variant's files from ModelScope into the store."""
    snapshot_download = _client()
    hub = endpoint()
    if reason := unreachable_reason(hub):
        raise DanluError(unreachable_message(hub, reason))
    staging = job.folder / STAGING
    remote = _download(job, snapshot_download, hub, staging)
    names = stored_names(job, remote)
    main = main_file_name(job.variant, names)
    records = [install_file(job, staging / r, n, main=(n == main)) for r, n in zip(remote, names)]
    remove_tree(staging)
    return job.complete(records, main, f"modelscope:{job.source.repo}")


def _client():
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as exc:
        raise DanluError(INSTALL_HINT) from exc
    return snapshot_download


def _download(job: PullJob, snapshot_download, hub: str, staging: Path) -> list[str]:
    """Fetch the listed files, or a whole repo (pickles in a second pass only if no safe weights came)."""
    if job.source.files:
        _snapshot(job, snapshot_download, hub, staging, list(job.source.files))
        return _require_present(staging, list(job.source.files), job.source.repo)
    _snapshot(job, snapshot_download, hub, staging, list(SAFE_WEIGHTS + SUPPORT_FILES))
    if not any(is_weight_file(name, SAFE_WEIGHTS) for name in _visible_files(staging)):
        _snapshot(job, snapshot_download, hub, staging, list(PICKLED_WEIGHTS))
    return choose_repo_files(_visible_files(staging), job.spec.trust_remote_code)


def _visible_files(staging: Path) -> list[str]:
    """What came, minus modelscope's own hidden folders (its temp files and metadata are not the repo's)."""
    present = [p.relative_to(staging) for p in staging.rglob("*") if p.is_file()] if staging.is_dir() else []
    return [p.as_posix() for p in present if not any(part.startswith(".") for part in p.parts)]


def _require_present(staging: Path, names: list[str], repo: str | None) -> list[str]:
    """snapshot_download skips patterns that match nothing; a listed file that did not come is an error."""
    missing = [n for n in names if not (staging / n).is_file()]
    if missing:
        raise DanluError(f"ModelScope 仓库 {repo} 里没有 / not found in ModelScope repo {repo}: {', '.join(missing)}")
    return names


def _snapshot(job: PullJob, snapshot_download, hub: str, staging: Path, patterns: list[str]) -> None:
    from modelscope.hub.callback import ProgressCallback

    options = supported_kwargs(snapshot_download, endpoint=hub,
                               progress_callbacks=[callback_class(job.board, ProgressCallback)])
    try:
        snapshot_download(job.source.repo, revision=job.source.revision, local_dir=str(staging),
                          allow_patterns=patterns, **options)
    except Exception as exc:  # noqa: BLE001 - modelscope raises many types; each gets a user message
        raise _user_error(exc, hub, job.source.repo) from exc


def unreachable_message(hub: str, reason: str) -> str:
    return (f"无法连接 ModelScope / could not reach ModelScope at {hub} ({reason}); "
            "检查网络或设置 MODELSCOPE_ENDPOINT / check the network or set MODELSCOPE_ENDPOINT, "
            "或换来源 / or use `--source hf` / `--source pypi`")


def _user_error(exc: Exception, hub: str, repo: str | None) -> DanluError:
    if is_network_error(exc):
        return DanluError(unreachable_message(hub, type(exc).__name__))
    text = str(exc)
    if "404" in text or "NotExist" in type(exc).__name__ or "not exist" in text.lower():
        return DanluError(f"ModelScope 上没有 {repo} 或其中的文件 / repo or file not found on ModelScope: {repo}")
    return DanluError(f"从 ModelScope 下载失败 / download from {hub} failed: {type(exc).__name__}: {text}")
