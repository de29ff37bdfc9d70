"""The "remote" backend: an OpenAI-compatible endpoint (vLLM, SGLang, Ollama, llama.cpp server, another danlu)
as an Engine, streamed through the official `openai` client.

What it knows: the remote holds the real tokenizer and template, so this engine's "tokens" are Unicode
code points — approximate, and `capabilities.exact_tokens` says so. Template markup is tokenized with
ids offset by `CONTROL` (beyond Unicode), message text without, so `generate` can rebuild the exact
message list from the ids and no message text can forge a role boundary (the same guarantee special
tokens give a local model). A prompt with no markup (a raw completion) goes to /v1/completions. Token
usage in the final chunk's timings is the remote's own count when it reports one.
A server request for a remote passes its own fields through (`GenerationParams.passthrough`: the messages
with their tool calls, `tools`, `tool_choice`, `response_format`, the thinking switch), and the remote's
structured answer comes back as the text danlu's parsers read: thinking as `<think>…</think>`, tool calls
as Hermes `<tool_call>{json}</tool_call>` blocks (remote_text.py), so one parsing path serves every model.
What it doesn't: logits, log-likelihoods, saved state (so no log-likelihood evaluation on a remote).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

from danlu import remotes
from danlu.catalog.schema import ModelSpec, Variant
from danlu.errors import DanluError
from danlu.streaming import TextStream

from .base import Capabilities, Chunk, GenerationParams, LoadPlan, Timings
from .remote_text import RemoteText, chat_extras as _chat_extras

CONTROL = 0x110000  # markup ids are code point + CONTROL
TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
ROLE_TAG = re.compile(r"<\|(system|user|assistant)\|>")
OPENAI_MAX_STOPS = 4  # OpenAI's limit; further stops are applied here
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class RemoteCapabilities(Capabilities):
    """Capabilities plus `exact_tokens`: False here, token counts before a reply are code points."""

    exact_tokens: bool = False


class RemoteError(DanluError):
    """The remote answered with an error (`status`) or could not be reached (`status` None)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def load(spec: ModelSpec | None, variant: Variant | None, plan: LoadPlan) -> "RemoteEngine":
    """`plan.path` is the remote's record file (see danlu/remotes.py)."""
    return RemoteEngine(remotes.read(plan.path))


class CharTokens:
    """Approximate tokens for an engine without a tokenizer of its own: one id per code point, text tokenized with
    special tokens on offset by CONTROL (so the chat markup a format renders can be told from the user's text)."""

    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = False) -> list[int]:
        offset = CONTROL if special else 0
        return [ord(c) + offset for c in text]

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return "".join(chr(i % CONTROL) for i in ids).encode("utf-8")

    def token_to_piece(self, token_id: int) -> bytes:
        return chr(token_id % CONTROL).encode("utf-8")

    def eos_token_ids(self) -> set[int]:
        return set()

    def bos_token_id(self) -> int | None:
        return None


