"""OpenAI's wire format: request bodies in, responses, stream chunks and errors out.

Accepted: ``POST /v1/chat/completions`` (model, messages with string or text-part content, max_tokens or
max_completion_tokens, temperature, top_p, seed, stop, stream, stream_options.include_usage, user) and
``POST /v1/completions`` (model, prompt as a string or a one-string list, the same parameters); the prompt of
a legacy completion becomes one user message. An llmops extension, ``prompt`` =
``{"id": NAME, "version": "production", "variables": {...}}`` (``extra_body`` in the openai client), names a
registry prompt instead of messages. Fields that would change the answer and are not supported (``n`` > 1,
tools, functions, logprobs) are refused with 422; other unknown fields are ignored, as OpenAI's own clients
send many.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.completions import Completion
from schemas.requests import GenerationParams, Message, PromptRef

Endpoint = Literal["chat", "text"]

_UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logprobs", "top_logprobs", "echo", "best_of")
_FINISH = {"stop": "stop", "eos": "stop", "length": "length", "deadline": "length", "error": "stop"}


class BadRequest(ValueError):
    """A body that cannot become a request; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None


class _PromptExtension(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=200)
    version: str | int = "production"
    variables: dict[str, str | int | float | bool] = Field(default_factory=dict)


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200)
    messages: list[_ChatMessage] | None = None
    prompt: str | list[str] | _PromptExtension | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(default=None, max_length=200)
    n: int = 1


class ParsedRequest(BaseModel):
    """What the gateway needs from a body."""

    model: str
    messages: list[Message] | None
    prompt: PromptRef | None
    params: GenerationParams
    stream: bool
    include_usage: bool
    user: str | None
    temperature_given: bool


def _problems(exc: ValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    return f"{param}: {first['msg']}" if param else first["msg"], param


def _content(message: _ChatMessage, i: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise BadRequest(f"messages[{i}].content: only text parts are supported, got {part.type!r}", f"messages.{i}.content")
        texts.append(part.text)
    return "".join(texts)


def parse_body(raw: bytes, endpoint: Endpoint) -> ParsedRequest:
    """A request body as the gateway's request, or BadRequest saying which field is wrong."""
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        body = _Body.model_validate(data)
    except ValidationError as exc:
        message, param = _problems(exc)
        raise BadRequest(message, param) from None
    for name in _UNSUPPORTED:
        if data.get(name) not in (None, False, [], {}):
            raise BadRequest(f"{name!r} is not supported by this gateway", name)
    if body.n != 1:
        raise BadRequest("only n=1 is supported", "n")

    messages: list[Message] | None = None
    prompt: PromptRef | None = None
    if isinstance(body.prompt, _PromptExtension):
        variables = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.prompt.variables.items()}
        prompt = PromptRef(prompt_id=body.prompt.id, version=str(body.prompt.version), variables=variables)
    if endpoint == "chat":
        if body.messages:
            if prompt is not None:
                raise BadRequest("give either 'messages' or a registry 'prompt', not both", "prompt")
            messages = [
                Message(role="system" if m.role == "developer" else m.role, content=_content(m, i))
                for i, m in enumerate(body.messages)
            ]
        elif prompt is None:
            raise BadRequest("'messages' must be a non-empty list", "messages")
    else:
        if isinstance(body.prompt, list):
            if len(body.prompt) != 1:
                raise BadRequest("only one prompt per request is supported", "prompt")
            messages = [Message(role="user", content=body.prompt[0])]
        elif isinstance(body.prompt, str):
            messages = [Message(role="user", content=body.prompt)]
        elif prompt is None:
            raise BadRequest("'prompt' is required", "prompt")

    fields: dict[str, Any] = {"stream": body.stream}
    max_tokens = body.max_completion_tokens or body.max_tokens
    for name, value in (("max_tokens", max_tokens), ("temperature", body.temperature), ("top_p", body.top_p),
                        ("seed", body.seed)):
        if value is not None:
            fields[name] = value
    if body.stop is not None:
        fields["stop"] = [body.stop] if isinstance(body.stop, str) else body.stop
    try:
        params = GenerationParams.model_validate(fields)
        if messages is not None:
            messages = [Message.model_validate(m.model_dump()) for m in messages]
    except ValidationError as exc:
        message, param = _problems(exc)
        raise BadRequest(message, param) from None
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return ParsedRequest(model=body.model, messages=messages, prompt=prompt, params=params, stream=body.stream,
                         include_usage=include_usage, user=body.user, temperature_given=body.temperature is not None)


def usage(completion: Completion) -> dict[str, int]:
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens}


def finish_reason(completion: Completion) -> str:
    return _FINISH.get(completion.finish_reason, "stop")


def response_id(endpoint: Endpoint, request_id: str) -> str:
    return f"{'chatcmpl' if endpoint == 'chat' else 'cmpl'}-{request_id}"


def full_response(
    endpoint: Endpoint, completion: Completion, model: str, created: int, text: str, finish: str | None = None,
) -> dict[str, Any]:
    """The non-streamed response body (``finish`` overrides the finish reason, e.g. ``content_filter``)."""
    reason = finish or finish_reason(completion)
    if endpoint == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": reason, "logprobs": None}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        kind = "text_completion"
    return {"id": response_id(endpoint, completion.request_id), "object": kind, "created": created, "model": model,
            "system_fingerprint": completion.deployment_id, "choices": [choice], "usage": usage(completion)}


def stream_chunk(
    endpoint: Endpoint, request_id: str, model: str, created: int, *, text: str | None = None, role: bool = False,
    finish: str | None = None, usage_of: Completion | None = None,
) -> bytes:
    """One server-sent event of a streamed response."""
    if usage_of is not None:
        choices: list[dict[str, Any]] = []
    elif endpoint == "chat":
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choices = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    else:
        choices = [{"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}]
    body: dict[str, Any] = {
        "id": response_id(endpoint, request_id), "object": "chat.completion.chunk" if endpoint == "chat" else "text_completion",
        "created": created, "model": model, "choices": choices,
    }
    if usage_of is not None:
        body["usage"] = usage(usage_of)
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_event(message: str, kind: str, code: str | None = None) -> bytes:
    """An error inside a stream whose status line was already sent (the openai client raises on it)."""
    return b"data: " + json.dumps(error_body(message, kind, code), separators=(",", ":")).encode() + b"\n\n"
