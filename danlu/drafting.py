"""Choosing and loading the drafter of speculative decoding: `--draft MODEL | ngram | none | auto`.

`auto` (what `danlu chat` and `danlu run` pass by default) takes the catalog's `draft` for the model when
it has been pulled and the target runs on a GPU; on a CPU a model with a catalog draft gets prompt lookup
instead: there a Q4 batch of k+1 positions costs nearly k+1 steps, so a draft model rarely pays (measured:
README, "Speculative decoding"), while prompt lookup needs no memory. A model without a catalog draft gets
nothing. A model named with `--draft` must be there (or it says how to pull it). The draft is resolved and loaded through the loader's own steps (catalog, store, fit, backend),
planned by fit in the memory the target leaves, and refused when its vocabulary differs from the
target's: speculative decoding compares the two models' probabilities token id by token id.
Only the single-stream llama.cpp engine speculates (backends/speculative.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from danlu.config import Settings
from danlu.errors import DanluError

AUTO, NONE, NGRAM = "auto", "none", "ngram"


@dataclass(frozen=True)
class DraftChoice:
    """What was attached: the drafter's name, or None when decoding stays plain."""

    name: str | None
    reason: str = ""


def attach_draft(loaded, choice: str | None, settings: Settings, force: bool = False, on_gpu: bool = False) -> DraftChoice:
    """Give `loaded.engine` a Speculator for `choice`; an explicit choice that cannot be honoured is an error.
    `on_gpu`: the target has layers on a GPU (decides what `auto` picks)."""
    choice = (choice or NONE).strip()
    if choice.lower() == NONE:
        return DraftChoice(None, "off")
    if not _speculates(loaded):
        if choice.lower() == AUTO:
            return DraftChoice(None, "not a llama.cpp model")
        raise DanluError("推测解码只支持 llama.cpp（GGUF）模型：去掉 --draft / speculative decoding needs a llama.cpp "
                         "(GGUF) model: drop --draft")
    if choice.lower() == NGRAM:
        return _attach(loaded.engine, _ngram())
    spec = loaded.resolved.spec
    if choice.lower() == AUTO and not on_gpu and spec is not None and spec.draft:
        return _attach(loaded.engine, _ngram())
    ref = _draft_ref(loaded, choice, settings)
    if ref is None:
        return DraftChoice(None, "no draft model for this model")
    return _attach(loaded.engine, load_model_drafter(loaded, ref, settings, force))


def _speculates(loaded) -> bool:
    from danlu.backends.llamacpp import LlamaCppEngine

    return loaded.resolved.backend == "llamacpp" and isinstance(loaded.engine, LlamaCppEngine)


def _draft_ref(loaded, choice: str, settings: Settings) -> str | None:
    """The draft model's reference: the given one, or under `auto` the catalog's when it is pulled."""
    if choice.lower() != AUTO:
        return choice
    spec = loaded.resolved.spec
    if spec is None or not spec.draft:
        return None
    from danlu.loader import resolve

    try:
        resolve(spec.draft, settings=settings)
    except DanluError:  # not pulled (NotDownloaded), or no longer in the catalog
        return None  # the catalog's draft is a speed-up, not a requirement: plain decoding without it
    return spec.draft


def load_model_drafter(loaded, ref: str, settings: Settings, force: bool = False):
    """Resolve, fit (beside the target) and load the draft model; check its vocabulary against the target's."""
    from danlu.backends import load_engine
    from danlu.backends.base import LoadPlan
    from danlu.backends.drafters import ModelDrafter
    from danlu.fit.draft import check_draft_fits
    from danlu.hardware import detect
    from danlu.loader import resolve

    draft = resolve(ref, settings=settings)
    if draft.backend != "llamacpp":
        raise DanluError(f"草稿模型 {draft.label} 不是 GGUF 模型 / the draft model {draft.label} is not a GGUF "
                         f"(llama.cpp) model: pick one with the same vocabulary, or use --draft ngram")
    n_ctx = loaded.engine.n_ctx  # it follows the whole conversation: the target's context
    # the target is loaded: the memory free now is what is left beside it
    placed = check_draft_fits(draft.spec, draft.variant, detect(), n_ctx, draft.path, force)
    plan = LoadPlan(path=draft.path, n_ctx=n_ctx, n_threads=settings.threads, gpu_layers=placed.gpu_layers)
    engine = load_engine(draft.spec, draft.variant, plan, "llamacpp")
    return ModelDrafter.for_target(loaded.engine, engine, draft.label)


def _ngram():
    from danlu.backends.drafters import NgramDrafter

    return NgramDrafter()


def _attach(engine, drafter) -> DraftChoice:
    from danlu.backends.speculative import Speculator, length_for

    if engine.speculator is not None:
        engine.speculator.close()
    engine.speculator = Speculator(engine, drafter, length_for(drafter))
    return DraftChoice(drafter.name)
