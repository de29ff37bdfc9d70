"""Hugging Face Hub source, through huggingface_hub's `hf_hub_download`.

The endpoint comes from `HF_ENDPOINT` (users in China set a mirror such as https://hf-mirror.com);
a quick probe first turns an unreachable Hub into one clear message instead of a minute of retries.
Files download into a staging folder inside the variant dir (`.hf-download/`, huggingface_hub's
`local_dir`), where huggingface_hub itself resumes interrupted files; only when every file is there
are they checked and renamed into the variant dir, then the staging folder is removed.

Which files: the catalog's `files` when it lists them (the first is the main one); otherwise, for a
whole repo, safetensors / gguf / json / tokenizer files, and `.bin` pickles only when the repo has no
safetensors; `.py` only for models that need remote code.
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

from danlu.errors import DanluError
from danlu.progress import tqdm_class
from danlu.sources import (
    PICKLED_WEIGHTS, SAFE_WEIGHTS, PullJob, install_file, is_network_error, is_weight_file, main_file_name,
    remove_tree, stored_names, supported_kwargs, unreachable_reason,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
STAGING = ".hf-download"
SUPPORT_FILES = ("*.json", "tokenizer*", "*.model", "*.tiktoken", "vocab*", "merges*", "*.txt")


def missing_client() -> str | None:
    if importlib.util.find_spec("huggingface_hub") is None:
        return "未安装 huggingface_hub / huggingface_hub is not installed: `pip install huggingface_hub`"
    return None


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def fetch(job: PullJob) -> Path:
    """Download the variant's files from the Hub into the store."""
    hub = endpoint()
    if reason := unreachable_reason(hub):
        raise DanluError(unreachable_message(hub, reason))
    staging = job.folder / STAGING
    with hub_errors(hub, job.source.repo):
        remote = list(job.source.files) or choose_repo_files(_list_repo(job, hub), job.spec.trust_remote_code)
        for name in remote:
            _download(job, hub, name, staging)
    names = stored_names(job, remote)
    main = main_file_name(job.variant, names)
    records = [install_file(job, staging / r, n, main=(n == main)) for r, n in zip(remote, names)]
    remove_tree(staging)
    return job.complete(records, main, f"hf:{job.source.repo}")


def _download(job: PullJob, hub: str, name: str, staging: Path) -> None:
    from huggingface_hub import hf_hub_download

    options = supported_kwargs(hf_hub_download, endpoint=hub, tqdm_class=tqdm_class(job.board))
    hf_hub_download(job.source.repo, name, revision=job.source.revision, local_dir=str(staging), **options)


def _list_repo(job: PullJob, hub: str) -> list[str]:
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub).list_repo_files(job.source.repo, revision=job.source.revision)


def choose_repo_files(names: list[str], with_code: bool = False) -> list[str]:
    """What a whole-repo pull keeps: weights without pickles when possible, configs and tokenizers."""
    has_safe = any(is_weight_file(n, SAFE_WEIGHTS) for n in names)
    wanted = SAFE_WEIGHTS + SUPPORT_FILES + (() if has_safe else PICKLED_WEIGHTS) + (("*.py",) if with_code else ())
    return [n for n in names if is_weight_file(n, wanted) and not PurePosixPath(n).name.startswith(".")]


def unreachable_message(hub: str, reason: str) -> str:
    return (f"无法连接 Hugging Face Hub / could not reach the Hugging Face Hub at {hub} ({reason}). "
            "可设置镜像 / set a mirror: `export HF_ENDPOINT=https://hf-mirror.com`, "
            "或换来源 / or use `--source modelscope`")


@contextmanager
def hub_errors(hub: str, repo: str | None) -> Iterator[None]:
    """huggingface_hub's exceptions, turned into messages that say what to do."""
    from huggingface_hub import errors

    try:
        yield
    except errors.GatedRepoError as exc:
        raise DanluError(f"{repo} 需要先在网页上同意许可并登录 / is gated: accept its license on the Hub, "
                         f"then `hf auth login` (or set HF_TOKEN)") from exc
    except errors.RepositoryNotFoundError as exc:
        raise DanluError(f"Hub 上没有仓库 {repo} 或无权访问 / repo {repo} not found (or private) at {hub}") from exc
    except errors.RevisionNotFoundError as exc:
        raise DanluError(f"{repo} 没有这个版本 / revision not found: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - every other failure still gets a user message
        raise _other_error(exc, hub, repo) from exc


def _other_error(exc: Exception, hub: str, repo: str | None) -> DanluError:
    from huggingface_hub import errors

    if is_network_error(exc):
        return DanluError(unreachable_message(hub, type(exc).__name__))
    if isinstance(exc, errors.EntryNotFoundError):
        return DanluError(f"{repo} 里没有这个文件 / file not found in {repo}: {exc}")
    if isinstance(exc, errors.HfHubHTTPError):
        return DanluError(f"Hub 返回错误 / the Hub at {hub} answered with an error: {exc}")
    if isinstance(exc, DanluError):
        return exc
    return DanluError(f"从 Hub 下载失败 / download from {hub} failed: {type(exc).__name__}: {exc}")
