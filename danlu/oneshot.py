"""One prompt, one reply: `danlu run`. Returns the measured figures for --json."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from danlu.loader import Loaded


def run_once(loaded: Loaded, text: str, *, system: str | None = None, max_tokens: int | None = None,
             temperature: float | None = None, seed: int | None = None,
             on_text: Callable[[str], None] | None = None) -> dict:
    """Send `text` as one user turn; stream through `on_text`; return text and timings."""
    params = replace(loaded.params)
    for key, value in (("max_tokens", max_tokens), ("temperature", temperature), ("seed", seed)):
        if value is not None:
            setattr(params, key, value)
    conv = loaded.conversation(params, system)
    parts, last = [], None
    for chunk in conv.send(text.strip()):
        parts.append(chunk.text)
        if on_text and chunk.text:
            on_text(chunk.text)
        last = chunk
    timings = last.timings if last else None
    return {
        "text": conv.fmt.postprocess("".join(parts)).strip(),
        "prompt_tokens": timings.prompt_tokens if timings else 0,
        "completion_tokens": timings.completion_tokens if timings else 0,
        "ttft_s": round(timings.ttft_s, 4) if timings else None,
        "tokens_per_s": round(timings.decode_tps, 2) if timings else None,
        "finish_reason": last.finish_reason if last else None,
        **_speculation(loaded, timings),
    }


def _speculation(loaded: Loaded, timings) -> dict:
    """The drafter and how many of its tokens the target kept (speculative decoding); nothing without one."""
    speculator = getattr(loaded.engine, "speculator", None)
    if speculator is None:
        return {}
    rate = timings.acceptance_rate if timings else None
    return {"draft": speculator.drafter.name, "drafted_tokens": timings.drafted_tokens if timings else 0,
            "accepted_tokens": timings.accepted_tokens if timings else 0,
            "acceptance_rate": round(rate, 4) if rate is not None else None}
