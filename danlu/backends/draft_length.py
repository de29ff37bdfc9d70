"""How many tokens to draft next: the expected pay-off of speculation, from what was measured so far.

With a per-token acceptance rate α, drafting k tokens yields E(k) = 1 + α + … + α^k tokens per round
(the accepted prefix and the target's own token after it). A round costs k draft steps and one target
batch of k + 1 positions; a plain step costs one target decode. All are measured as decoding goes (moving
averages: a shared machine is noisy). A batch's cost is learned per size (`BatchCost`), since it is not
linear: where decoding is bound by reading the weights an extra position is nearly free, where it is
bound by compute (a busy or weak CPU) small batches cost about a step per position and only large ones
(16+, where llama.cpp's matrix kernels block the work) save much. Each round drafts the k that maximises
E(k) / cost(k); when even the best k is not clearly faster than a plain step it decodes plainly, probing
now and then (a small draft, at intervals that grow while probes are rejected, at once again after one
that was all accepted) in case the text turned repetitive — rarely when even perfect acceptance could not
pay. So k grows on full acceptance (α rises), shrinks after early rejections
(α falls), and a case where drafting does not pay costs about a probe in every 16–256 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Weight of the newest observation in the moving averages of costs.
EMA = 0.3
#: Weight of the newest round in the acceptance estimate: a rejection after a long accepted run must
#: shorten the next draft at once (copied text ends abruptly where an edit begins).
ACCEPT_EMA = 0.5
#: Draft only when it is expected to beat plain decoding by this much (a margin for measurement noise).
MARGIN = 1.05
#: Plain steps between probes while drafting does not pay; doubled after each probe that did not pay.
PROBE_START, PROBE_MAX = 16, 256
#: A drafter whose probe is costly (a draft model must first decode what it missed) is probed, while
#: hopeless, only in every this many generations.
REPROBE_GENERATIONS = 4
#: Batch sizes at which costs are learned; sizes between them are interpolated.
SIZES = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class BatchCost:
    """A target batch of n positions, in plain steps: measured at a few sizes; where not measured yet, each
    extra position is assumed to cost `prior_beta` steps, or less if a smaller batch was measured cheaper
    (matrix kernels only get more efficient with size), an optimistic guess so that larger drafts get tried."""

    prior_beta: float = 0.25
    measured: dict[int, float] = field(default_factory=dict)  # size → batch time / plain step time

    def of(self, n: int) -> float:
        if n <= 1:
            return 1.0
        upper = next((s for s in SIZES if s >= n), SIZES[-1])
        lower = SIZES[max(SIZES.index(upper) - 1, 0)]
        if n >= upper:
            return self._at(upper) * n / upper
        share = (n - lower) / (upper - lower)
        return self._at(lower) + share * (self._at(upper) - self._at(lower))

    def learn(self, n: int, ratio: float) -> None:
        """One batch of n took `ratio` plain steps: update the nearest size (scaled to it)."""
        size = min(SIZES[1:], key=lambda s: abs(s - n))
        at_size = 1 + max(ratio - 1, 0.0) * (size - 1) / max(n - 1, 1)
        self.measured[size] = _ema(self.measured.get(size), at_size)

    def _at(self, size: int) -> float:
        if size == 1 or size in self.measured:
            return self.measured.get(size, 1.0)
        smaller = [(r - 1) / (m - 1) for m, r in self.measured.items() if m < size]
        return 1 + min([self.prior_beta, *smaller]) * (size - 1)


@dataclass
class DraftLength:
    """The draft length and the decision to draft at all, from measured costs and acceptance."""

    k_max: int = 10
    alpha_prior: float = 0.7  # acceptance assumed before a generation has drafted anything
    draft_s: float | None = None  # seconds per drafted token (None: assume `draft_guess` × a plain step)
    draft_guess: float = 0.35
    plain_s: float | None = None  # seconds per plain step (kept across generations, like the costs)
    batch: BatchCost = field(default_factory=BatchCost)
    alpha: float = 0.7
    idle: int = 0  # plain steps since drafting last paid or was probed
    probe_every: int = PROBE_START
    costly_probe: bool = False  # a draft model: probing first decodes every token it missed
    unprobed: int = 0  # generations since a costly probe

    def begin(self) -> None:
        """A new generation: its text may draft better or worse than the last one's."""
        self.alpha = self.alpha_prior
        self.idle, self.probe_every, self.unprobed = 0, PROBE_START, self.unprobed + 1

    def next(self, room: int) -> int:
        """How many tokens to draft now (0: a plain step); `room` caps it (budget, context)."""
        room = min(room, self.k_max)
        if self.plain_s is None or room <= 0:
            return 0  # measure plain decoding first
        k, gain = self.best(room)
        if gain >= MARGIN:
            return k
        self.idle += 1
        if self.idle < self._probe_interval(room):
            return 0
        self.idle, self.unprobed = 0, 0
        return min(2, room)

    def _probe_interval(self, room: int) -> float:
        """Plain steps before the next probe: growing; long, or (costly probes) not before a later
        generation, when not even perfect acceptance would pay at the costs measured."""
        if self.best(room, alpha=0.99)[1] >= MARGIN:
            return self.probe_every
        if self.costly_probe:
            return self.probe_every if self.unprobed >= REPROBE_GENERATIONS else float("inf")
        return PROBE_MAX

    def best(self, room: int, alpha: float | None = None) -> tuple[int, float]:
        """The k in 1..room with the highest expected tokens per second, and its gain over plain decoding."""
        return max(((k, self.gain(k, alpha)) for k in range(1, room + 1)), key=lambda kg: kg[1])

    def gain(self, k: int, alpha: float | None = None) -> float:
        """Expected tokens per second with k drafted, ÷ plain decoding's."""
        a = min(self.alpha if alpha is None else alpha, 0.999)
        tokens = (1 - a ** (k + 1)) / (1 - a)
        draft = self.draft_s / self.plain_s if self.draft_s is not None else self.draft_guess
        return tokens / (k * draft + self.batch.of(k + 1))

    def record(self, drafted: int, accepted: int, draft_s: float, verify_s: float) -> None:
        """One round: `drafted` proposed (0: a plain step), `accepted` kept, the seconds each part took."""
        if drafted == 0:
            self.plain_s = _ema(self.plain_s, verify_s)
            return
        # per round, the geometric estimate: accepted ÷ tokens tried (the rejected one included)
        observed = 1.0 if accepted == drafted else accepted / (accepted + 1)
        self.alpha = (1 - ACCEPT_EMA) * self.alpha + ACCEPT_EMA * observed
        self.draft_s = _ema(self.draft_s, draft_s / drafted)
        if self.plain_s:
            self.batch.learn(drafted + 1, verify_s / self.plain_s)
        if self.best(self.k_max)[1] >= MARGIN:
            self.idle, self.probe_every = 0, PROBE_START
        elif accepted == drafted:  # a probe that was all accepted: the text may be turning repetitive, look again
            self.idle = self.probe_every
        else:
            self.probe_every = min(self.probe_every * 2, PROBE_MAX)


def _ema(old: float | None, new: float) -> float:
    return new if old is None else (1 - EMA) * old + EMA * new
