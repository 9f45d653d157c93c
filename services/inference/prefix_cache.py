"""Prefix caching for the builtin engine: the KV cache of prompt prefixes, kept in blocks and reused.

A prompt is cut into blocks of ``block_tokens`` tokens; block ``i`` is keyed by a hash chained over blocks
``0..i`` (so a key names the whole prefix up to and including the block). After a prefill the engine stores the
prompt's full blocks (:meth:`PrefixCache.insert`); a later prompt starting with the same tokens (the same system
prompt, a conversation's earlier turns) finds its longest cached chain (:meth:`PrefixCache.match`) and is
prefilled only from there on. The engine counts the cached tokens in its KV token budget and evicts least
recently used blocks when admission needs room (:meth:`PrefixCache.evict`). A chain is touched from its last
block to its first, so a prefix is always more recent than its extensions and is evicted after them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer, keys and values ``[heads, tokens, dim]`` of one sequence."""


@dataclass
class _Block:
    kv: KV


@dataclass
class PrefixMatch:
    """The cached part of a prompt: ``tokens`` prompt tokens and the block keys holding them."""

    tokens: int
    keys: list[bytes]


def _chain(prompt_ids: list[int], block_tokens: int, blocks: int) -> list[bytes]:
    keys: list[bytes] = []
    parent = b""
    for i in range(blocks):
        block = prompt_ids[i * block_tokens:(i + 1) * block_tokens]
        digest = hashlib.blake2b(parent + b"|" + ",".join(map(str, block)).encode(), digest_size=16).digest()
        keys.append(digest)
        parent = digest
    return keys


class PrefixCache:
    """An LRU store of KV blocks keyed by chained block hashes. Used by the engine thread only."""

    def __init__(self, block_tokens: int = 16) -> None:
        self.block_tokens = block_tokens
        self._blocks: OrderedDict[bytes, _Block] = OrderedDict()
        self.hits = 0
        self.lookups = 0
        self.hit_tokens = 0
        self.evicted_blocks = 0

    @property
    def tokens(self) -> int:
        """Tokens held (counted in the engine's KV token budget)."""
        return len(self._blocks) * self.block_tokens

    def match(self, prompt_ids: list[int]) -> PrefixMatch:
        """The longest cached chain of full blocks, leaving at least one prompt token to prefill."""
        self.lookups += 1
        usable = (len(prompt_ids) - 1) // self.block_tokens
        keys: list[bytes] = []
        for key in _chain(prompt_ids, self.block_tokens, usable):
            if key not in self._blocks:
                break
            keys.append(key)
        if keys:
            self.hits += 1
            self.hit_tokens += len(keys) * self.block_tokens
            self._touch(keys)
        return PrefixMatch(tokens=len(keys) * self.block_tokens, keys=keys)

    def gather(self, match: PrefixMatch) -> KV:
        """The matched blocks' KV, concatenated along time (per layer ``[heads, match.tokens, dim]``)."""
        blocks = [self._blocks[k].kv for k in match.keys]
        return [(torch.cat([b[layer][0] for b in blocks], dim=1), torch.cat([b[layer][1] for b in blocks], dim=1))
                for layer in range(len(blocks[0]))]

    def insert(self, prompt_ids: list[int], kv: KV) -> None:
        """Store the full blocks of a prefilled prompt; ``kv`` holds its tokens in order (per layer
        ``[heads, >= len(prompt_ids) rounded down to blocks, dim]``)."""
        blocks = len(prompt_ids) // self.block_tokens
        keys = _chain(prompt_ids, self.block_tokens, blocks)
        b = self.block_tokens
        for i, key in enumerate(keys):
            if key not in self._blocks:
                self._blocks[key] = _Block([(k[:, i * b:(i + 1) * b].clone(), v[:, i * b:(i + 1) * b].clone())
                                            for k, v in kv])
        self._touch(keys)

    def evict(self, tokens: int) -> int:
        """Drop least recently used blocks until at least ``tokens`` tokens are freed (or none is left)."""
        freed = 0
        while freed < tokens and self._blocks:
            self._blocks.popitem(last=False)
            self.evicted_blocks += 1
            freed += self.block_tokens
        return freed

    def clear(self) -> None:
        self._blocks.clear()

    def _touch(self, keys: list[bytes]) -> None:
        for key in reversed(keys):  # the prefix ends up most recent: extensions are evicted before it
            self._blocks.move_to_end(key)
