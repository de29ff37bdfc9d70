"""How llama.cpp's CPU threads wait for each other: the OpenMP wait policy, set before llama.cpp loads.

llama.cpp (built with OpenMP, as the llama-cpp-python wheel is) meets at a barrier after every operation of a
forward pass, hundreds of times per token. libgomp reads how a thread waits there from the environment once,
when the library loads: spin (its default: ~300,000 pause loops, then sleep), `active` (spin for ever) or
`passive` (sleep at once). Spinning is fastest on an idle machine and collapses when other processes want the
same cores (a spinning thread holds a core the thread it waits for needs); sleeping never collapses but pays a
wake-up per barrier. `DANLU_OMP_WAIT` picks one of `POLICIES`; an OMP_WAIT_POLICY or GOMP_SPINCOUNT the user
set is left alone. See the README ("Threads on a busy machine") for what was measured.
"""

from __future__ import annotations

import os
from typing import MutableMapping

#: The environment each policy sets. "brief" spins a short while (10,000 loops, tens of microseconds), then sleeps.
POLICIES: dict[str, dict[str, str]] = {
    "spin": {},
    "active": {"OMP_WAIT_POLICY": "active"},
    "passive": {"OMP_WAIT_POLICY": "passive"},
    "brief": {"GOMP_SPINCOUNT": "10000"},
}
DEFAULT_POLICY = "passive"
USER_KNOBS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def apply_wait_policy(environ: MutableMapping[str, str] = os.environ) -> str:
    """Set the chosen policy's variables unless the user set OpenMP's own; returns what is in force."""
    if any(knob in environ for knob in USER_KNOBS):
        return "user"
    policy = environ.get("DANLU_OMP_WAIT", DEFAULT_POLICY).strip().lower()
    environ.update(POLICIES.get(policy, POLICIES[DEFAULT_POLICY]))
    return policy if policy in POLICIES else DEFAULT_POLICY
