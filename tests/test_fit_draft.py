"""fit with a draft model: the draft's weights, KV cache and compute are counted on top of the target's,
and the draft is placed in what the target leaves (catalog facts, no weights needed)."""

from __future__ import annotations

import pytest

from danlu import catalog
from danlu.errors import DanluError
from danlu.fit import plan_model
from danlu.fit.draft import check_draft_fits, combined, left_after, plan_draft
from danlu.fit.plan import Budget
from danlu.hardware import GiB, Hardware, with_budget

N_CTX = 4096
BASE = Hardware(cpu_cores=8, ram_total_bytes=64 * GiB, ram_available_bytes=64 * GiB)


def _pair(hw: Hardware):
    target_spec, draft_spec = catalog.get("qwen2.5-coder-1.5b-instruct"), catalog.get("qwen2.5-coder-0.5b-instruct")
    target = plan_model(target_spec, target_spec.variant(), hw, N_CTX)
    return target, draft_spec


def test_draft_memory_is_added_to_the_targets():
    hw = with_budget(BASE, 0, 16)
    target, draft_spec = _pair(hw)
    draft = plan_draft(draft_spec, draft_spec.variant(), hw, N_CTX, budget=left_after(target, Budget.of(hw)))
    both = combined(target, draft)
    assert draft.verdict == "cpu"
    assert both.total == target.estimate.total + draft.estimate.total
    # its own KV cache over the whole context: 24 layers x (K + V) x 2 KV heads x 64 dims x f16
    assert draft.estimate.host.kv_cache == 24 * 2 * 2 * 64 * N_CTX * 2
    assert draft.estimate.host.weights >= draft_spec.variant().size_bytes * 0.9
    assert any("qwen2.5-coder-0.5b-instruct" in note for note in both.notes)


def test_a_draft_that_does_not_fit_beside_the_target_is_refused_with_what_to_do():
    target, draft_spec = _pair(with_budget(BASE, 0, 16))
    tight = with_budget(BASE, 0, (target.estimate.host_needed + 200 * 1024**2) / 0.9 / GiB)  # target + 200 MiB
    target, _ = _pair(tight)
    assert target.fits
    left = left_after(target, Budget.of(tight))
    with pytest.raises(DanluError, match="--draft ngram"):
        check_draft_fits(draft_spec, draft_spec.variant(), tight, N_CTX, budget=left)
    assert check_draft_fits(draft_spec, draft_spec.variant(), tight, N_CTX, force=True, budget=left).verdict == "no-fit"


def test_the_draft_goes_to_the_gpu_only_with_the_room_the_target_leaves():
    roomy = with_budget(BASE, 8, 32)
    target, draft_spec = _pair(roomy)
    assert target.verdict == "gpu"
    assert plan_draft(draft_spec, draft_spec.variant(), roomy, N_CTX, budget=left_after(target, Budget.of(roomy))).verdict == "gpu"
    snug = with_budget(BASE, (target.estimate.gpu.total + 100 * 1024**2) / 0.95 / GiB, 32)  # target + 100 MiB
    target, _ = _pair(snug)
    assert target.verdict == "gpu"
    assert plan_draft(draft_spec, draft_spec.variant(), snug, N_CTX, budget=left_after(target, Budget.of(snug))).verdict == "cpu"
