"""Validators and the PII scanner: positives, tricky negatives, overlap resolution."""

from __future__ import annotations

import itertools

import pytest

from streams.safety.pii import (
    card_valid,
    es_dni_valid,
    iban_valid,
    ipv4_valid,
    ipv6_valid,
    jwt_valid,
    luhn_valid,
    scan_pii,
    shannon_entropy,
    uk_nino_valid,
    us_ssn_valid,
)


def kinds(text: str) -> list[tuple[str, str]]:
    return [(text[s.start:s.end], s.kind) for s in scan_pii(text)]


@pytest.mark.parametrize("digits,ok", [
    ("4111111111111111", True), ("4111111111111112", False), ("79927398713", True), ("79927398710", False),
    ("0", True), ("", False), ("12a4", False),
])
def test_luhn(digits: str, ok: bool) -> None:
    assert luhn_valid(digits) is ok


@pytest.mark.parametrize("digits,ok", [
    ("4242424242424242", True), ("5555555555554444", True), ("378282246310005", True), ("6011111111111117", True),
    ("4000123456789010", False),  # fails Luhn
    ("1234567812345670", False),  # passes Luhn, no issuer starts with 1
    ("42424242424242", False),  # Visa with a wrong length
])
def test_card_valid(digits: str, ok: bool) -> None:
    assert card_valid(digits) is ok


@pytest.mark.parametrize("iban,ok", [
    ("DE89370400440532013000", True), ("GB82 WEST 1234 5698 7654 32", True), ("FR1420041010050500013M02606", True),
    ("DE89370400440532013001", False), ("GB83WEST12345698765432", False), ("DE8937040044053201300", False),
    ("XX89370400440532013000", False), ("gb82west12345698765432", True),
])
def test_iban(iban: str, ok: bool) -> None:
    assert iban_valid(iban) is ok


@pytest.mark.parametrize("ssn,ok", [
    ("536221234", True), ("000121234", False), ("666121234", False), ("900121234", False), ("999121234", False),
    ("536001234", False), ("536220000", False), ("078051120", True), ("53622123", False),
])
def test_ssn(ssn: str, ok: bool) -> None:
    assert us_ssn_valid(ssn) is ok


@pytest.mark.parametrize("nino,ok", [
    ("AB123456C", True), ("AB 12 34 56 C", True), ("QQ123456C", False), ("BG123456A", False), ("AB123456E", False),
    ("DA123456A", False), ("AO123456A", False),
])
def test_nino(nino: str, ok: bool) -> None:
    assert uk_nino_valid(nino) is ok


@pytest.mark.parametrize("dni,ok", [
    ("12345678Z", True), ("12345678A", False), ("X1234567L", True), ("X1234567A", False), ("1234567Z", False),
])
def test_dni(dni: str, ok: bool) -> None:
    assert es_dni_valid(dni) is ok


@pytest.mark.parametrize("ip,ok", [
    ("192.168.1.1", True), ("0.0.0.0", True), ("255.255.255.255", True), ("256.1.1.1", False), ("999.1.1.1", False),
    ("1.2.3", False), ("1.2.3.4.5", False), ("01.2.3.4", False),
])
def test_ipv4(ip: str, ok: bool) -> None:
    assert ipv4_valid(ip) is ok


@pytest.mark.parametrize("ip,ok", [
    ("2001:db8::8a2e:370:7334", True), ("::1", True), ("fe80::1%eth0", True), ("::", False), ("12:30:45", False),
    ("00:1A:2B:3C:4D:5E", False), ("de::ad", False), ("2001:db8:0:0:0:0:2:1", True), ("gggg::1", False),
])
def test_ipv6(ip: str, ok: bool) -> None:
    assert ipv6_valid(ip) is ok


def test_jwt_and_entropy() -> None:
    tok = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert jwt_valid(tok)
    assert not jwt_valid("eyJub3Rqc29u.eyJhIjoxfQ.abcdefghijkl")
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)


