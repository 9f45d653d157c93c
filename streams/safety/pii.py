"""PII and secret detection: precompiled regexes plus validators, returning spans (never values).

``scan_pii(text)`` finds candidates with one compiled regex per kind, keeps only the ones
that pass a validator (Luhn for cards, ISO 13616 mod-97 for IBANs, SSA ranges for US SSNs,
the HMRC prefix rules for UK National Insurance numbers, the check letter for Spanish DNI/NIE,
octet ranges for IPv4, ``ipaddress`` for IPv6, a JSON header for JWTs, Shannon entropy for
generic ``api_key=...`` assignments), then resolves overlaps: the most specific kind wins
(a validated secret over a card over an email over a phone number), ties go to the longest
span, then the earliest.

Offsets are Python ``str`` indices (code points), end exclusive, as in ``SafetySpan``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from schemas.safety import SafetySpan

__all__ = [
    "PII_KINDS",
    "SECRET_KINDS",
    "card_valid",
    "es_dni_valid",
    "iban_valid",
    "ipv4_valid",
    "ipv6_valid",
    "jwt_valid",
    "luhn_valid",
    "scan_pii",
    "shannon_entropy",
    "uk_nino_valid",
    "us_ssn_valid",
]

# ---------------------------------------------------------------------------------------------
# validators (pure, each usable on its own)
# ---------------------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (only 0-9) passes the Luhn mod-10 check."""
    if not digits or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# issuer prefixes -> allowed lengths (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro)
def _card_issuer_ok(digits: str) -> bool:
    n = len(digits)
    p2 = int(digits[:2])
    p4 = int(digits[:4])
    p6 = int(digits[:6])
    if digits[0] == "4":
        return n in (16, 19)  # 13-digit Visa is no longer issued and collides with EAN-13 barcodes
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if p4 == 6011 or p2 == 65 or 644 <= int(digits[:3]) <= 649 or 622126 <= p6 <= 622925:
        return 16 <= n <= 19
    if 3500 <= p4 <= 3599:  # JCB (issued 3528-3589; the rest of 35xx is unassigned but card-shaped)
        return 16 <= n <= 19
    if p4 in (1800, 2131):  # legacy 15-digit JCB
        return n == 15
    if p2 in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:
        return 14 <= n <= 19
    if p2 == 62:
        return 16 <= n <= 19
    if p2 in (50, 56, 57, 58, 63, 67):  # Maestro (12-15 digit ones are rare and look like EAN/order numbers)
        return 16 <= n <= 19
    return False


def card_valid(digits: str) -> bool:
    """A payment card number: 12-19 digits, a known issuer prefix/length, and the Luhn check."""
    return 12 <= len(digits) <= 19 and digits.isdigit() and _card_issuer_ok(digits) and luhn_valid(digits)


# ISO 13616 lengths for the countries we accept (SEPA and a few others).
_IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18,
    "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}


def iban_valid(iban: str) -> bool:
    """An IBAN (spaces allowed): known country, its exact length, and ``int(rearranged) % 97 == 1``."""
    s = iban.replace(" ", "").upper()
    if len(s) < 15 or not s.isalnum() or not s.isascii():
        return False
    if _IBAN_LENGTHS.get(s[:2]) != len(s) or not s[2:4].isdigit():
        return False
    rearranged = s[4:] + s[:4]
    # letters -> 10..35, computed piecewise to keep integers small
    rem = 0
    for ch in rearranged:
        rem = (rem * 10 + (ord(ch) - 48)) % 97 if ch.isdigit() else (rem * 100 + (ord(ch) - 55)) % 97
    return rem == 1


def us_ssn_valid(digits: str) -> bool:
    """US SSN (9 digits): area not 000, 666 or 900-999; group not 00; serial not 0000.

    Well-known numbers (078-05-1120 from the wallet insert, 123-45-6789) are *not* excluded: they were
    issued to people, and a scanner cannot tell an example from a person's number, so they are redacted.
    """
    if len(digits) != 9 or not digits.isdigit():
        return False
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return not (area == 0 or area == 666 or area >= 900 or group == 0 or serial == 0)


_NINO_BAD_PREFIX: Final[frozenset[str]] = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
_NINO_FIRST: Final[str] = "ABCEGHJKLMNOPRSTWXYZ"  # not D, F, I, Q, U, V
_NINO_SECOND: Final[str] = "ABCEGHJKLMNPRSTWXYZ"  # also not O


