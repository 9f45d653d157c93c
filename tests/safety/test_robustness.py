"""Adversarial inputs: every scanner stays linear-time on long repetitive text (no ReDoS).

Each text is 20,000 characters of one repeated unit chosen to feed a quantifier of some
pattern (digits with separators, '::', '![a](http://x?a=', newlines, keywords...). A linear
scan takes ~10-50 ms; the backtracking bugs this guards against took 10-60 s. The limit is on the CPU time
of this process, so other load on a shared machine does not make the test flaky.
"""

from __future__ import annotations

import time

import pytest

from streams.safety.injection import scan_injection
from streams.safety.pii import scan_pii
from streams.safety.scanner import scan
from streams.safety.toxicity import scan_toxicity

UNITS = [
    "1-", "1 ", "1.", "a.", "a-", "a_", "a:", "1:", "+1 ", "(1)", "a@a.", "a@", "eyJa.", "sk-a", "ghp_", "AKIA", "DE89 ",
    "0 ", "00-", "1x", "1 x", "ab", "A1", "aA1-", "api_key=", "token-1-", "ignore ", "ignore the previous ", "you are ",
    "\n", "\n#", "#", "<|", "<", "[INST]", "Zm9v", "-----BEGIN PRIVATE KEY-----\n", "AAAA\n", "fuuu", "a$", ":", "::",
    "1.2.", "repeat ", "pretend ", "send ", "mode ", "DAN ", "your ", "without ", "now ", "system ", "![a](http://x?a=",
    "decode ", "123-", "1234 ",
]
LIMIT_S = 0.75


@pytest.mark.parametrize("unit", UNITS)
def test_linear_time_on_repetitive_input(unit: str) -> None:
    text = (unit * (20000 // len(unit) + 1))[:20000]
    for fn in (scan_pii, scan_injection, scan_toxicity):
        fn("warm up: load models before timing")
        start = time.process_time()
        fn(text)
        elapsed = time.process_time() - start
        assert elapsed < LIMIT_S, f"{fn.__name__} took {elapsed:.2f}s on {unit!r} * n"


def test_scan_handles_odd_text() -> None:
    for text in ["", " ", "\x00\x01", "😀" * 1000, "\u202e" + "moc.elpmaxe@bob", "a" * 100000]:
        result = scan("r", "d", "prompt", text)
        assert result.redacted_text is None or isinstance(result.redacted_text, str)
