"""Which models may answer: every catalog model with its fit verdict and whether it can run now, the
registered remotes, and the anonymous pair for a battle (two distinct runnable models, sides at random).

A model is runnable when it is downloaded, its backend is installed, fit says it fits this machine at the
server's context, and (for models that run their own code) the server trusts remote code. A remote model
runs elsewhere and is always a candidate. The web page's model picker shows the same rows.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

from danlu import catalog, remotes
from danlu.catalog.schema import ModelSpec
from danlu.config import Settings
from danlu.errors import DanluError
from danlu.finetune.adapters import served_ids
from danlu.fit import FitResult, fit_catalog
from danlu.loader import availability


@dataclass(frozen=True)
class ModelChoice:
    """One row of the model picker."""

    id: str
    name: str
    kind: str  # catalog | remote | adapter
    params_b: float | None
    variant: str | None
    size_bytes: int | None
    status_code: str  # ready | not_downloaded | backend_missing | unsupported | remote_code | remote
    status: str
    verdict: str  # gpu | partial | cpu | remote | no-fit | unsupported
    verdict_text: str
    predicted_bytes: int
    speed: str
    reason: str
    runnable: bool
    chat: bool = True  # False for base models: they continue text rather than answer
    thinking: str = "never"  # hybrid | always | never
    context_length: int | None = None  # the model's own maximum
    task: str = "chat"  # what it is for: chat, or another kind (embedding models) the chat picker leaves out

    def to_dict(self) -> dict:
        return asdict(self)


class NoPair(DanluError):
    """Fewer than two runnable models: no anonymous battle (409)."""


def catalog_choice(spec: ModelSpec, fit: FitResult | None, settings: Settings, trust_remote_code: bool) -> ModelChoice:
    """A catalog model's row: downloaded?, fit verdict, runnable."""
    variant, status = spec.variant(), availability(spec, settings)
    code, reason = status.code, status.reason
    if spec.trust_remote_code and not trust_remote_code and code == "ready":
        code, reason = "remote_code", "需要以 --trust-remote-code 启动服务 / needs a server started with --trust-remote-code"
    fits = fit is not None and fit.fits
    return ModelChoice(spec.id, spec.name, "catalog", spec.params_b, variant.name, variant.size_bytes, code, reason,
                       fit.verdict if fit else "unsupported", fit.verdict_text() if fit else "",
                       fit.predicted_bytes if fit else 0, fit.speed if fit else "-", fit.reason if fit else "",
                       code == "ready" and fits, spec.chat, spec.thinking, spec.context_length,
                       getattr(spec, "kind", None) or "chat")


def remote_choice(remote) -> ModelChoice:
    return ModelChoice(remote.name, remote.model, "remote", None, None, None, "remote", remote.shown_url, "remote",
                       "远程 / remote", 0, "-", "在远程服务器上运行 / runs on a remote server", True)


def model_choices(settings: Settings, n_ctx: int | None = None, trust_remote_code: bool = False) -> list[ModelChoice]:
    """Every catalog model (default variant, fit at `n_ctx`) and every registered remote; runnable ones first."""
    fits = {(r.model_id, r.variant): r for r in fit_catalog(n_ctx=n_ctx, settings=settings)}
    rows = [catalog_choice(spec, fits.get((spec.id, spec.variant().name)), settings, trust_remote_code)
            for spec in catalog.all_models()]
    rows += [remote_choice(r) for r in remotes.list_remotes(settings)]
    rows += adapter_choices(settings, rows)
    return sorted(rows, key=lambda r: (not r.runnable, r.kind != "catalog", r.id))


def adapter_choices(settings: Settings, rows: list[ModelChoice]) -> list[ModelChoice]:
    """Fine-tuned adapters served as `BASE+NAME` (danlu finetune), runnable when their base is."""
    bases = {row.id: row for row in rows if row.kind == "catalog"}
    return [adapter_choice(info, bases[info.base]) for info in served_ids(settings).values() if info.base in bases]


def adapter_choice(info, base: ModelChoice) -> ModelChoice:
    """The base's row under the adapter's id: it runs on transformers with the base dequantized (fp32)."""
    return replace(base, id=info.model_id, name=f"{base.name} + LoRA {info.name}", kind="adapter",
                   size_bytes=info.size_bytes, speed="-",
                   reason="LoRA 适配器，在 transformers 上运行 / a LoRA adapter, run on transformers")


def runnable_names(choices: list[ModelChoice]) -> list[str]:
    return [c.id for c in choices if c.runnable]


def pick_pair(names: list[str], rng: random.Random | None = None) -> tuple[str, str]:
    """Two distinct models in random order (which one sits on the left is random too)."""
    distinct = sorted(set(names))
    if len(distinct) < 2:
        raise NoPair(f"匿名对战需要至少两个已下载且放得下的模型，现在有 {len(distinct)} 个 / an anonymous battle needs "
                     f"at least two downloaded models that fit, there are {len(distinct)}: `danlu pull MODEL`")
    model_a, model_b = (rng or random.SystemRandom()).sample(distinct, 2)
    return model_a, model_b