@pytest.mark.parametrize("text,expected", [
    ("mail john.doe@acme.io now", [("john.doe@acme.io", "email")]),
    ("call (415) 555-2671 or +44 20 7946 0958", [("(415) 555-2671", "phone"), ("+44 20 7946 0958", "phone")]),
    ("card 4111 1111 1111 1111.", [("4111 1111 1111 1111", "credit_card")]),
    ("IBAN DE89 3704 0044 0532 0130 00", [("DE89 3704 0044 0532 0130 00", "iban")]),
    ("ssn 536-22-1234", [("536-22-1234", "us_ssn")]),
    ("host 10.0.0.1.", [("10.0.0.1", "ipv4")]),
    ("AKIAIOSFODNN7EXAMPLE", [("AKIAIOSFODNN7EXAMPLE", "aws_access_key")]),
    ("ghp_" + "a1" * 18, [("ghp_" + "a1" * 18, "github_token")]),
    ("api_key = \"a8F3kL0pQz9XvB2nR7tY\"", [("a8F3kL0pQz9XvB2nR7tY", "generic_secret")]),
])
def test_scan_positives(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(text) == expected


@pytest.mark.parametrize("text", [
    "version 1.2.3.4.5", "upgrade to 999.1.1.1", "release 10.4.2.1", "logo@2x.png", "admin@localhost",
    "card 4111 1111 1111 1112", "IBAN DE89370400440532013001", "ssn 666-12-3456", "uuid 123e4567-e89b-12d3-a456-426614174000",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8", "MAC 00:1A:2B:3C:4D:5E", "api_key=YOUR_API_KEY_HERE",
    "api_key = os.environ[\"API_KEY\"]", "std::vector<int>", "2024-01-15 12:30:45", "",
])
def test_scan_negatives(text: str) -> None:
    assert scan_pii(text) == []


def test_overlap_most_specific_wins() -> None:
    # an sk- key inside an api_key= assignment: one span, the specific kind
    text = "api_key=sk-proj-abcDEF123456ghiJKL7890mnop"
    assert kinds(text) == [("sk-proj-abcDEF123456ghiJKL7890mnop", "openai_key")]
    # a card number is also a digit run a phone regex could see: card wins, only one span
    assert kinds("4242-4242-4242-4242") == [("4242-4242-4242-4242", "credit_card")]


def test_spans_sorted_and_disjoint_with_unicode() -> None:
    text = "Zoë 😀 écrit à zoe@exemple.fr, tél +33 1 23 45 67 89, IP 8.8.8.8"
    spans = scan_pii(text)
    assert [s.kind for s in spans] == ["email", "phone", "ipv4"]
    assert text[spans[0].start:spans[0].end] == "zoe@exemple.fr"
    for a, b in itertools.pairwise(spans):
        assert a.end <= b.start


def test_private_key_block() -> None:
    text = "key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\nthanks"
    (span,) = scan_pii(text)
    assert span.kind == "private_key"
    assert text[span.start:span.end].startswith("-----BEGIN") and text[span.start:span.end].endswith("KEY-----")


@pytest.mark.parametrize("phone", [
    "+44(0)115 4960914", "(0161) 4960066", "+49 (0) 9141 777631", "+33 (0)1 41 63 60 83", "04 15 39 15 00",
    "+34 920000806", "(0406)-812415", "206.269.0743x9150", "+1-780-563-6083x7783", "(798)938-6756x508",
    "001-339-763-4101", "03662 585178",
])
def test_phone_formats(phone: str) -> None:
    assert kinds(f"tel: {phone} ok") == [(phone, "phone")]


@pytest.mark.parametrize("text", [
    "5272868387", "call 555-1234", "ISBN 0-19-651485-1", "0-7923-8902-6", "2024-01-15", "ticket 12-34-56", "+1 2",
    "00008063608",
])
def test_phone_negatives(text: str) -> None:
    assert [k for _v, k in kinds(text)] == []


@pytest.mark.parametrize("text", [
    "Mozilla/5.0 (X11; Linux x86_64; rv:1.9.5.20) Gecko/20100101",  # rv: version, not an IP
    "Chrome/1.2.3.4 Safari",
    "EAN 6375826315541",  # 13 digits passing Luhn with a Maestro prefix: a barcode
    "4222222222222",  # 13-digit Visa test number: no longer issued, collides with EAN-13
])
def test_versions_and_barcodes_are_not_pii(text: str) -> None:
    assert scan_pii(text) == []


def test_truncated_private_key_is_still_caught() -> None:
    text = "key -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc=="
    (span,) = scan_pii(text)
    assert span.kind == "private_key" and (span.start, span.end) == (4, len(text))


@pytest.mark.parametrize("text,ssn", [
    ("My SSN is 078-05-1120.", "078-05-1120"),  # the wallet-insert SSN was really issued: still a person's number
    ("social security 219-09-9999 on file", "219-09-9999"),
    ("ssn 123-45-6789", "123-45-6789"),
])
def test_well_known_ssns_are_still_ssns(text: str, ssn: str) -> None:
    assert kinds(text) == [(ssn, "us_ssn")]


@pytest.mark.parametrize("text", [
    "Version: 1.2.3.4", "version=1.2.3.4", "__version__ = '1.2.3.4'", "pip install requests==2.31.0.1",
    "pin foo>=1.2.3.4,<2", "versions 1.2.3.4 and 2.0.0.1 are affected",
    "build: 4.4.2.1", "Released 10.4.2.1 today", "firmware 2.0.1.3 fixes it", "upgraded to v1.2.3.4 and 1.2.3.5",
    "update to 10.0.1.2 (released last week)", "the 1.2.3.4 release notes", "Python 3.11.2.1 build",
])
def test_version_strings_are_not_ips(text: str) -> None:
    assert [k for _v, k in kinds(text)] == []


@pytest.mark.parametrize("text,ips", [
    ("connect to 10.0.0.1 port 22", ["10.0.0.1"]),
    ("ping 8.8.8.8 and 1.1.1.1", ["8.8.8.8", "1.1.1.1"]),
    ("the version server at 192.168.1.20 answered", ["192.168.1.20"]),
    ("Host: 172.16.0.5", ["172.16.0.5"]),
    ("ssh root@10.0.0.1", ["10.0.0.1"]),
])
def test_addresses_near_version_words_are_still_ips(text: str, ips: list[str]) -> None:
    assert kinds(text) == [(ip, "ipv4") for ip in ips]


@pytest.mark.parametrize("text,expected", [
    ("x = a[::2]", []), ("list[::3] and s[1::2]", []), ("rows[::-1]", []), ("f(x)[::2]", []),
    ("http://[::1]:8080/health", [("::1", "ipv6")]), ("listen on ::1", [("::1", "ipv6")]),
])
def test_slices_are_not_ipv6(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(text) == expected