class RemoteEngine(CharTokens):
    """One remote model; thread-safe (the server runs several requests at once through it)."""

    spec = None

    def __init__(self, remote: remotes.Remote):
        from openai import OpenAI

        self.remote, self.n_ctx = remote, remote.n_ctx
        self.capabilities = RemoteCapabilities(chat_template=True)
        self._client = OpenAI(base_url=remote.base_url, api_key=remote.api_key or "not-needed",
                              timeout=TIMEOUT_S, max_retries=0)

    def chat_template(self) -> str:
        return TEMPLATE

    # --- generation -------------------------------------------------------------------------
    def generate(self, ids: Sequence[int], params: GenerationParams) -> Iterator[Chunk]:
        """Chat completion when the ids carry markup, text completion otherwise; streamed."""
        passthrough = dict(params.passthrough or {})
        messages = passthrough.pop("messages", None) or to_messages(ids)
        start = time.perf_counter()
        try:
            if messages is None:
                prompt = self.detokenize(ids).decode("utf-8")
                stream = self._client.completions.create(prompt=prompt, **self._request(params))
            else:
                stream = self._client.chat.completions.create(messages=messages, **self._request(params),
                                                              **_chat_extras(passthrough))
        except Exception as exc:  # noqa: BLE001 — every client failure becomes a user-facing error
            raise self._error(exc) from exc
        try:
            yield from self._chunks(stream, params, len(ids), start)
        finally:
            stream.close()  # also when the caller stops early: the remote stops generating

    def _request(self, params: GenerationParams) -> dict:
        request = dict(model=self.remote.model, stream=True, stream_options={"include_usage": True},
                       max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                       presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty)
        if params.seed is not None:
            request["seed"] = params.seed
        if params.stop:
            request["stop"] = params.stop[:OPENAI_MAX_STOPS]
        return request

    def _chunks(self, stream, params: GenerationParams, n_prompt: int, start: float) -> Iterator[Chunk]:
        text, finish, usage, first, n_out, stopped = TextStream(stop=list(params.stop)), "length", None, None, 0, False
        as_text = RemoteText()
        try:
            for event in stream:
                usage = event.usage or usage
                for choice in event.choices:
                    first = first or time.perf_counter()
                    piece = text.feed(as_text.delta(choice).encode("utf-8"))
                    if piece.text:
                        n_out += len(piece.text)
                        yield Chunk(piece.text, [ord(c) for c in piece.text])
                    stopped = stopped or piece.stopped
                    if stopped or choice.finish_reason:
                        finish = "length" if choice.finish_reason == "length" and not stopped else "stop"
                if stopped:
                    break
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc) from exc
        calls = as_text.finish()
        tail = (text.flush() if finish == "length" else "") + calls
        yield Chunk(tail, [ord(c) for c in tail], finish_reason=finish,
                    timings=_timings(usage, n_prompt, n_out + len(tail), start, first))

    def _error(self, exc: Exception) -> RemoteError:
        """A user-facing error; credentials in the base URL never appear in it, wherever the text came from."""
        import openai

        where, status = f"{self.remote.name} ({self.remote.shown_url})", None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = f"远程模型 {where} 返回 {status} / the remote answered {status}: {_message(exc)}"
        elif isinstance(exc, openai.APIConnectionError):
            message = f"连不上远程模型 {where} / cannot reach the remote: {exc}; check `danlu remote list`"
        else:
            message = f"远程模型 {where} 出错 / the remote failed: {exc!r}"
        return RemoteError(remotes.redact(message, self.remote.base_url), status)

    # --- what a remote cannot do ------------------------------------------------------------
    def next_token_logits(self, ids: Sequence[int]):
        raise DanluError("远程模型没有 logits / a remote model exposes no logits")

    def loglikelihood(self, context_ids: Sequence[int], continuation_ids: Sequence[int]) -> float:
        raise DanluError("远程模型不能算对数似然 / a remote model cannot score log-likelihoods")

    def save_state(self):
        return None

    def restore_state(self, state) -> None:
        pass  # nothing is cached here; the remote does its own prefix caching

    def close(self) -> None:
        self._client.close()


def to_messages(ids: Sequence[int]) -> list[dict] | None:
    """Rebuild the message list from markup (control ids) and text (plain ids); None when there is no markup."""
    messages: list[dict] = []
    runs = _runs(ids)
    if not any(control for control, _ in runs):
        return None
    for control, text in runs:
        if control:
            messages += [{"role": role, "content": ""} for role in ROLE_TAG.findall(text)]
        elif messages:
            messages[-1]["content"] += text
        else:
            messages.append({"role": "user", "content": text})
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()  # the generation prompt
    return messages


def _runs(ids: Sequence[int]) -> list[tuple[bool, str]]:
    """Consecutive ids grouped into (is_markup, text)."""
    runs: list[tuple[bool, list[str]]] = []
    for i in ids:
        control = i >= CONTROL
        if not runs or runs[-1][0] != control:
            runs.append((control, []))
        runs[-1][1].append(chr(i % CONTROL))
    return [(control, "".join(chars)) for control, chars in runs]


def _message(exc) -> str:
    body = exc.body if isinstance(getattr(exc, "body", None), dict) else {}
    error = body.get("error", body)
    return error.get("message") if isinstance(error, dict) and error.get("message") else str(exc)


def _timings(usage, n_prompt: int, n_out: int, start: float, first: float | None) -> Timings:
    end, first = time.perf_counter(), first or time.perf_counter()
    prompt = usage.prompt_tokens if usage else n_prompt
    completion = usage.completion_tokens if usage else n_out
    details = getattr(usage, "prompt_tokens_details", None) if usage else None
    cached = (getattr(details, "cached_tokens", 0) or 0) if details else 0
    return Timings(prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion, ttft_s=first - start,
                   prompt_tps=prompt / max(first - start, 1e-9), decode_tps=max(completion - 1, 0) / max(end - first, 1e-9))