def uk_nino_valid(nino: str) -> bool:
    """UK National Insurance number (spaces allowed): HMRC prefix rules, 6 digits, suffix A-D."""
    s = nino.replace(" ", "").upper()
    if len(s) != 9:
        return False
    return (
        s[0] in _NINO_FIRST
        and s[1] in _NINO_SECOND
        and s[:2] not in _NINO_BAD_PREFIX
        and s[2:8].isdigit()
        and s[8] in "ABCD"
    )


_DNI_LETTERS: Final[str] = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_dni_valid(value: str) -> bool:
    """Spanish DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter): the check letter is n mod 23."""
    s = value.replace("-", "").upper()
    if len(s) != 9:
        return False
    head, letter = s[:8], s[8]
    if head[0] in "XYZ":
        head = str("XYZ".index(head[0])) + head[1:]
    if not head.isdigit():
        return False
    return _DNI_LETTERS[int(head) % 23] == letter


def ipv4_valid(value: str) -> bool:
    """Dotted quad with each octet 0-255 and no leading zeros (``010`` is ambiguous, so rejected)."""
    parts = value.split(".")
    if len(parts) != 4:
        return False
    return all(not (not p.isdigit() or len(p) > 3 or (len(p) > 1 and p[0] == "0") or int(p) > 255) for p in parts)


def ipv6_valid(value: str) -> bool:
    """A real IPv6 address (``ipaddress`` parses it) that is not a bare ``::`` and has some hex digits."""
    if value.count(":") < 2 or value == "::":
        return False
    try:
        ipaddress.IPv6Address(value.split("%", 1)[0])
    except ValueError:
        return False
    address, zone, _ = value.partition("%")
    groups = [g for g in address.split(":") if g]
    if address.startswith("::") or address.endswith("::") or zone:
        return len(groups) >= 1
    # 'a::b' or 'de::ad' in code are more often identifiers than addresses: need 3 groups or a full one
    return len(groups) >= 3 or any(len(g) == 4 for g in groups)


