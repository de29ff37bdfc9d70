"""One prompt, one reply: `danlu run`. Returns the measured figures for --json."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from danlu.errors import DanluError
from danlu.loader import Loaded


def run_once(loaded: Loaded, text: str, *, system: str | None = None, max_tokens: int | None = None,
             temperature: float | None = None, seed: int | None = None,
             on_text: Callable[[str], None] | None = None, thinking: bool | None = None,
             constraint: Any = None) -> dict:
    """Send `text` as one user turn; stream through `on_text`; return text (thinking apart) and timings.
    `constraint` (danlu.outputs.grammar) holds the answer to JSON or a schema, as `ollama run --format`."""
    params = replace(loaded.params)
    for key, value in (("max_tokens", max_tokens), ("temperature", temperature), ("seed", seed),
                       ("constraint", constraint)):
        if value is not None:
            setattr(params, key, value)
    conv = loaded.conversation(params, system)
    conv.thinking = thinking
    parts, last = [], None
    for chunk in conv.send(text.strip()):
        parts.append(chunk.text)
        if on_text and chunk.text:
            on_text(chunk.text)
        last = chunk
    timings = last.timings if last else None
    reasoning, answer = conv.split_reply("".join(parts))
    return {
        "text": conv.fmt.postprocess(answer).strip(),
        "reasoning": reasoning,
        "prompt_tokens": timings.prompt_tokens if timings else 0,
        "completion_tokens": timings.completion_tokens if timings else 0,
        "ttft_s": round(timings.ttft_s, 4) if timings else None,
        "tokens_per_s": round(timings.decode_tps, 2) if timings else None,
        "finish_reason": last.finish_reason if last else None,
        **_speculation(loaded, timings),
    }


def output_constraint(format: str | None, schema_file: str | None, after: str | None = None) -> Any:
    """`--format json` or `--schema FILE.json` as a constraint; None when neither is given."""
    from danlu.outputs.grammar import json_object, json_schema

    if schema_file:
        return json_schema(read_schema(schema_file), strict=True, after=after)
    if format is None:
        return None
    if format != "json":
        raise DanluError(f"--format 只支持 json，不是 {format!r} / --format takes json, not {format!r} (use --schema FILE for a "
                         "JSON schema)")
    return json_object(after=after)


def read_schema(path: str) -> dict:
    try:
        schema = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise DanluError(f"读不了 JSON schema 文件 {path} / cannot read the JSON schema file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise DanluError(f"{path} 不是合法的 JSON / {path} is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise DanluError(f"{path} 应是一个 JSON schema 对象 / {path} must hold a JSON schema object")
    return schema


def check_output(text: str, constraint: Any) -> None:
    """The constrained answer parses and, with a schema, matches it (a cut-off reply does not: say so)."""
    try:
        value = json.loads(text)
    except ValueError:
        raise DanluError("输出不是完整的 JSON（多半是 max_tokens 不够）：调大 --max-tokens / the output is not complete JSON "
                         "(most likely max_tokens ran out): raise --max-tokens") from None
    schema = getattr(constraint, "schema", None)
    if schema:
        import jsonschema

        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as exc:
            raise DanluError(f"输出不符合 schema / the output does not match the schema: {exc.message}") from None


def _speculation(loaded: Loaded, timings) -> dict:
    """The drafter and how many of its tokens the target kept (speculative decoding); nothing without one."""
    speculator = getattr(loaded.engine, "speculator", None)
    if speculator is None:
        return {}
    rate = timings.acceptance_rate if timings else None
    return {"draft": speculator.drafter.name, "drafted_tokens": timings.drafted_tokens if timings else 0,
            "accepted_tokens": timings.accepted_tokens if timings else 0,
            "acceptance_rate": round(rate, 4) if rate is not None else None}
