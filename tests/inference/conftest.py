"""Fixtures for the inference tests: a tiny random Llama-style model saved as an ordinary HF directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from services.inference.model_loader import SMOLLM2_GGUF, LoadedModel, load_model, smollm2_dir


def build_tiny_model(path: Path, seed: int = 1234) -> Path:
    """A 2-layer, 64-wide Llama with the SmolLM2 tokenizer (and chat template), random weights, fixed seed."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, initializer_range=0.2, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]  # its __init__ is unannotated in transformers
    model.generation_config.eos_token_id = 2
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir: Path) -> LoadedModel:
    return load_model(str(tiny_model_dir), device="cpu")
