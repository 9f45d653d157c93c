"""The OpenAI-compatible HTTP gateway: each call becomes an ``InferenceRequest`` on ``llm.requests`` and its answer
comes back on this instance's reply topic (through :class:`services.client.Client`).

Per request: authenticate the API key (its tenant is the request's tenant; a key sees only its tenant's data),
parse the body (422 on bad parameters), check the model alias (404) and the key's allowed models (403),
admit it against the key's rate limits and budget (429 with Retry-After), answer from the response cache
when it may (a hit is still published as a ``Completion`` with ``cached`` set and no tokens, so it costs 0),
else publish and wait; streamed answers are relayed as server-sent events as chunks arrive. Errors use
OpenAI's error JSON. Headers in: ``x-request-id`` (idempotent retries), ``x-llmops-priority`` (0-9),
``x-llmops-deadline-ms``, ``x-llmops-application``, ``x-llmops-session-id``, ``x-llmops-tenant`` (must be
the key's), ``x-llmops-cache`` (``no-cache``, or ``use`` to cache a sampled request; ``Cache-Control:
no-cache`` works too); the body's ``user`` is the sticky user id. Headers out: ``x-request-id``,
``x-llmops-deployment``, ``x-llmops-cache`` (hit/miss/bypass), ``x-llmops-prompt-version``,
``x-llmops-fallback-from``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from schemas.completions import Completion, CompletionChunk
from schemas.envelope import utc_now
from schemas.requests import InferenceRequest
from services.client.client import Client, ClientConfig, DeadlineExceeded, RequestFailed, Stream
from services.core import metrics
from services.core.clickhouse.client import connect
from services.core.settings import Settings
from services.gateway.cache import ResponseCache, cache_key
from services.gateway.config import GatewayConfig
from services.gateway.keys import ApiKey, KeyStore
from services.gateway.limits import Limiter
from services.gateway.openai_format import (
    DONE,
    BadRequest,
    Endpoint,
    ParsedRequest,
    error_body,
    error_event,
    finish_reason,
    full_response,
    parse_body,
    stream_chunk,
)
from services.gateway.pricing import Pricer, cost_headers
from services.gateway.recorder import RequestRecorder
from services.gateway.safety import Blocked, Scanner, StreamGuard, check_answer
from services.prompts.mirror import PromptMirror
from services.prompts.registry import UnknownPrompt
from services.prompts.render import RenderError
from services.prompts.store import PromptFollower, wait_ready

log = logging.getLogger(__name__)
CACHE_DEPLOYMENT = "gateway-cache"
"""The deployment_id of completions answered from the cache (no deployment ran)."""

# error completion kind -> (HTTP status, OpenAI error type)
_ERROR_STATUS = {
    "deadline_exceeded": (504, "timeout"),
    "prompt_too_long": (400, "invalid_request_error"),
    "invalid_params": (422, "invalid_request_error"),
    "unknown_deployment": (404, "invalid_request_error"),
    "unknown_alias": (404, "invalid_request_error"),
    "overloaded": (503, "server_error"),
    "internal": (502, "server_error"),
}


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, kind: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = headers or {}

    def response(self, request_id: str | None = None) -> JSONResponse:
        headers = dict(self.headers)
        if request_id:
            headers["x-request-id"] = request_id
        return JSONResponse(error_body(self.message, self.kind, self.code, self.param), self.status, headers=headers)


def failed(completion: Completion) -> ApiError:
    kind = completion.error.kind if completion.error else "internal"
    status, error_type = _ERROR_STATUS.get(kind, (502, "server_error"))
    message = completion.error.message if completion.error else f"finished with {completion.finish_reason}"
    return ApiError(status, message, error_type, code=kind)


@dataclass
class Call:
    """One admitted API call."""

    endpoint: Endpoint
    key: ApiKey
    parsed: ParsedRequest
    request: InferenceRequest
    created: int
    cache_key: str | None
    cache_state: str
    prompt_version: str | None


class Gateway:
    """The gateway service: background followers and the request handlers. ``app`` is the ASGI application."""

    def __init__(
        self, settings: Settings, config: GatewayConfig, scanner: Scanner | None = None, pricer: Pricer | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.scanner = scanner
        self.pricer = pricer
        self.client = Client(settings, tenant=config.default_tenant, config=ClientConfig(
            instance_id=config.instance_id, source=f"llmops.gateway.{config.instance_id}",
            requests_topic=config.requests_topic, completions_topic=config.completions_topic,
            attempt_timeout_s=config.attempt_timeout_s,
            fallbacks={alias: e.fallback for alias, e in config.models.items() if e.fallback},
        ))
        self.keys = KeyStore(settings, reload_s=config.keys_reload_s)
        self.limiter = Limiter(settings, reload_s=config.usage_reload_s)
        self.cache = ResponseCache(config.cache)
        self.recorder = RequestRecorder(settings, config.instance_id)
        self.mirror = PromptMirror(settings) if config.mirror_prompts else None
        self.prompts = PromptFollower(settings, topic=config.prompts_topic,
                                      on_accepted=self.mirror.add if self.mirror else None)
        self.in_flight = 0
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.text_completions, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.get_model, methods=["GET"]),
            Route("/v1/llmops/requests/{request_id}", self.get_request, methods=["GET"]),
            Route("/v1/llmops/usage", self.get_usage, methods=["GET"]),
            Route("/healthz", self.health, methods=["GET"]),
        ], lifespan=self._lifespan, middleware=[Middleware(metrics.HttpServerMetrics)])

    # ---- lifecycle --------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.close()

    async def start(self, timeout_s: float = 60.0) -> None:
        metrics.start_metrics_server(self.settings)
        await self.client.start()
        runners = [self.keys.run(), self.limiter.run(), self.recorder.run(), self.prompts.run()]
        if self.mirror is not None:
            runners.append(self.mirror.run())
        self._tasks = [asyncio.create_task(r) for r in runners]
        await wait_ready(self.prompts, self._tasks[3], timeout_s)
        if self.config.require_auth:
            await asyncio.wait_for(self.keys.loaded.wait(), timeout_s)
        self.ready.set()
        log.info("gateway %s ready: reply topic %s, models %s", self.config.instance_id, self.client.replies.topic,
                 ", ".join(self.config.models) or "none")

    async def close(self) -> None:
        if self._side_tasks:
            await asyncio.wait(set(self._side_tasks), timeout=5)
        self.prompts.stop()
        self.recorder.stop()
        if self.mirror is not None:
            self.mirror.stop()
        for task in self._tasks[:2]:  # the reload loops: nothing to finish
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # ---- admission ------------------------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> ApiKey:
        if not self.config.require_auth:
            return ApiKey(key_id="anonymous", tenant=self.config.default_tenant, key_hash="", created_at=utc_now())
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>' (create one with `llmops keys create`)",
                           "invalid_request_error", "invalid_api_key")
        key = self.keys.authenticate(presented)
        if key is None:
            raise ApiError(401, "invalid or revoked API key", "invalid_request_error", "invalid_api_key")
        tenant = request.headers.get("x-llmops-tenant")
        if tenant is not None and tenant != key.tenant:
            raise ApiError(403, f"this API key belongs to another tenant than {tenant!r}", "permission_error",
                           "tenant_mismatch")
        return key

    def _check_model(self, key: ApiKey, model: str) -> None:
        if model not in self.config.models:
            known = ", ".join(sorted(self.config.models)) or "none"
            raise ApiError(404, f"The model '{model}' does not exist (models: {known})", "invalid_request_error",
                           "model_not_found", "model")
        if key.models and model not in key.models:
            raise ApiError(403, f"this API key may not use the model '{model}'", "permission_error", "model_not_allowed",
                           "model")

    def _int_header(self, request: Request, name: str, low: int, high: int) -> int | None:
        raw = request.headers.get(name)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(422, f"header {name} must be an integer, got {raw[:40]!r}", "invalid_request_error",
                           "invalid_header", name) from None
        if not low <= value <= high:
            raise ApiError(422, f"header {name} must be between {low} and {high}", "invalid_request_error",
                           "invalid_header", name)
        return value

    def _admit(self, request: Request, endpoint: Endpoint, body: bytes) -> Call:
        key = self._authenticate(request)
        try:
            parsed = parse_body(body, endpoint)
        except BadRequest as exc:
            raise ApiError(422, str(exc), "invalid_request_error", "invalid_value", exc.param) from None
        self._check_model(key, parsed.model)
        priority = self._int_header(request, "x-llmops-priority", 0, 9) or 0
        deadline_ms = self._int_header(request, "x-llmops-deadline-ms", 1, int(self.config.max_deadline_s * 1000))
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        if len(request_id) > 200:
            raise ApiError(422, "x-request-id is longer than 200 characters", "invalid_request_error", "invalid_header")
        if self.client.replies.waiting(request_id):
            raise ApiError(409, f"a request with x-request-id {request_id!r} is in flight on this gateway; retry it after "
                           "it finished (the same id is answered idempotently downstream)", "invalid_request_error",
                           "request_in_flight")
        refusal = self.limiter.admit(key)
        if refusal is not None:
            raise ApiError(429, refusal.message, "rate_limit_exceeded" if refusal.code != "insufficient_quota"
                           else "insufficient_quota", refusal.code, headers={"retry-after": str(refusal.retry_after_s)})
        deadline_s = deadline_ms / 1000 if deadline_ms else self.config.default_deadline_s
        inference = InferenceRequest(
            request_id=request_id, tenant=key.tenant,
            application=request.headers.get("x-llmops-application") or key.name or "default",
            model_alias=parsed.model, messages=parsed.messages, prompt=parsed.prompt, params=parsed.params,
            priority=priority, deadline=utc_now() + timedelta(seconds=deadline_s), user_id=parsed.user,
            session_id=request.headers.get("x-llmops-session-id"), reply_to=self.client.replies.topic,
        )
        inference = self._render_prompt(inference)
        self._check_prompt_safety(inference)
        prompt_version = inference.prompt.version if inference.prompt else None
        cache_opt = (request.headers.get("x-llmops-cache") or "").lower()
        no_cache = cache_opt == "no-cache" or "no-cache" in (request.headers.get("cache-control") or "").lower()
        cacheable = self.config.cache.enabled and not no_cache and (
            cache_opt == "use" or (parsed.temperature_given and parsed.params.temperature == 0.0))
        return Call(endpoint, key, parsed, inference, int(time.time()),
                    cache_key(inference, prompt_version) if cacheable else None,
                    "miss" if cacheable else "bypass", prompt_version)

    def _render_prompt(self, request: InferenceRequest) -> InferenceRequest:
        """A PromptRef rendered with the gateway's registry cache (404 unknown prompt, 422 bad variables).

        The rendered request keeps the reference with its version number; during a prompt-version rollout the
        router re-renders it with the version its weights pick (the variables travel with it).
        """
        if request.prompt is None:
            return request
        try:
            return self.prompts.registry.render_request(request)
        except UnknownPrompt as exc:
            raise ApiError(404, str(exc), "invalid_request_error", "prompt_not_found", "prompt") from None
        except RenderError as exc:
            raise ApiError(422, str(exc), "invalid_request_error", "invalid_prompt_variables", "prompt") from None

    def _check_prompt_safety(self, request: InferenceRequest) -> None:
        """400 when the tenant's policy blocks what the prompt contains (e.g. an injection)."""
        if self.scanner is None or request.messages is None:
            return
        text = "\n\n".join(m.content for m in request.messages)
        verdict = self.scanner(text, "prompt", request.tenant)
        if verdict.blocked:
            raise ApiError(400, "the prompt was blocked by this tenant's safety policy: " + "; ".join(verdict.reasons),
                           "invalid_request_error", "prompt_blocked", "messages")

    def _shown(self, call: Call, text: str) -> tuple[str, bool]:
        """(the answer as the tenant's policy lets it be shown, whether it was blocked)."""
        if self.scanner is None:
            return text, False
        try:
            return check_answer(self.scanner, call.request.tenant, text), False
        except Blocked:
            return "", True

    # ---- answering --------------------------------------------------------------------------------------------

    def _headers(self, call: Call, completion: Completion | None = None, deployment: str | None = None) -> dict[str, str]:
        metrics.GATEWAY_CACHE_LOOKUPS.labels(result=call.cache_state).inc()
        headers = {"x-request-id": call.request.request_id, "x-llmops-cache": call.cache_state}
        deployment = deployment or (completion.deployment_id if completion else None)
        if deployment:
            headers["x-llmops-deployment"] = deployment
        version = (completion.prompt_version if completion else None) or call.prompt_version
        if version:
            headers["x-llmops-prompt-version"] = version
        if completion is not None and completion.fallback is not None:
            headers["x-llmops-fallback-from"] = completion.fallback.from_deployment
        return headers

    def _finished(self, call: Call, completion: Completion) -> None:
        self.limiter.add_tokens(call.key.key_id, completion.prompt_tokens + completion.completion_tokens)
        self.recorder.record(call.key.key_id, call.key.tenant, call.request.request_id, call.request.model_alias, 200)
        fits_version = call.prompt_version is None or completion.prompt_version == call.prompt_version
        if call.cache_key is not None and completion.error is None and fits_version:
            self.cache.put(call.cache_key, completion)

    def _cache_hit(self, call: Call) -> Completion | None:
        if call.cache_key is None:
            return None
        original = self.cache.get(call.cache_key)
        if original is None:
            return None
        call.cache_state = "hit"
        hit = original.model_copy(update={
            "request_id": call.request.request_id, "tenant": call.request.tenant, "application": call.request.application,
            "deployment_id": CACHE_DEPLOYMENT, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0,
            "queue_ms": 0.0, "ttft_ms": 0.0, "total_ms": 0.0, "cached": True, "fallback": None, "routing_weight": None,
        })
        self.recorder.record(call.key.key_id, call.key.tenant, call.request.request_id, call.request.model_alias, 200,
                             cached=True, saved_prompt_tokens=original.prompt_tokens,
                             saved_completion_tokens=original.completion_tokens)
        self._spawn(self.client.publish(self.config.completions_topic, hit, key=hit.request_id, tenant=hit.tenant))
        return original.model_copy(update={"request_id": call.request.request_id, "cached": True})

    async def _handle(self, request: Request, endpoint: Endpoint) -> Response:
        request_id = request.headers.get("x-request-id")
        self.in_flight += 1
        try:
            call = self._admit(request, endpoint, await request.body())
            request_id = call.request.request_id
            hit = self._cache_hit(call)
            if hit is not None:
                if call.parsed.stream:
                    return self._stream_cached(call, hit)
                return self._full(call, hit)
            if call.parsed.stream:
                return await self._stream(call)
            try:
                completion = await self.client.complete_request(call.request)
            except RequestFailed as exc:
                self.recorder.record(call.key.key_id, call.key.tenant, request_id, call.request.model_alias, 500)
                raise failed(exc.completion) from None
            except DeadlineExceeded as exc:
                raise ApiError(504, str(exc), "timeout", "deadline_exceeded") from None
            self._finished(call, completion)
            return self._full(call, completion)
        except ApiError as exc:
            return exc.response(request_id)
        finally:
            self.in_flight -= 1

    def _full(self, call: Call, completion: Completion) -> JSONResponse:
        text, blocked = self._shown(call, completion.text)
        body = full_response(call.endpoint, completion, call.parsed.model, call.created, text,
                             finish="content_filter" if blocked else None)
        return JSONResponse(body, headers={**self._headers(call, completion), **cost_headers(self.pricer, completion)})

    def _stream_cached(self, call: Call, hit: Completion) -> StreamingResponse:
        endpoint, rid, model, created = call.endpoint, call.request.request_id, call.parsed.model, call.created
        text, blocked = self._shown(call, hit.text)

        async def events() -> AsyncIterator[bytes]:
            yield stream_chunk(endpoint, rid, model, created, text=text, role=True)
            yield stream_chunk(endpoint, rid, model, created, finish="content_filter" if blocked else finish_reason(hit))
            if call.parsed.include_usage:
                yield stream_chunk(endpoint, rid, model, created, usage_of=hit)
            yield DONE

        return StreamingResponse(events(), media_type="text/event-stream", headers=self._headers(call, hit))

    async def _stream(self, call: Call) -> Response:
        """Wait for the first chunk (errors before it get a real status code), then relay the rest as events."""
        stream: Stream = self.client.stream_request(call.request)
        await stream.__aenter__()
        pieces = stream.__aiter__()
        first: CompletionChunk | None = None
        try:
            first = await pieces.__anext__()
        except StopAsyncIteration:
            pass  # finished without any text
        except RequestFailed as exc:
            await stream.__aexit__(None, None, None)
            raise failed(exc.completion) from None
        except DeadlineExceeded as exc:
            await stream.__aexit__(None, None, None)
            raise ApiError(504, str(exc), "timeout", "deadline_exceeded") from None
        endpoint, rid, model, created = call.endpoint, call.request.request_id, call.parsed.model, call.created

        guard = StreamGuard(self.scanner, call.request.tenant) if self.scanner is not None else None

        def shown(text: str) -> str:
            return guard.feed(text) if guard is not None else text

        async def events() -> AsyncIterator[bytes]:
            self.in_flight += 1
            try:
                try:
                    yield stream_chunk(endpoint, rid, model, created, text=shown(first.text) if first else "", role=True)
                    async for piece in pieces:
                        text = shown(piece.text)
                        if text:
                            yield stream_chunk(endpoint, rid, model, created, text=text)
                    completion = stream.completion
                    assert completion is not None
                    if guard is not None:
                        rest = guard.finish(completion.text)
                        if rest:
                            yield stream_chunk(endpoint, rid, model, created, text=rest)
                except RequestFailed as exc:
                    error = failed(exc.completion)
                    yield error_event(error.message, error.kind, error.code)
                    yield DONE
                    return
                except DeadlineExceeded as exc:
                    yield error_event(str(exc), "timeout", "deadline_exceeded")
                    yield DONE
                    return
                except Blocked:
                    yield stream_chunk(endpoint, rid, model, created, finish="content_filter")
                    yield DONE
                    return
                self._finished(call, completion)
                yield stream_chunk(endpoint, rid, model, created, finish=finish_reason(completion))
                if call.parsed.include_usage:
                    yield stream_chunk(endpoint, rid, model, created, usage_of=completion)
                yield DONE
            finally:
                self.in_flight -= 1
                await stream.__aexit__(None, None, None)

        deployment = first.deployment_id if first else None
        return StreamingResponse(events(), media_type="text/event-stream", headers=self._headers(call, deployment=deployment))

    # ---- routes -----------------------------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        return await self._handle(request, "chat")

    async def text_completions(self, request: Request) -> Response:
        return await self._handle(request, "text")

    def _model_entry(self, alias: str) -> dict[str, Any]:
        return {"id": alias, "object": "model", "created": 0, "owned_by": "llmops"}

    async def list_models(self, request: Request) -> Response:
        try:
            key = self._authenticate(request)
        except ApiError as exc:
            return exc.response()
        aliases = [a for a in sorted(self.config.models) if not key.models or a in key.models]
        return JSONResponse({"object": "list", "data": [self._model_entry(a) for a in aliases]})

    async def get_model(self, request: Request) -> Response:
        try:
            key = self._authenticate(request)
            self._check_model(key, request.path_params["model"])
        except ApiError as exc:
            return exc.response()
        return JSONResponse(self._model_entry(request.path_params["model"]))

    async def get_request(self, request: Request) -> Response:
        """A stored completion of the key's tenant (404 for any other tenant's: its existence is not revealed)."""
        try:
            key = self._authenticate(request)
        except ApiError as exc:
            return exc.response()
        request_id = request.path_params["request_id"]
        sql = ("SELECT request_id, model_alias, deployment_id, prompt_id, prompt_version, text, finish_reason, "
               "prompt_tokens, completion_tokens, total_ms, error_kind, occurred_at FROM raw_completions FINAL "
               "WHERE tenant_id = %(t)s AND request_id = %(r)s LIMIT 1")
        result = await asyncio.to_thread(
            lambda: connect(self.settings).query(sql, parameters={"t": key.tenant, "r": request_id}))
        if not result.result_rows:
            return ApiError(404, f"no request {request_id!r} for this API key's tenant", "invalid_request_error",
                            "request_not_found").response()
        row = dict(zip(result.column_names, result.result_rows[0], strict=True))
        row["occurred_at"] = row["occurred_at"].isoformat()
        return JSONResponse(row)

    async def get_usage(self, request: Request) -> Response:
        try:
            key = self._authenticate(request)
        except ApiError as exc:
            return exc.response()
        usage = self.limiter.usage.get(key.key_id)
        return JSONResponse({
            "key_id": key.key_id, "tenant": key.tenant,
            "tokens_last_minute": max(usage.tokens_minute if usage else 0, self.limiter.local_tokens(key.key_id)),
            "cost_today": str(usage.cost_today) if usage else "0",
            "limits": {"requests_per_minute": key.requests_per_minute, "tokens_per_minute": key.tokens_per_minute,
                       "daily_budget": str(key.daily_budget) if key.daily_budget is not None else None},
        })

    async def health(self, request: Request) -> Response:
        ready = self.ready.is_set()
        return JSONResponse({"status": "ok" if ready else "starting", "instance": self.config.instance_id,
                             "in_flight": self.in_flight, "cache_entries": len(self.cache)}, 200 if ready else 503)

