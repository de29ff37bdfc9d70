"""Speculative decoding without real weights: the acceptance rule against exact distributions, the
sampling chain against llama.cpp's own, the draft length, prompt lookup, fit, and the whole loop on two
tiny random GGUF models of the same vocabulary (tests/tiny_models.py), where the target's distribution
over short continuations can be computed exactly."""

from __future__ import annotations

import ctypes
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

import llama_cpp
from danlu.backends import acceptance, spec_sampling
from danlu.backends.base import GenerationParams, LoadPlan, Timings
from danlu.backends.drafters import ModelDrafter, NgramDrafter, same_vocabulary
from danlu.backends.draft_length import PROBE_MAX, PROBE_START, REPROBE_GENERATIONS, BatchCost, DraftLength
from danlu.backends.speculative import Speculator
from danlu.backends.spec_sampling import Distribution

import tiny_models as tm
from plain_reference import plain_tokens

#: A p-value below this fails a distribution test; the seeds are fixed, so a pass stays a pass.
ALPHA = 1e-3


def _dist(probs: dict[int, float]) -> Distribution:
    ids = np.array(list(probs), dtype=np.int64)
    p = np.array(list(probs.values()), dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    return Distribution(ids[order], p[order] / p.sum())


def _chi_square_p(counts: dict[int, int], expected: dict[int, float]) -> float:
    keys = sorted(set(counts) | set(expected))
    assert all(expected.get(k, 0) > 0 for k in counts), f"sampled outside the target's support: {counts}"
    observed = np.array([counts.get(k, 0) for k in keys], dtype=float)
    exp = np.array([expected[k] for k in keys], dtype=float) * observed.sum()
    return float(stats.chisquare(observed, exp).pvalue)


# --- the acceptance rule on toy distributions ----------------------------------------------------------
@pytest.mark.parametrize("p, q", [
    ({1: 0.5, 2: 0.3, 3: 0.2}, {1: 0.2, 2: 0.2, 4: 0.6}),  # overlapping supports, a draft token p never takes
    ({1: 0.9, 2: 0.1}, {1: 0.1, 2: 0.9}),  # draft confidently wrong
    ({5: 0.25, 6: 0.25, 7: 0.25, 8: 0.25}, {9: 1.0}),  # disjoint: every draft rejected
])
def test_rejection_sampling_emits_the_target_distribution(p, q):
    target, draft, rng = _dist(p), _dist(q), np.random.default_rng(20)
    counts: dict[int, int] = {}
    for _ in range(20_000):
        _, token = acceptance.accept_or_resample(target, draft, draft.sample(rng), rng)
        counts[token] = counts.get(token, 0) + 1
    assert _chi_square_p(counts, p) > ALPHA


def test_acceptance_rate_is_the_overlap_of_p_and_q():
    """Leviathan et al.: a drafted token is kept with probability sum_x min(p(x), q(x))."""
    p, q = {1: 0.5, 2: 0.3, 3: 0.2}, {1: 0.2, 2: 0.2, 4: 0.6}
    target, draft, rng = _dist(p), _dist(q), np.random.default_rng(3)
    kept = sum(acceptance.accept_or_resample(target, draft, draft.sample(rng), rng)[0] for _ in range(20_000))
    assert kept / 20_000 == pytest.approx(0.2 + 0.2, abs=0.015)


def test_residual_is_the_positive_part_of_p_minus_q():
    r = acceptance.residual(_dist({1: 0.5, 2: 0.3, 3: 0.2}), _dist({1: 0.2, 2: 0.4, 4: 0.4}))
    got = dict(zip(r.ids.tolist(), r.probs.tolist()))
    assert got == pytest.approx({1: 0.3 / 0.5, 2: 0.0, 3: 0.2 / 0.5})


def test_point_mass_proposal_is_accepted_with_the_target_probability():
    target, rng = _dist({1: 0.7, 2: 0.3}), np.random.default_rng(5)
    kept = sum(acceptance.accept_or_resample(target, spec_sampling.point_mass(1), 1, rng)[0] for _ in range(10_000))
    assert kept / 10_000 == pytest.approx(0.7, abs=0.02)


def test_greedy_verify_keeps_the_prefix_the_target_agrees_with():
    rows = np.zeros((4, 10), dtype=np.float32)
    for i, best in enumerate([3, 5, 7, 9]):
        rows[i, best] = 1.0
    params = GenerationParams(temperature=0.0, repetition_penalty=1.0)
    verdict = acceptance.verify(rows, [3, 5, 1], None, [], params, np.random.default_rng(0))
    assert verdict == acceptance.Verdict(accepted=2, token=7)
    assert acceptance.verify(rows, [3, 5, 7], None, [], params, np.random.default_rng(0)) == acceptance.Verdict(3, 9)


def test_greedy_verify_applies_penalties_to_the_drafted_tokens_before_it():
    """Position 1 sees token 3 (drafted at position 0) as generated: its repeat penalty pushes it below 4."""
    rows = np.zeros((2, 6), dtype=np.float32)
    rows[0, 3] = 2.0
    rows[1, 3], rows[1, 4] = 2.0, 1.9
    params = GenerationParams(temperature=0.0, repetition_penalty=1.3)
    assert acceptance.verify(rows, [3, 3], None, [], params, np.random.default_rng(0)) == acceptance.Verdict(1, 4)


# --- the sampling chain is llama.cpp's -------------------------------------------------------------------
def _llama_cpp_chain(logits: np.ndarray, recent: list[int], p: GenerationParams) -> dict[int, float]:
    """The candidates llama.cpp's own samplers leave (penalties, top-k, typical, top-p, min-p, temp), softmaxed."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for sampler in (llama_cpp.llama_sampler_init_penalties(logits.size, 64, p.repetition_penalty, p.frequency_penalty,
                                                           p.presence_penalty),
                    llama_cpp.llama_sampler_init_top_k(p.top_k), llama_cpp.llama_sampler_init_typical(1.0, 1),
                    llama_cpp.llama_sampler_init_top_p(p.top_p, 1), llama_cpp.llama_sampler_init_min_p(p.min_p, 1),
                    llama_cpp.llama_sampler_init_temp(p.temperature)):
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    for token in recent:
        llama_cpp.llama_sampler_accept(chain, token)
    data = (llama_cpp.llama_token_data * logits.size)(*[llama_cpp.llama_token_data(i, float(x), 0.0)
                                                         for i, x in enumerate(logits)])
    array = llama_cpp.llama_token_data_array(data=data, size=logits.size, selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(chain, ctypes.byref(array))
    kept = [(data[i].id, data[i].logit) for i in range(array.size)]
    llama_cpp.llama_sampler_free(chain)
    scores = np.array([s for _, s in kept], dtype=np.float64)
    probs = np.exp(scores - scores.max())
    return dict(zip([t for t, _ in kept], (probs / probs.sum()).tolist()))


@pytest.mark.parametrize("params", [
    GenerationParams(temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05),
    GenerationParams(temperature=1.3, top_k=0, top_p=0.95, min_p=0.05, presence_penalty=0.5, frequency_penalty=0.2),
    GenerationParams(temperature=0.5, top_k=5, top_p=1.0, repetition_penalty=1.5),
])
def test_distribution_is_what_llama_cpp_samplers_leave(params):
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal(300) * 3).astype(np.float32)
    recent = [int(t) for t in np.argsort(-logits)[:6]] * 2  # penalise some of the likeliest tokens
    mine = spec_sampling.distribution(logits, recent, params)
    theirs = _llama_cpp_chain(logits, recent, params)
    assert dict(zip(mine.ids.tolist(), mine.probs.tolist())) == pytest.approx(theirs, rel=1e-5, abs=1e-9)


def test_penalties_use_only_the_last_64_generated_tokens():
    logits = np.ones(100, dtype=np.float32)
    params = GenerationParams(repetition_penalty=2.0)
    old, recent = [7], [1] * 64
    assert spec_sampling.penalised(logits, old + recent, params)[7] == 1.0
    assert spec_sampling.penalised(logits, old + recent, params)[1] == 0.5


# --- the draft length ------------------------------------------------------------------------------------
def _length(**kw) -> DraftLength:
    length = DraftLength(**kw)
    length.begin()
    return length


def test_draft_length_measures_plain_decoding_first():
    length = _length()
    assert length.next(room=10) == 0
    length.record(0, 0, 0.0, 0.05)
    assert length.plain_s == 0.05 and length.next(room=10) > 0
    assert length.next(room=2) <= 2


def test_full_acceptance_on_a_bandwidth_bound_machine_drafts_long():
    length = _length(k_max=10, plain_s=0.05)
    for _ in range(8):
        k = length.next(room=100)
        length.record(k, k, 0.01 * k, 0.05 * (1 + 0.05 * k))  # each extra position costs 5% of a step
    assert length.alpha > 0.9 and length.next(room=100) == 10


def test_early_rejections_shorten_the_draft():
    length = _length(k_max=10, plain_s=0.05, batch=BatchCost(prior_beta=0.05), draft_s=0.01)
    long = length.next(room=100)
    for _ in range(6):
        length.record(4, 1, 0.04, 0.06)
    assert 0 < length.next(room=100) < long


def _gaps_between_probes(length: DraftLength, outcomes: list[int], cost: float = 1.2) -> list[int]:
    """Plain steps before each probe; each probe (2 tokens, `cost` plain steps) then gets `accepted` from `outcomes`."""
    gaps = []
    for accepted in outcomes:
        plain = 0
        while (k := length.next(room=10)) == 0:
            plain += 1
        assert k == 2  # a small probe
        gaps.append(plain)
        length.record(2, accepted, 0.0, length.plain_s * cost)
    return gaps


def test_a_compute_bound_machine_decodes_plainly_and_probes_rarely():
    length = _length(plain_s=0.05, draft_s=0.0)
    for n in (2, 4, 8, 16):
        length.batch.learn(n, float(n))  # every position costs a whole step: batching saves nothing
    assert length.best(10, alpha=0.99)[1] < 1  # not even perfect acceptance would pay
    assert _gaps_between_probes(length, [0, 2], cost=3.0) == [PROBE_MAX - 1] * 2


def test_rejected_probes_come_at_growing_intervals_and_an_accepted_one_looks_again_at_once():
    length = _length(plain_s=0.05, draft_s=0.0, batch=BatchCost(prior_beta=0.1))
    length.alpha = 0.0  # the text so far drafts badly
    gaps = _gaps_between_probes(length, [0, 0, 0])
    assert gaps[0] < gaps[1] < gaps[2] and gaps[2] >= 2 * PROBE_START
    length.alpha = 0.0
    assert _gaps_between_probes(length, [2, 2])[1] == 0


def test_batch_cost_is_learned_per_size_and_interpolated():
    cost = BatchCost(prior_beta=0.25)
    assert cost.of(1) == 1.0 and cost.of(5) == pytest.approx(1 + 0.25 * 4)
    cost.learn(4, 4.0)  # compute bound: four positions cost four steps
    cost.learn(16, 6.0)  # a large batch saves: sixteen cost six
    assert cost.of(4) == pytest.approx(4.0) and cost.of(16) == pytest.approx(6.0)
    assert cost.of(8) == pytest.approx(1 + 0.25 * 7)  # not measured: the prior
    assert cost.of(12) == pytest.approx((1 + 0.25 * 7 + 6.0) / 2)


def test_large_drafts_are_chosen_where_only_large_batches_save():
    """A busy CPU: small batches cost a step per position, large ones less; copying text accepts nearly all."""
    length = _length(k_max=32, plain_s=0.05, draft_s=0.0)
    for n, ratio in ((2, 2.0), (4, 4.0), (8, 8.0), (16, 9.5), (32, 14.0)):
        length.batch.learn(n, ratio)
    length.alpha = 0.97
    k, gain = length.best(32)
    assert k >= 15 and gain > 1.2
    length.alpha = 0.5  # half the drafted tokens rejected: nothing pays
    assert length.next(room=32) == 0


def test_a_draft_model_as_slow_as_the_target_is_probed_only_in_a_later_generation():
    length = _length(plain_s=0.05, batch=BatchCost(prior_beta=0.05), draft_s=0.05, alpha_prior=0.9,
                     costly_probe=True, unprobed=0)
    assert length.best(10)[1] < 1
    assert not any(length.next(room=10) for _ in range(1000))  # catching the draft up would cost more
    for _ in range(REPROBE_GENERATIONS):
        length.begin()
    assert any(length.next(room=10) for _ in range(PROBE_START))


# --- prompt lookup ---------------------------------------------------------------------------------------
def _propose(drafter, seq, k=4):
    return drafter.propose(seq, k, [], GenerationParams(), np.random.default_rng(0)).tokens


def test_ngram_proposes_what_followed_the_latest_earlier_occurrence():
    seq = [1, 2, 3, 4, 5, 9, 1, 2, 3, 6, 7, 8, 0, 1, 2, 3]
    assert _propose(NgramDrafter(n_max=3, n_min=2), seq) == [6, 7, 8, 0]


def test_ngram_prefers_the_longest_match():
    seq = [5, 2, 3, 4, 4, 4, 1, 2, 3, 8, 8, 8, 9, 5, 2, 3]  # "2 3" last followed by 8, "5 2 3" by 4
    assert _propose(NgramDrafter(n_max=3, n_min=2), seq) == [4, 4, 4, 1]


def test_ngram_proposes_nothing_without_a_match_and_follows_a_new_sequence():
    drafter = NgramDrafter(n_max=3, n_min=2)
    assert _propose(drafter, [1, 2, 3, 4]) == []
    assert _propose(drafter, [1, 2, 3, 4, 1, 2]) == [3, 4, 1, 2]
    assert _propose(drafter, [7, 8, 9, 7, 8]) == [9, 7, 8]  # a new conversation is indexed anew


# --- timings ------------------------------------------------------------------------------------------------
def test_timings_acceptance_rate():
    t = Timings(10, 0, 20, 0.1, 100.0, 20.0, drafted_tokens=16, accepted_tokens=12)
    assert t.acceptance_rate == 0.75
    assert Timings(10, 0, 20, 0.1, 100.0, 20.0).acceptance_rate is None


# --- the whole loop on tiny GGUF models --------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """A tiny random Llama and a noisy copy of it (same vocabulary, related predictions): (target, draft)."""
    from danlu.backends.llamacpp import load

    root = tmp_path_factory.mktemp("spec-tiny")
    target, _ = tm.llama_gguf(root / "target")
    draft, _ = tm.llama_gguf(root / "draft", noise=0.01)
    engines = [load(None, None, LoadPlan(p, n_ctx=256, n_threads=1)) for p in (target, draft)]
    yield tuple(engines)
    for e in engines:
        e.close()


@pytest.fixture
def tiny_speculator(tiny_pair):
    target, draft = tiny_pair
    target.speculator = Speculator(target, ModelDrafter(draft, "tiny-draft", p_min=0.0),
                                   DraftLength(k_max=2, plain_s=1e9))  # drafting always "pays"
    yield target
    target.speculator = None


def _tokens(engine, ids, params) -> list[int]:
    return [t for chunk in engine.generate(ids, params) for t in chunk.token_ids]


def test_tiny_models_share_a_vocabulary_but_not_their_predictions(tiny_pair):
    target, draft = tiny_pair
    prompt = target.tokenize("你好，世界", add_bos=True)
    assert same_vocabulary(target, draft)
    assert not np.allclose(target.next_token_logits(prompt), draft.next_token_logits(prompt))


def test_greedy_with_a_draft_is_greedy_without(tiny_speculator):
    engine = tiny_speculator
    prompt = engine.tokenize("北京是中国的", add_bos=True)
    params = GenerationParams(max_tokens=24, temperature=0.0, repetition_penalty=1.1)
    engine.llm.reset()
    with_draft = _tokens(engine, prompt, params)
    assert with_draft == plain_tokens(engine, prompt, params)
    assert engine.speculator.stats.accepted > 0


def test_sampling_with_a_draft_follows_the_targets_distribution(tiny_speculator):
    """Three tokens after a prompt, 3,000 seeded runs: the joint frequencies against the exact target
    probabilities p(a) p(b|a) p(c|a,b), computed from the target's logits with the same sampling chain."""
    engine = tiny_speculator
    prompt = engine.tokenize("人工智能", add_bos=True)
    params = GenerationParams(max_tokens=3, temperature=0.05, top_k=3, top_p=1.0, repetition_penalty=1.0)
    exact = _exact_joint(engine, prompt, params, 3)
    counts: dict[tuple, int] = {}
    drafted = accepted = 0
    for seed in range(3000):
        chunks = list(engine.generate(prompt, replace(params, seed=seed)))
        key = tuple(t for c in chunks for t in c.token_ids)
        counts[key] = counts.get(key, 0) + 1
        drafted, accepted = drafted + chunks[-1].timings.drafted_tokens, accepted + chunks[-1].timings.accepted_tokens
    assert 0 < accepted < drafted  # the draft was both kept and rejected: both branches of the rule ran
    assert _chi_square_p(counts, exact) > ALPHA


def _exact_joint(engine, prompt, params, n) -> dict[tuple, float]:
    speculator, engine.speculator = engine.speculator, None
    joint = {(): 1.0}
    for _ in range(n):
        nxt = {}
        for seq, prob in joint.items():
            d = spec_sampling.distribution(engine.next_token_logits(prompt + list(seq)), list(seq), params)
            for token, p in zip(d.ids.tolist(), d.probs.tolist()):
                nxt[seq + (token,)] = prob * p
        joint = nxt
    engine.speculator = speculator
    return {k: v for k, v in joint.items() if v > 0}


def test_a_constraint_switches_speculation_off(tiny_speculator):
    engine = tiny_speculator
    prompt = engine.tokenize("谢谢你", add_bos=True)
    params = GenerationParams(max_tokens=8, temperature=0.0, constraint=object())
    assert not engine.speculator.applies(params)
    final = list(engine.generate(prompt, replace(params, constraint=None)))[-1]
    assert final.timings.drafted_tokens > 0


def test_stop_string_inside_an_accepted_draft_cuts_the_text_like_plain_decoding(tiny_speculator):
    engine = tiny_speculator
    prompt = engine.tokenize("春眠不觉晓", add_bos=True)
    params = GenerationParams(max_tokens=30, temperature=0.0)
    speculator, engine.speculator = engine.speculator, None
    plain = "".join(c.text for c in engine.generate(prompt, params))
    stop = plain[len(plain) // 2 : len(plain) // 2 + 2]
    expected = [(c.text, c.finish_reason) for c in engine.generate(prompt, replace(params, stop=[stop]))]
    engine.speculator = speculator
    got = list(engine.generate(prompt, replace(params, stop=[stop])))
    assert "".join(c.text for c in got) == "".join(t for t, _ in expected)
    assert got[-1].finish_reason == expected[-1][1] == "stop"


def test_stopping_the_stream_midway_leaves_a_cache_the_next_turn_can_reuse(tiny_speculator):
    """Ctrl-C closes the generator between chunks: the KV bookkeeping must still describe the cache."""
    engine = tiny_speculator
    prompt = engine.tokenize("丹炉是一个本地的大模型工作台", add_bos=True)
    params = GenerationParams(max_tokens=30, temperature=0.0)
    stream = engine.generate(prompt, params)
    said = [t for _, chunk in zip(range(3), stream) for t in chunk.token_ids]
    stream.close()
    assert engine.llm._requires_eval and list(engine.llm._input_ids[: len(prompt)]) == prompt
    chunks = list(engine.generate(prompt + said, params))
    assert chunks[-1].timings.cached_tokens >= len(prompt) and chunks[-1].timings.completion_tokens == 30


def test_budget_and_context_cap_the_draft(tiny_speculator):
    engine = tiny_speculator
    prompt = engine.tokenize("我们一起去公园玩吧", add_bos=True)
    chunks = list(engine.generate(prompt, GenerationParams(max_tokens=5, temperature=0.0)))
    assert sum(len(c.token_ids) for c in chunks) == 5 and chunks[-1].finish_reason == "length"


def test_prompt_lookup_on_the_tiny_model_is_greedy_decoding(tiny_pair):
    engine = tiny_pair[0]
    prompt = engine.tokenize("你好，世界！今天天气很好。你好，世界！今天", add_bos=True)
    params = GenerationParams(max_tokens=20, temperature=0.0)
    plain = plain_tokens(engine, prompt, params)
    engine.speculator = Speculator(engine, NgramDrafter(), DraftLength(k_max=8, plain_s=1e9))
    try:
        engine.llm.reset()
        assert _tokens(engine, prompt, params) == plain
    finally:
        engine.speculator = None


def test_draft_of_another_vocabulary_is_refused(tiny_pair, tmp_path):
    from danlu.backends.llamacpp import load
    from danlu.errors import DanluError

    tokenizer = tm.byte_bpe_tokenizer(tmp_path / "tok", vocab_size=300, specials=("<unk>", "<s>", "</s>"),
                                      eos="</s>", bos="<s>")
    path, _ = tm.llama_gguf(tmp_path / "other", tokenizer=tokenizer)
    other = load(None, None, LoadPlan(path, n_ctx=128, n_threads=1))
    with pytest.raises(DanluError, match="vocabulary"):
        ModelDrafter.for_target(tiny_pair[0], other, "other")
