"""Safety scanner benchmark: quality on the labelled set and throughput vs a one-regex baseline.

    python bench/scanners.py [--seconds 1.0]

Prints (1) precision/recall/F1 per category and per PII kind on tests/safety/data/labelled.jsonl,
with injection recall split by case group (the hand-written paraphrases were not used to tune
the patterns), and (2) texts/s and MB/s of each scanner and of the combined ``scan()`` on
two corpora (the labelled texts, and the same texts joined into ~4 KB documents), next to a
baseline measured in the same run: one pass of a plain email regex over the same texts.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.safety.evaluate import Counts, evaluate_injection, evaluate_pii, load_labelled  # noqa: E402
from streams.safety.injection import FLAG_THRESHOLD, scan_injection  # noqa: E402
from streams.safety.pii import scan_pii  # noqa: E402
from streams.safety.scanner import scan  # noqa: E402
from streams.safety.toxicity import scan_toxicity  # noqa: E402

LABELLED = ROOT / "tests" / "safety" / "data" / "labelled.jsonl"
_BASELINE_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def _row(name: str, c: Counts, support: int) -> str:
    return f"| {name:<34} | {c.precision:9.3f} | {c.recall:6.3f} | {c.f1:6.3f} | {c.tp:4d} | {c.fp:4d} | {c.fn:4d} | {support:7d} |"


def quality(cases: list[dict[str, Any]]) -> None:
    head = "| {:<34} | precision | recall |   F1   |  tp  |  fp  |  fn  | support |".format("category / kind")
    print(head)
    print("|" + "-" * 36 + "|-----------|--------|--------|------|------|------|---------|")
    pii = evaluate_pii(cases)
    print(_row("pii (span exact match)", pii.overall, pii.overall.tp + pii.overall.fn))
    for kind, c in sorted(pii.by_kind.items()):
        print(_row(f"  pii:{kind}", c, c.tp + c.fn))
    inj, _errors = evaluate_injection(cases)
    n_inj = sum(1 for c in cases if c["task"] == "injection")
    print(_row(f"prompt_injection (score>={FLAG_THRESHOLD})", inj, n_inj))
    groups: dict[str, Counts] = {}
    for c in cases:
        if c["task"] != "injection":
            continue
        g = groups.setdefault(c["note"], Counts())
        hit = scan_injection(c["text"]).score >= FLAG_THRESHOLD
        if c["label"]:
            g.tp += hit
            g.fn += not hit
        else:
            g.fp += hit
    for note, g in sorted(groups.items()):
        print(_row(f"  inj:{note[:30]}", g, g.tp + g.fn + (0 if g.tp + g.fn else sum(1 for c in cases if c.get('note') == note))))
    print("(negative-only groups: precision column is meaningless; fp = benign texts flagged)")


def _rate(fn: Callable[[str], object], texts: list[str], seconds: float) -> tuple[float, float]:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    loops = 0
    start = time.perf_counter()
    while True:
        for t in texts:
            fn(t)
        loops += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return loops * len(texts) / elapsed, loops * n_bytes / elapsed / 1e6


def throughput(cases: list[dict[str, Any]], seconds: float) -> None:
    short = [c["text"] for c in cases]
    docs: list[str] = []
    buf: list[str] = []
    size = 0
    for t in short * 10:
        buf.append(t)
        size += len(t) + 1
        if size >= 4096:
            docs.append("\n".join(buf))
            buf, size = [], 0
    corpora = {
        f"labelled texts (n={len(short)}, avg {sum(map(len, short)) // len(short)} chars)": short,
        f"~4 KB documents (n={len(docs)})": docs,
    }
    scanners: dict[str, Callable[[str], object]] = {
        "baseline: one email regex": lambda t: _BASELINE_EMAIL.findall(t),
        "scan_pii": scan_pii,
        "scan_injection": scan_injection,
        "scan_toxicity": scan_toxicity,
        "scan() all three + policy": lambda t: scan("r", "d", "prompt", t),
    }
    for corpus, texts in corpora.items():
        print(f"\n{corpus}")
        print(f"| {'scanner':<28} |    texts/s |    MB/s | x baseline time |")
        print("|" + "-" * 30 + "|------------|---------|-----------------|")
        base = None
        for name, fn in scanners.items():
            tps, mbs = _rate(fn, texts, seconds)
            if base is None:
                base = tps
            print(f"| {name:<28} | {tps:10.0f} | {mbs:7.2f} | {base / tps:15.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per throughput measurement")
    args = ap.parse_args()
    cases = load_labelled(LABELLED)
    n_pii = sum(1 for c in cases if c["task"] == "pii")
    print(f"labelled set: {len(cases)} cases ({n_pii} pii, {len(cases) - n_pii} injection)\n")
    quality(cases)
    throughput(cases, args.seconds)


if __name__ == "__main__":
    main()
