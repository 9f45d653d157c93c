"""The exact-match response cache: same tenant, model alias, prompt and parameters -> the same answer.

Only deterministic requests are cached (temperature 0), unless the request opts in; a request can also ask
for no cache. Entries expire after ``ttl_s``; the cache holds at most ``max_entries`` entries and
``max_bytes`` of text, evicting the least recently used. The key is a hash of the tenant, alias, the
conversation (or the prompt reference with its resolved version and variables) and every generation
parameter but ``stream`` (a streamed and a plain request share answers).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass

from schemas.completions import Completion
from schemas.requests import InferenceRequest
from services.gateway.config import CacheConfig


@dataclass(frozen=True)
class CachedAnswer:
    completion: Completion
    stored_at: float
    size: int


def cache_key(request: InferenceRequest, prompt_version: str | None = None) -> str:
    """The key of a request; a PromptRef is keyed by its resolved ``prompt_version`` (labels move)."""
    content: dict[str, object] = {
        "tenant": request.tenant, "alias": request.model_alias,
        "params": request.params.model_dump(mode="json", exclude={"stream"}),
    }
    if request.messages is not None:
        content["messages"] = [m.model_dump() for m in request.messages]
    if request.prompt is not None:
        content["prompt"] = [request.prompt.prompt_id, prompt_version or request.prompt.version, request.prompt.variables]
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ResponseCache:
    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.hits = 0
        self.misses = 0
        self.bytes = 0
        self._entries: OrderedDict[str, CachedAnswer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Completion | None:
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry.stored_at > self.config.ttl_s:
            self._drop(key)
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.completion

    def put(self, key: str, completion: Completion) -> None:
        size = len(completion.text.encode()) + len(completion.prompt_text.encode()) + 512
        if size > self.config.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = CachedAnswer(completion, time.monotonic(), size)
        self.bytes += size
        while len(self._entries) > self.config.max_entries or self.bytes > self.config.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size
