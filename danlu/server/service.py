"""The one service both wire protocols call: chat, completion, embeddings and rerank over the scheduler, in
danlu's own terms.

A request flows protocol → service → scheduler → engine: server/openai/ and server/ollama/ build a `ChatCall`
or `CompletionCall` (server/calls.py), this module turns it into an engine request — the prompt rendered with
the model's format (tools and the thinking switch passed to its template), sampling resolved user > server >
model, max_tokens checked against the context, per-request options (logprobs, logit bias, a JSON constraint)
— and returns a started `Generation` whose pieces are already split into thinking, content and tool calls.
Rendering and tokenizing run in a worker thread: a long prompt never stalls the event loop, and a prompt
that cannot fit the context is refused before it is tokenized.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request

from danlu.backends.base import GenerationParams
from danlu.backends.requests import SubmitOptions
from danlu.errors import DanluError
from danlu.server import thinking as thinking_rules
from danlu.backends.base import EmbeddingResult
from danlu.server.calls import SAMPLING_FIELDS, ChatCall, CompletionCall, EmbedCall, RerankCall, Usage
from danlu.server.errors import ApiError, bad_request, unsupported
from danlu.server.generation import Generation, Job, OutputParsing
from danlu.server.runners import ThreadRunner
from danlu.server.scheduler import ModelScheduler, ServedModel

#: No tokenizer here packs more than this many UTF-8 bytes into one token: a prompt longer than
#: n_ctx × this cannot fit, whatever it says, and is refused before it is tokenized.
MAX_BYTES_PER_TOKEN = 64


@dataclass
class Prepared:
    """An engine request ready to submit."""

    ids: list[int]
    params: GenerationParams
    options: SubmitOptions
    parsing: OutputParsing
    budget: int | None = None


class Service:
    """chat() and complete() for the protocols; each returns a started Generation (close it when done)."""

    def __init__(self, scheduler: ModelScheduler):
        self.scheduler = scheduler

    async def chat(self, call: ChatCall, request: Request | None = None) -> Generation:
        return await self._run(call.model, lambda served: self._prepare_chat(served, call), request,
                               call.keep_alive_s)

    async def complete(self, call: CompletionCall, request: Request | None = None) -> Generation:
        return await self._run(call.model, lambda served: self._prepare_completion(served, call), request,
                               call.keep_alive_s)

    async def embed(self, call: EmbedCall) -> tuple[EmbeddingResult, Usage]:
        """Vectors for the call's texts, in order (the model in llama.cpp's embedding mode)."""
        job = await Job.open(self.scheduler, call.model, "embed")
        job.keep_alive_s = call.keep_alive_s
        try:
            engine = job.served.engine
            texts = engine.as_queries(call.texts) if call.input_type == "query" else call.texts
            result = await job.served.runner.call("embed", texts, truncate=call.truncate, dimensions=call.dimensions)
            return result, Usage(prompt_tokens=result.prompt_tokens, total_s=time.monotonic() - job.started,
                                 load_s=job.load_s)
        except DanluError as exc:
            raise ApiError(400, str(exc), param="input", code="invalid_input") from None
        finally:
            job.close()

    async def rerank(self, call: RerankCall) -> tuple[list[float], Usage]:
        """A relevance score per document (a reranker's head; higher is more relevant)."""
        job = await Job.open(self.scheduler, call.model, "rerank")
        try:
            scores = await job.served.runner.call("rerank", call.query, call.documents, truncate=call.truncate)
            tokens = sum(len(job.served.engine.tokenize(d)) for d in call.documents)
            return scores, Usage(prompt_tokens=tokens, total_s=time.monotonic() - job.started, load_s=job.load_s)
        except DanluError as exc:
            raise ApiError(400, str(exc), param="documents", code="invalid_input") from None
        finally:
            job.close()

    async def _run(self, model: str, prepare, request: Request | None, keep_alive_s: float | None) -> Generation:
        job = await Job.open(self.scheduler, model)
        job.keep_alive_s = keep_alive_s
        try:
            prepared = await asyncio.to_thread(prepare, job.served)
            generation = Generation(job, prepared.ids, prepared.params, prepared.options, prepared.parsing,
                                    prepared.budget, request)
            return await generation.start()
        except BaseException:
            job.close()
            raise

    # --- chat -------------------------------------------------------------------------------
    def _prepare_chat(self, served: ServedModel, call: ChatCall) -> Prepared:
        if served.resolved.backend == "remote":
            return self._prepare_remote(served, call)
        thinking = thinking_rules.resolve(served, call.thinking, self.scheduler.settings)
        ids = self._chat_ids(served, call, thinking)
        params = self._params(served, call.sampling, call.max_tokens, None, call.stop, len(ids), "messages",
                              call.num_ctx, served.model_stops, thinking is not False)
        params = replace(params, constraint=constraint_for(call, served, thinking))
        return Prepared(ids, params, self._options(served, call.logprobs, call.logit_bias, call.ignore_eos),
                        parsing_for(served, call, thinking), call.reasoning_budget)

    def _chat_ids(self, served: ServedModel, call: ChatCall, thinking: bool | None) -> list[int]:
        options = dict(call.template_kwargs)
        if call.wants_tools:
            if not served.fmt.tool_protocol:
                raise bad_request(f"模型 {served.key} 不支持工具调用：它的对话格式 {served.fmt.name} 没有工具协议 / {served.key} "
                                  f"cannot call tools: its prompt format {served.fmt.name} has no tool protocol; omit "
                                  "`tools` or pick a model that has one", "tools", "tools_unsupported")
            options["tools"] = call.tools
        if thinking is not None:
            options["enable_thinking"] = thinking
        self._refuse_oversized(served, sum(len(str(m.get("content") or "").encode()) for m in call.messages))
        return prompt_ids(lambda: served.chat_ids(call.messages, **options), "messages")

    def _prepare_remote(self, served: ServedModel, call: ChatCall) -> Prepared:
        """A remote model gets the client's own messages and fields (tools, response_format, the thinking switch);
        its thinking and tool calls come back as text the usual parsers read (backends/remote_text.py)."""
        ids = prompt_ids(lambda: served.chat_ids(call.messages), "messages")
        params = self._params(served, call.sampling, call.max_tokens, None, call.stop, len(ids), "messages",
                              call.num_ctx)
        fields = dict(call.passthrough)
        if call.thinking is not None:
            fields["chat_template_kwargs"] = {**fields.get("chat_template_kwargs", {}), "enable_thinking": call.thinking}
        params = replace(params, passthrough={"messages": remote_messages(call.messages), **fields})
        from danlu.outputs.reasoning import get_reasoning
        from danlu.outputs.tool_calls import get_tool_parser

        tools = get_tool_parser("hermes")(call.tools) if call.wants_tools else None
        options = self._options(served, call.logprobs, call.logit_bias, call.ignore_eos)
        return Prepared(ids, params, options, OutputParsing(get_reasoning("think")(), tools))

    # --- completion -------------------------------------------------------------------------
    def _prepare_completion(self, served: ServedModel, call: CompletionCall) -> Prepared:
        if isinstance(call.prompt, str):
            self._refuse_oversized(served, len(call.prompt.encode()))
            ids = prompt_ids(lambda: served.text_ids(call.prompt), "prompt")
        else:
            ids = prompt_ids(lambda: token_prompt(served, call.prompt), "prompt")
        params = self._params(served, call.sampling, call.max_tokens, call.default_max_tokens, call.stop, len(ids),
                              "prompt", call.num_ctx)
        if call.response_format is not None:
            params = replace(params, constraint=json_constraint(call.response_format, served, None))
        return Prepared(ids, params, self._options(served, call.logprobs, call.logit_bias, call.ignore_eos),
                        OutputParsing())

    # --- shared -----------------------------------------------------------------------------
    def _refuse_oversized(self, served: ServedModel, n_bytes: int) -> None:
        if n_bytes > served.n_ctx * MAX_BYTES_PER_TOKEN:
            raise ApiError(400, f"提示有 {n_bytes} 字节，无论怎样切分都超过上下文 {served.n_ctx} 个 token / the prompt is "
                           f"{n_bytes} bytes, more than a {served.n_ctx}-token context can hold: shorten it",
                           param="messages", code="context_length_exceeded")

    def _params(self, served: ServedModel, sampling: dict, max_tokens: int | None, default_max: int | None,
                stop: list[str], n_prompt: int, param: str, num_ctx: int | None,
                model_stops: tuple[str, ...] = (), thinking: bool = True) -> GenerationParams:
        """The sampling settings (user > server > model), max_tokens checked against what the context has left."""
        n_ctx = min(served.n_ctx, num_ctx) if num_ctx else served.n_ctx
        room = n_ctx - n_prompt
        if room <= 0:
            raise ApiError(400, f"提示有 {n_prompt} 个 token，上下文只有 {n_ctx}：请缩短 / the prompt is {n_prompt} tokens but "
                           f"the context is {n_ctx}: shorten the {param}", param=param, code="context_length_exceeded")
        if max_tokens and max_tokens > room:
            raise ApiError(400, f"max_tokens={max_tokens} 加上提示的 {n_prompt} 个 token 超过上下文 {n_ctx} / max_tokens="
                           f"{max_tokens} plus the {n_prompt}-token prompt exceeds the context of {n_ctx}: set "
                           f"max_tokens to at most {room}", param="max_tokens", code="context_length_exceeded")
        model = served.params if thinking else served.params_no_think
        return resolve_params(model, self.scheduler.settings.sampling_defaults, sampling,
                              max_tokens, default_max, [*model_stops, *stop], room)

    def _options(self, served: ServedModel, logprobs: int | None, bias: dict | None, ignore_eos: bool) -> SubmitOptions:
        batched = not isinstance(served.runner, ThreadRunner)
        if logprobs is not None and not batched:
            raise unsupported("logprobs", "这个模型不提供 logprobs / this model's backend gives no logprobs: omit `logprobs`")
        return SubmitOptions(logprobs=logprobs, logit_bias=logit_bias(bias, served, batched), ignore_eos=ignore_eos)


def resolve_params(model: GenerationParams, server: dict, sampling: dict, max_tokens: int | None,
                   default_max: int | None, stops: list[str], room: int) -> GenerationParams:
    """Each setting from the request if given, else the server's default, else the model's; user stops are
    added to the model's own, never substituted (FastChat #2282)."""
    picked = {name: sampling[name] if name in sampling else server.get(name, getattr(model, name))
              for name in SAMPLING_FIELDS}
    most = max_tokens or server.get("max_tokens") or default_max or model.max_tokens
    return replace(model, **picked, max_tokens=min(int(most), room),
                   stop=list(dict.fromkeys([*model.stop, *stops])))


def remote_messages(messages: list[dict]) -> list[dict]:
    """Messages in OpenAI's wire form: tool-call arguments as JSON strings, no danlu-only fields."""
    import json

    out = []
    for message in messages:
        message = {k: v for k, v in message.items() if k != "reasoning_content"}
        for call in message.get("tool_calls") or []:
            arguments = call["function"].get("arguments")
            if not isinstance(arguments, str):
                call["function"] = {**call["function"], "arguments": json.dumps(arguments, ensure_ascii=False)}
        out.append(message)
    return out


def prompt_ids(build, param: str) -> list[int]:
    """Render and tokenize; a conversation the format rejects is the caller's to fix (400)."""
    try:
        ids = build()
    except DanluError as exc:
        raise ApiError(400, str(exc), param=param, code="invalid_prompt") from None
    if not ids:
        raise ApiError(400, "提示为空 / the prompt is empty: send some text", param=param, code="empty_prompt")
    return ids


def token_prompt(served: ServedModel, prompt: list[int]) -> list[int]:
    if isinstance(served.runner, ThreadRunner):
        raise DanluError("这个模型只接受文本提示 / this model takes text prompts only, not token ids")
    n_vocab = served.engine.n_vocab
    if any(not 0 <= t < n_vocab for t in prompt):
        raise DanluError(f"token id 必须在 [0, {n_vocab}) 内 / token ids in `prompt` must be in [0, {n_vocab})")
    return list(prompt)


def logit_bias(bias: dict | None, served: ServedModel, batched: bool) -> dict[int, float] | None:
    if not bias:
        return None
    n_vocab = getattr(served.engine, "n_vocab", 0)
    try:
        parsed = {int(k): float(v) for k, v in bias.items()}
    except (TypeError, ValueError):
        parsed = {}
    if not batched or not parsed or any(not 0 <= k < n_vocab for k in parsed):
        raise ApiError(400, f"logit_bias 的键必须是 [0, {n_vocab}) 内的 token id / logit_bias keys must be token ids in "
                       f"[0, {n_vocab}) of a local llama.cpp model", param="logit_bias", code="invalid_value")
    return parsed


def parsing_for(served: ServedModel, call: ChatCall, thinking: bool | None) -> OutputParsing:
    """The reply's parsers: the format's thinking splitter, and its tool-call parser when tools were given."""
    if not served.fmt.reasoning and not call.wants_tools:
        return OutputParsing()
    from danlu.outputs.tool_calls import get_tool_parser  # registers every protocol
    from danlu.outputs.reasoning import get_reasoning

    reasoning = get_reasoning(served.fmt.reasoning)(thinking=thinking is not False) if served.fmt.reasoning else None
    tools = get_tool_parser(served.fmt.tool_protocol)(call.tools) if call.wants_tools else None
    return OutputParsing(reasoning, tools)


def constraint_for(call: ChatCall, served: ServedModel, thinking: bool | None) -> Any:
    """A grammar for `response_format`, or for `tool_choice` required / named (with `strict` functions)."""
    after = thinking_rules.answer_starts_after(served, thinking)
    if call.response_format is not None:
        return json_constraint(call.response_format, served, after)
    if call.wants_tools and (call.tool_choice == "required" or call.required_tool):
        return tool_call_constraint(served, call, after)
    return None


def tool_call_constraint(served: ServedModel, call: ChatCall, after: str | None) -> Any:
    """tool_choice required / named: the reply must be Hermes calls to the given tools (Qwen's protocol)."""
    from danlu.outputs.grammar import UnsupportedSchema, tool_calls

    if served.fmt.tool_protocol != "hermes":
        raise unsupported("tool_choice", f"{served.key} 的工具协议 {served.fmt.tool_protocol} 不能强制调用：用 tool_choice "
                          f"\"auto\" / {served.key}'s tool protocol {served.fmt.tool_protocol} cannot be forced to call: use "
                          "tool_choice \"auto\"")
    try:
        return tool_calls(call.tools, "<tool_call>", "</tool_call>", required_name=call.required_tool,
                          parallel=call.parallel_tool_calls, after=after)
    except UnsupportedSchema as exc:
        raise unsupported("tools", str(exc)) from None


def json_constraint(response_format, served: ServedModel, after: str | None) -> Any:
    from danlu.outputs.grammar import UnsupportedSchema, json_object, json_schema

    try:
        if response_format.kind == "json_object":
            return json_object(after=after)
        return json_schema(response_format.schema or {}, strict=response_format.strict, after=after)
    except UnsupportedSchema as exc:
        raise unsupported("response_format", str(exc)) from None
