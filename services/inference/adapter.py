"""Between the wire and the engine: an ``InferenceRequest`` becomes an ``EngineRequest`` (or a clear error
``Completion``), and an ``EngineResult`` becomes the ``Completion`` (and its streamed ``CompletionChunk``\\ s).

Generation defaults of the deployment spec apply to the parameters a request did not set explicitly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from schemas.completions import Completion, CompletionChunk, CompletionError
from schemas.requests import GenerationParams, InferenceRequest
from services.inference.engine_api import EngineRequest, EngineResult, SamplingParams
from services.inference.spec import DeploymentSpec


@dataclass
class Rejected:
    """A request the engine never sees: the error completion to publish instead."""

    completion: Completion


def sampling_for(params: GenerationParams, spec: DeploymentSpec) -> SamplingParams:
    """The request's parameters, with the spec's default for each one left at the schema default.

    The wire codec serializes every field, so a decoded request cannot say which fields its producer set;
    a value equal to the ``GenerationParams`` default is therefore taken as "not chosen" and the deployment's
    default (if any) applies.
    """
    schema_defaults = GenerationParams()
    explicit = {name for name in GenerationParams.model_fields
                if getattr(params, name) != getattr(schema_defaults, name)}
    defaults = spec.generation

    def pick(name: str, current: object) -> object:
        default = getattr(defaults, name)
        return current if name in explicit or default is None else default

    merged = GenerationParams.model_validate({
        "max_tokens": pick("max_tokens", params.max_tokens),
        "temperature": pick("temperature", params.temperature),
        "top_p": pick("top_p", params.top_p),
        "seed": params.seed,
        "stop": pick("stop", params.stop),
        "stream": params.stream,
    })
    if any(s == "" for s in merged.stop):
        raise ValueError("stop strings must not be empty")
    return SamplingParams(
        max_tokens=merged.max_tokens, temperature=merged.temperature, top_p=merged.top_p, seed=merged.seed,
        stop=tuple(merged.stop),
    )


def render_prompt(req: InferenceRequest, tokenizer: Any) -> tuple[str, list[int]]:
    """The prompt text (chat template applied when the tokenizer has one) and its token ids, for the engine whose
    ``tokenizer`` (a Hugging Face tokenizer) this is."""
    if req.messages is None:
        raise ValueError(
            "prompt references (PromptRef) are not rendered by inference replicas; send 'messages'"
        )
    messages = [m.model_dump() for m in req.messages]
    tok = tokenizer
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert isinstance(text, str)
    else:
        text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant: "
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return text, list(ids)


def conversation_text(req: InferenceRequest) -> str:
    """What the messages say, their contents separated by blank lines, without roles or the model's template.

    This is the ``prompt_text`` of completions: safety scanners and drift see the conversation, not a
    model-specific wrapping or role markers (which would read as injected markup in every prompt, while
    the same markup typed inside a message is still caught).
    """
    return "\n\n".join(m.content for m in req.messages or [])


def to_engine_request(
    req: InferenceRequest, spec: DeploymentSpec, tokenizer: Any, *, arrival: float | None = None,
) -> tuple[EngineRequest, str] | Rejected:
    """The engine job and the conversation text (for ``prompt_text``), or the error completion explaining why not."""
    if req.deployment_id is not None and req.deployment_id != spec.deployment_id:
        return Rejected(error_completion(
            req, spec, "unknown_deployment",
            f"request is for deployment {req.deployment_id!r} but reached {spec.deployment_id!r}",
        ))
    if req.deployment_id is None and req.model_alias != spec.model_alias:
        return Rejected(error_completion(
            req, spec, "unknown_alias",
            f"model alias {req.model_alias!r} is not served by deployment {spec.deployment_id!r} "
            f"(alias {spec.model_alias!r})",
        ))
    try:
        sampling = sampling_for(req.params, spec)
    except (ValueError, ValidationError) as exc:
        return Rejected(error_completion(req, spec, "invalid_params", f"invalid generation parameters: {exc}"))
    try:
        _, ids = render_prompt(req, tokenizer)
    except Exception as exc:  # noqa: BLE001 - a template error is the request's fault, not the replica's
        return Rejected(error_completion(req, spec, "invalid_params", f"cannot render the prompt: {exc}"))
    deadline = req.deadline.timestamp() if isinstance(req.deadline, datetime) else None
    job = EngineRequest(
        request_id=req.request_id, prompt_ids=ids, sampling=sampling, priority=req.priority, deadline=deadline,
        arrival=arrival if arrival is not None else time.monotonic(),
    )
    return job, conversation_text(req)


def _base(req: InferenceRequest, spec: DeploymentSpec) -> dict[str, object]:
    """What every completion of ``req`` carries, success or error; routing weight and fallback are copied through."""
    return {
        "request_id": req.request_id,
        "tenant": req.tenant,
        "application": req.application,
        "model_alias": req.model_alias,
        "deployment_id": spec.deployment_id,
        "model_name": spec.reported_model_name,
        "model_version": spec.model_version,
        "prompt_id": req.prompt.prompt_id if req.prompt else None,
        "prompt_version": req.prompt.version if req.prompt else None,
        "routing_weight": req.routing_weight,
        "fallback": req.fallback,
    }


def error_completion(req: InferenceRequest, spec: DeploymentSpec, kind: str, message: str) -> Completion:
    return Completion.model_validate({
        **_base(req, spec), "finish_reason": "error",
        "error": CompletionError.model_validate({"kind": kind, "message": message[:10_000]}),
    })


def completion_from_result(
    req: InferenceRequest, spec: DeploymentSpec, result: EngineResult, prompt_text: str,
) -> Completion:
    error = None
    if result.error_kind is not None:
        error = CompletionError.model_validate({"kind": result.error_kind, "message": result.error_message or ""})
    return Completion.model_validate({
        **_base(req, spec),
        "prompt_text": prompt_text,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "queue_ms": result.queue_ms,
        "ttft_ms": result.ttft_ms,
        "total_ms": result.total_ms,
        "cached_tokens": result.cached_tokens,
        "error": error,
    })


def chunk(req: InferenceRequest, spec: DeploymentSpec, index: int, text: str) -> CompletionChunk:
    return CompletionChunk(request_id=req.request_id, deployment_id=spec.deployment_id, index=index, text=text)