def shannon_entropy(s: str) -> float:
    """Bits per character of ``s``."""
    if not s:
        return 0.0
    counts: dict[str, int] = {}
    for ch in s:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _b64url_json(segment: str) -> object | None:
    pad = "=" * (-len(segment) % 4)
    try:
        raw = base64.urlsafe_b64decode(segment + pad)
        decoded: object = json.loads(raw)
        return decoded
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def jwt_valid(token: str) -> bool:
    """Three base64url segments whose header is a JSON object with ``alg`` (or ``typ``)."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    header = _b64url_json(parts[0])
    return isinstance(header, dict) and ("alg" in header or "typ" in header)


# ---------------------------------------------------------------------------------------------
# detectors
# ---------------------------------------------------------------------------------------------

_FILE_EXT_TLDS: Final[frozenset[str]] = frozenset(
    {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "css", "js", "json", "txt", "yaml", "yml",
     "lock", "tsx", "jsx", "html", "htm", "pdf", "zip", "gz", "tar", "exe", "dll", "log"}
)
_PLACEHOLDER_SECRETS: Final[tuple[str, ...]] = ("xxxx", "your", "example", "placeholder", "changeme", "redacted", "<", "*")


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def _email_ok(m: re.Match[str]) -> bool:
    value = m.group(0)
    local, _, domain = value.rpartition("@")
    if local.startswith(".") or local.endswith(".") or ".." in local or ".." in domain:
        return False
    tld = domain.rsplit(".", 1)[-1].lower()
    return tld not in _FILE_EXT_TLDS


_DIGIT_RUN: Final[re.Pattern[str]] = re.compile(r"\d+", re.ASCII)
_PHONE_EXT: Final[re.Pattern[str]] = re.compile(r"[ ]?(?:x|ext\.?|extension)[ ]?\d{1,6}$", re.ASCII)


def _phone_ok(m: re.Match[str]) -> bool:
    value = _PHONE_EXT.sub("", m.group(0))
    digits = _digits(value)
    if value.startswith("+"):
        return 8 <= len(digits) <= 15
    seps = {ch for ch in value if not ch.isdigit()} - {"(", ")"}
    if len(seps) > 1 and not (seps == {" ", "-"} and "(" in value):
        return False
    groups = _DIGIT_RUN.findall(value)
    if any(len(g) == 1 for g in groups[1:]):
        return False  # a lone trailing/inner digit: ISBN-10 (0-19-651485-1), part numbers, not phone grouping
    if digits.startswith("00"):
        # international dialling prefix (001-339-763-4101, 0044 20 7946 0958)
        return not digits.startswith("000") and 10 <= len(digits) <= 15 and bool(seps)
    if digits[0] == "0":
        # national format with a trunk 0 (UK 020 7946 0958, FR 01 23 45 67 89, DE (03449) 78690)
        return len(digits) in (10, 11) and "." not in seps
    # NANP: NXX-NXX-XXXX, optionally with a leading 1, grouped 3-3-4 (a bare 10-digit run is not enough)
    d = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
    if len(d) != 10 or d[0] in "01" or d[3] in "01":
        return False
    return [len(g) for g in groups][-3:] == [3, 3, 4]


def _card_ok(m: re.Match[str]) -> bool:
    value = m.group(0)
    seps = {ch for ch in value if not ch.isdigit()}
    if len(seps) > 1:
        return False
    return card_valid(_digits(value))


def _ssn_ok(m: re.Match[str]) -> bool:
    value = m.group(0)
    if value[3] != value[6]:
        return False
    return us_ssn_valid(_digits(value))


# A dotted quad right after a version word (optionally after earlier versions of a list), a product/
# ("Chrome/1.2.3.4") or a pin operator ("==1.2.3.4", ">="); or right before a version word. Not after "@":
# "root@10.0.0.1" is an address.
_VERSION_BEFORE: Final[re.Pattern[str]] = re.compile(
    r"(?:(?:(?<![a-z])(?:versions?|releases?|released|builds?|ver|rv|firmware|patch(?:ed)?|(?:updated?|upgraded?|bump(?:ed)?)"
    r"\s+to)(?![a-z])\.?|\bv\.?)[\s:=\"'(_]*(?:v?\d+(?:\.\d+)+[\s,]*(?:and|or|to|&|->)?\s*v?)*"
    r"|[a-z]/|(?:[=<>~!]=|[<>])\s*)$",
    re.IGNORECASE,
)
_VERSION_AFTER: Final[re.Pattern[str]] = re.compile(r"\s*(?:releases?|versions?|builds?|beta|alpha|rc\d*)\b", re.IGNORECASE)


def _ipv4_ok(m: re.Match[str]) -> bool:
    if not ipv4_valid(m.group(0)):
        return False
    # "Version: 1.2.3.4", "versions 1.2.3.4 and 2.0.0.1", "foo==1.2.3.4", "rv:1.9.5.20",
    # "Chrome/1.2.3.4", "the 1.2.3.4 release": versions, not addresses
    before = m.string[max(0, m.start() - 60): m.start()]
    return not (_VERSION_BEFORE.search(before) or _VERSION_AFTER.match(m.string, m.end()))


def _ipv6_ok(m: re.Match[str]) -> bool:
    value = m.group(0)
    if value.startswith("::") and m.start() >= 2:
        before = m.string[m.start() - 2: m.start()]
        if before[1] == "[" and (before[0].isalnum() or before[0] in "_)]"):
            return False  # a slice, "a[::2]", not an address ("http://[::1]:80" keeps its address)
    return ipv6_valid(value)


def _generic_secret_ok(m: re.Match[str]) -> bool:
    value = m.group(1) or m.group(2) or m.group(3) or ""
    low = value.lower()
    if any(p in low for p in _PLACEHOLDER_SECRETS):
        return False
    if not any(c.isdigit() for c in value) or not any(c.isalpha() for c in value):
        return False
    return shannon_entropy(value) >= 3.5


def _jwt_ok(m: re.Match[str]) -> bool:
    return jwt_valid(m.group(0))


def _openai_ok(m: re.Match[str]) -> bool:
    body = m.group(0)[3:]
    return any(c.isdigit() for c in body) and any(c.isalpha() for c in body) and shannon_entropy(body) >= 3.5


@dataclass(frozen=True, slots=True)
class _Detector:
    kind: str
    pattern: re.Pattern[str]
    priority: int  # higher = more specific; wins overlaps
    validate: Callable[[re.Match[str]], bool] | None = None
    groups: tuple[int, ...] = (0,)  # the span is the first of these groups that matched
    needles: tuple[str, ...] = ()  # cheap prefilter: skip the regex unless one of these substrings is present
    lower_needles: bool = False  # the needles are lowercase and checked against the lowercased text
    gate: re.Pattern[str] | None = None  # a necessary condition, cheaper than the detector (shared gates run once);
    # searched in the lowercased text when lower_needles is set


_A = re.ASCII
# Every card, SSN, NINO, DNI/NIE and phone number holds 6+ digits with at most 3 separator characters between
# two digits, so one pass of this gate decides whether those five detectors need to run at all.
_SIX_DIGITS: Final[re.Pattern[str]] = re.compile(r"\d(?:[ .()/+-]{0,3}\d){5}", _A)
# A valid IPv6 address has a hex digit next to its "::" (ipv6_valid rejects a bare "::"), or is written in
# full (8 groups) and then contains "h:hhhh:h".
_IPV6_GATE: Final[re.Pattern[str]] = re.compile(r"::[0-9A-Fa-f]|[0-9A-Fa-f]::|[0-9A-Fa-f]:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]", _A)
# Every generic secret is a key word ("...key", "secret", "token", "password", "passwd", "pwd"), an optional
# quote, spaces, then ":" or "=" (":", "=", "=>", ":=").
_SECRET_GATE: Final[re.Pattern[str]] = re.compile(r"(?:key|secret|token|passwd|password|pwd)[\"']?\s*[:=]")  # on the lowercased text
_DETECTORS: Final[tuple[_Detector, ...]] = (
    _Detector(
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=:\-,.\s]{1,20000})"  # no END line: the key runs on (truncated paste)
        ),
        100,
        needles=("PRIVATE KEY",),
    ),
    _Detector(
        "jwt",
        re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}(?![\w-])", _A),
        95, _jwt_ok, needles=("eyJ",),
    ),
    _Detector(
        "aws_access_key",
        re.compile(r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|IPA|NPA|NVA|PKA)[A-Z2-7]{16}(?![A-Za-z0-9])", _A),
        90,
    ),
    _Detector(
        "github_token",
        re.compile(r"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{36}|ithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})(?![A-Za-z0-9_])", _A),
        90, needles=("gh", "github_pat_"),
    ),
    _Detector(
        "slack_token",
        re.compile(
            r"(?<![A-Za-z0-9])(?:xox[abposr]-[0-9]{6,}-[A-Za-z0-9-]{8,}"
            r"|https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,})",
            _A,
        ),
        90, needles=("xox", "hooks.slack.com"),
    ),
    _Detector(
        "openai_key",
        re.compile(r"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-|ant-(?:api03-)?)?[A-Za-z0-9_-]{20,}(?![A-Za-z0-9_-])", _A),
        90, _openai_ok, needles=("sk-",),
    ),
    _Detector(
        "credit_card",
        re.compile(r"\d(?<![\w-]\d)(?:[ -]?\d){11,18}(?![\w-])", _A),
        80, _card_ok, gate=_SIX_DIGITS,
    ),
    _Detector(
        "iban",
        re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])", _A),
        80, lambda m: iban_valid(m.group(0)),
    ),
    _Detector(
        "email",
        re.compile(
            r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
            r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w@-]|\.[A-Za-z0-9])",
            _A,
        ),
        70, _email_ok, needles=("@",),
    ),
    _Detector(
        "us_ssn",
        re.compile(r"\d(?<![\w-]\d)\d{2}[- ]\d{2}[- ]\d{4}(?![\w-])", _A),
        60, _ssn_ok, gate=_SIX_DIGITS,
    ),
    _Detector(
        "uk_nino",
        re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])", _A),
        60, lambda m: uk_nino_valid(m.group(0)), gate=_SIX_DIGITS,
    ),
    _Detector(
        "es_dni",
        re.compile(r"[XYZ0-9](?<![A-Za-z0-9-][XYZ0-9])\d{7}-?[A-Z](?![A-Za-z0-9])", _A),
        60, lambda m: es_dni_valid(m.group(0)), gate=_SIX_DIGITS,
    ),
    _Detector(
        "ipv6",
        re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?:%[A-Za-z0-9]+)?(?![\w:]|\.\w)", _A),
        55, _ipv6_ok, needles=(":",), gate=_IPV6_GATE,
    ),
    _Detector(
        "ipv4",
        re.compile(r"\d(?<![\w.-]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w-]|\.\d)", _A),
        50, _ipv4_ok, needles=(".",),
    ),
    _Detector(
        "generic_secret",
        re.compile(
            r"(?i)(?<![A-Za-z0-9])(?:[A-Za-z0-9]{1,20}[_-]){0,3}(?:api[_-]?key|apikey|secret(?:[_-]?(?:access[_-]?)?key)?|"
            r"access[_-]?(?:token|key)|auth[_-]?token|bearer[_-]?token|client[_-]?secret|private[_-]?token|"
            r"password|passwd|pwd|token)"
            r"[\"']?\s*(?:[:=]|=>|:=)\s*(?:\"([^\"\s]{12,200})\"|'([^'\s]{12,200})'|([A-Za-z0-9_\-+/=.~]{16,200}))",
            _A,
        ),
        40, _generic_secret_ok, groups=(1, 2, 3), needles=("key", "secret", "token", "passw", "pwd"), lower_needles=True,
        gate=_SECRET_GATE,
    ),
    _Detector(
        "phone",
        re.compile(
            # every repeated group starts with a separator, so a digit run splits one way only (no ReDoS).
            # The first character is matched before the lookbehind (here and in the detectors above) so the
            # regex engine can skip ahead to candidate characters instead of testing every position.
            r"[+(\d](?<![\w.+/-][+(\d])(?:"
            r"(?<=\+)\d{1,3}(?:[ .-]?\(0\))?(?:[ .-]?\(\d{1,5}\))?(?:[ .-]?\d{1,12})?(?:[ .-]\d{1,8}){0,5}"  # +CC ...
            r"|(?<=\()\d{2,5}\)[ .-]?\d{1,5}(?:[ .-]\d{1,8}){1,5}"  # (area) groups with separators
            r"|(?<=\d)\d{0,4}(?:[ .-]\d{1,8}){1,5}"  # groups with separators
            r"|(?<=\()\d{2,5}\)[ .-]?\d{4,8}"  # (0161) 4960066
            r"|(?<=0)\d{9,10}"  # unseparated national number with a trunk 0
            r")(?:[ ]?(?:x|ext\.?|extension)[ ]?\d{1,6})?(?![\w-]|\.\d)",
            _A,
        ),
        30, _phone_ok, gate=_SIX_DIGITS,
    ),
)

PII_KINDS: Final[tuple[str, ...]] = tuple(d.kind for d in _DETECTORS)
SECRET_KINDS: Final[frozenset[str]] = frozenset(
    {"private_key", "jwt", "aws_access_key", "github_token", "slack_token", "openai_key", "generic_secret"}
)


def _candidates(text: str, lower: str) -> list[tuple[int, int, int, str]]:
    out: list[tuple[int, int, int, str]] = []
    gates: dict[re.Pattern[str], bool] = {}
    for det in _DETECTORS:
        if det.needles and not any(n in (lower if det.lower_needles else text) for n in det.needles):
            continue
        if det.gate is not None:
            passed = gates.get(det.gate)
            if passed is None:
                passed = gates[det.gate] = det.gate.search(lower if det.lower_needles else text) is not None
            if not passed:
                continue
        for m in det.pattern.finditer(text):
            if det.validate is not None and not det.validate(m):
                continue
            g = next(g for g in det.groups if m.start(g) >= 0)
            start, end = m.span(g)
            if end > start:
                out.append((det.priority, start, end, det.kind))
    return out


def scan_pii(text: str, lower: str | None = None) -> list[SafetySpan]:
    """All PII/secret spans in ``text``, non-overlapping, sorted by start.

    Overlaps are resolved greedily: higher detector priority first (more specific), then the
    longer span, then the earlier one. Kinds are listed in ``PII_KINDS``. ``lower`` is ``text.lower()``
    when the caller has it already (only used for prefilters).
    """
    if not text:
        return []
    cands = _candidates(text, text.lower() if lower is None else lower)
    if not cands:
        return []
    cands.sort(key=lambda c: (-c[0], -(c[2] - c[1]), c[1]))
    chosen: list[tuple[int, int, str]] = []
    for _prio, start, end, kind in cands:
        if all(end <= s or start >= e for s, e, _k in chosen):
            chosen.append((start, end, kind))
    chosen.sort()
    return [SafetySpan(start=s, end=e, kind=k) for s, e, k in chosen]
