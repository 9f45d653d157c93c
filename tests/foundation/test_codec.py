"""The codec: every event round-trips; every kind of bad input gives its documented error kind."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from schemas import EVENT_TYPES, DecodeError, DecodeErrorKind, decode, encode, make_event
from schemas.codec import HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION, MAX_DEPTH, MAX_VALUE_BYTES
from schemas.completions import Completion
from schemas.deadletter import KEY_MAX_BYTES, MAX_MESSAGE_BYTES, ORIGINAL_MAX_BYTES, DeadLetter
from schemas.requests import GenerationParams, InferenceRequest, Message
from schemas.rollouts import RolloutEvent
from tests.foundation.samples import sample_payloads


@pytest.mark.parametrize("payload", sample_payloads(), ids=lambda p: type(p).__name__)
def test_every_event_round_trips(payload: BaseModel) -> None:
    event = make_event(payload, source="test", tenant_id="acme", trace_id="trace-1")
    value, headers = encode(event)
    back = decode(value, headers)
    assert back == event
    assert type(back.payload) is type(payload)
    assert dict(headers)[HEADER_EVENT_TYPE].decode() == event.event_type
    offset = back.occurred_at.utcoffset()
    assert offset is not None and offset.total_seconds() == 0


def test_every_registered_type_has_a_sample() -> None:
    assert {type(p) for p in sample_payloads()} == {et.model for et in EVENT_TYPES.values()}


def _valid() -> dict[str, Any]:
    payload = sample_payloads()[0]
    event: dict[str, Any] = json.loads(encode(make_event(payload, source="t", tenant_id="acme"))[0])
    return event


def _bytes(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _with(**changes: object) -> bytes:
    raw = _valid()
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        if value is KeyError:
            node.pop(leaf)
        else:
            node[leaf] = value
    return _bytes(raw)


BAD_INPUTS = [
    ("none", None, None, DecodeErrorKind.EMPTY),
    ("zero bytes", b"", None, DecodeErrorKind.EMPTY),
    ("binary", b"\xff\xfe\x00garbage", None, DecodeErrorKind.NOT_JSON),
    ("truncated json", _bytes(_valid())[:-7], None, DecodeErrorKind.NOT_JSON),
    ("json array", b"[1, 2]", None, DecodeErrorKind.NOT_AN_OBJECT),
    ("json string", b'"hello"', None, DecodeErrorKind.NOT_AN_OBJECT),
    ("missing event_type", _with(event_type=KeyError), None, DecodeErrorKind.UNKNOWN_TYPE),
    ("unknown event_type", _with(event_type="inference.teleport"), None, DecodeErrorKind.UNKNOWN_TYPE),
    ("future version", _with(schema_version=99), None, DecodeErrorKind.UNSUPPORTED_VERSION),
    ("version as string", _with(schema_version="1"), None, DecodeErrorKind.UNSUPPORTED_VERSION),
    ("version as bool", _with(schema_version=True), None, DecodeErrorKind.UNSUPPORTED_VERSION),
    ("header type mismatch", _bytes(_valid()), [(HEADER_EVENT_TYPE, b"feedback")], DecodeErrorKind.HEADER_MISMATCH),
    ("header version mismatch", _bytes(_valid()), [(HEADER_SCHEMA_VERSION, b"2")], DecodeErrorKind.HEADER_MISMATCH),
    ("missing payload field", _with(payload__request_id=KeyError), None, DecodeErrorKind.INVALID),
    ("extra envelope field", _with(surprise=1), None, DecodeErrorKind.INVALID),
    ("bad uuid", _with(event_id="not-a-uuid"), None, DecodeErrorKind.INVALID),
    ("naive timestamp", _with(occurred_at="2026-11-24T10:00:00"), None, DecodeErrorKind.INVALID),
    ("temperature out of range", _with(payload__params={"temperature": 9.0}), None, DecodeErrorKind.INVALID),
    ("max_tokens zero", _with(payload__params={"max_tokens": 0}), None, DecodeErrorKind.INVALID),
    ("no messages nor prompt", _with(payload__messages=None), None, DecodeErrorKind.INVALID),
    ("payload not an object", _with(payload=[1]), None, DecodeErrorKind.INVALID),
]


@pytest.mark.parametrize(("value", "headers", "kind"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_bytes_give_the_documented_error(
    value: bytes | None, headers: list[tuple[str, bytes]] | None, kind: DecodeErrorKind
) -> None:
    with pytest.raises(DecodeError) as info:
        decode(value, headers)
    assert info.value.kind is kind
    assert str(info.value).startswith(kind.value + ":")


def test_wrong_type_for_the_topic() -> None:
    value, headers = encode(make_event(sample_payloads()[0], source="t", tenant_id="acme"))
    with pytest.raises(DecodeError) as info:
        decode(value, headers, expect=Completion)
    assert info.value.kind is DecodeErrorKind.WRONG_TYPE
    assert decode(value, headers, expect=(Completion, InferenceRequest)).payload.request_id == "r-1"


def test_validation_message_names_the_field() -> None:
    with pytest.raises(DecodeError) as info:
        decode(_with(payload__params={"top_p": 0}))
    assert "payload.params.top_p" in str(info.value)


def test_generation_param_ranges() -> None:
    GenerationParams(max_tokens=1, temperature=0.0, top_p=1.0, seed=0)
    for bad in ({"temperature": -0.1}, {"top_p": 1.5}, {"max_tokens": 40000}, {"seed": -1}, {"stop": ["x"] * 17}):
        with pytest.raises(ValidationError):
            GenerationParams(**bad)


def test_request_needs_exactly_one_of_messages_or_prompt() -> None:
    base = {"request_id": "r", "tenant": "t", "application": "a", "model_alias": "m"}
    with pytest.raises(ValidationError, match="one of 'messages' or 'prompt'"):
        InferenceRequest(**base)
    with pytest.raises(ValidationError, match="rendered version number"):  # both: a rendered prompt, version resolved
        InferenceRequest(**base, messages=[Message(role="user", content="x")], prompt={"prompt_id": "p", "version": "latest"})
    InferenceRequest(**base, messages=[Message(role="user", content="x")], prompt={"prompt_id": "p", "version": "1"})


def test_rollout_weights_must_sum_to_one() -> None:
    with pytest.raises(ValidationError, match="sum to 1"):
        RolloutEvent(alias="a", rollout_id="r", stable_deployment="s", action="start", step=0, weights={"s": 0.7})


def test_make_event_rejects_naive_and_keeps_utc() -> None:
    with pytest.raises(ValidationError):
        make_event(sample_payloads()[2], source="t", tenant_id="acme", occurred_at=datetime(2026, 1, 1))


# --- Hostile input: every failure is a DecodeError with a kind, never another exception --------------------


def _request_with_content(content_json: str) -> bytes:
    """A valid request's bytes with the first message's content replaced by raw JSON text."""
    raw = _valid()
    marker = "__CONTENT__"
    raw["payload"]["messages"][0]["content"] = marker
    return json.dumps(raw).replace(json.dumps(marker), content_json).encode()


def _completion_with_text(text_json: str) -> bytes:
    """A valid completion's bytes whose ``text`` is raw JSON text (``text`` has no length limit: only the codec
    stands between a lone surrogate in it and a ClickHouse insert that fails)."""
    completion = next(p for p in sample_payloads() if isinstance(p, Completion))
    raw = json.loads(encode(make_event(completion, source="t", tenant_id="acme"))[0])
    raw["payload"]["text"] = "__TEXT__"
    return json.dumps(raw).replace('"__TEXT__"', text_json).encode()


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


HOSTILE_INPUTS = [
    ("array nested 5000 deep", _nested(5000).encode(), DecodeErrorKind.TOO_DEEP),
    ("object nested 5000 deep", ('{"a":' * 5000 + "1" + "}" * 5000).encode(), DecodeErrorKind.TOO_DEEP),
    ("deep nesting inside an event", _request_with_content(_nested(5000)), DecodeErrorKind.TOO_DEEP),
    ("unterminated nesting", b"[" * 5000, DecodeErrorKind.NOT_JSON),
    ("nesting one over the limit", _nested(MAX_DEPTH + 1).encode(), DecodeErrorKind.TOO_DEEP),
    ("lone low surrogate escape", _request_with_content('"hi \\udc80 there"'), DecodeErrorKind.INVALID_TEXT),
    ("lone surrogate in completion text", _completion_with_text('"ok \\udc80"'), DecodeErrorKind.INVALID_TEXT),
    ("lone high surrogate escape", _request_with_content('"\\uD83D"'), DecodeErrorKind.INVALID_TEXT),
    ("reversed surrogate pair", _request_with_content('"\\ude00\\ud83d"'), DecodeErrorKind.INVALID_TEXT),
    ("surrogate in a key", b'{"\\udc80": 1}', DecodeErrorKind.INVALID_TEXT),
    ("surrogate in event_type", _with(event_type="\udc80"), DecodeErrorKind.INVALID_TEXT),
    ("surrogate as raw UTF-8 bytes", _request_with_content('"a"').replace(b'"a"', b'"\xed\xb2\x80"'),
     DecodeErrorKind.NOT_JSON),
    ("invalid UTF-8 inside a string", _request_with_content('"a"').replace(b'"a"', b'"\xc3\x28"'),
     DecodeErrorKind.NOT_JSON),
    ("overlong UTF-8", _request_with_content('"a"').replace(b'"a"', b'"\xc0\xaf"'), DecodeErrorKind.NOT_JSON),
    ("integer with 5000 digits", _with(schema_version=KeyError)[:-1] + b', "schema_version": ' + b"9" * 5000 + b"}",
     DecodeErrorKind.OUT_OF_RANGE),
    ("integer over 64 bits", _with(payload__priority=KeyError)[:-2] + b', "priority": 18446744073709551616}}',
     DecodeErrorKind.OUT_OF_RANGE),
    ("float overflow", b'{"x": 1e400}', DecodeErrorKind.OUT_OF_RANGE),
    ("NaN", b'{"x": NaN}', DecodeErrorKind.NOT_JSON),
    ("Infinity", b'{"x": -Infinity}', DecodeErrorKind.NOT_JSON),
    ("UTF-16 JSON", json.dumps(_valid()).encode("utf-16"), DecodeErrorKind.NOT_JSON),
    ("huge event_type", _with(event_type="x" * 1_000_000), DecodeErrorKind.UNKNOWN_TYPE),
    ("oversize prompt", _with(payload__messages=[{"role": "user", "content": "x" * 1_000_001}]),
     DecodeErrorKind.INVALID),
    ("over the size limit", b'{"x": "' + b"a" * MAX_VALUE_BYTES + b'"}', DecodeErrorKind.TOO_LARGE),
]


@pytest.mark.parametrize(("value", "kind"), [h[1:] for h in HOSTILE_INPUTS], ids=[h[0] for h in HOSTILE_INPUTS])
def test_hostile_bytes_give_a_decode_error_with_a_kind(value: bytes, kind: DecodeErrorKind) -> None:
    with pytest.raises(DecodeError) as info:
        decode(value)
    assert info.value.kind is kind, str(info.value)[:300]
    assert len(str(info.value)) < 2_000, "error messages stay short whatever the input"


def test_limits_are_configurable_per_call() -> None:
    value = _bytes(_valid())
    assert decode(value, max_depth=4).payload.request_id == "r-1"  # envelope > payload > messages > message
    with pytest.raises(DecodeError) as info:
        decode(value, max_depth=3)
    assert info.value.kind is DecodeErrorKind.TOO_DEEP
    with pytest.raises(DecodeError) as info:
        decode(value, max_bytes=len(value) - 1)
    assert info.value.kind is DecodeErrorKind.TOO_LARGE
    assert decode(value, max_bytes=len(value)).payload.request_id == "r-1"


def test_nesting_at_the_limit_parses() -> None:
    with pytest.raises(DecodeError) as info:
        decode(_nested(MAX_DEPTH).encode())
    assert info.value.kind is DecodeErrorKind.NOT_AN_OBJECT  # parsed, then rejected as not an envelope


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[" * 5000 + '\\" {{{ ' + "]" * 10
    event = decode(_request_with_content(json.dumps(text)))
    assert event.payload.messages[0].content == text


def test_paired_surrogate_escapes_and_astral_text_are_valid() -> None:
    event = decode(_request_with_content('"smile \\ud83d\\ude00 \\u00e9"'))
    assert event.payload.messages[0].content == "smile \U0001f600 \u00e9"
    assert decode(_request_with_content(json.dumps("\U0001f600", ensure_ascii=False))).payload.messages[0].content == "\U0001f600"


def test_64_bit_integers_at_the_bounds_parse() -> None:
    params = {"max_tokens": 1, "seed": 2**63 - 1}
    assert decode(_with(payload__params=params)).payload.params.seed == 2**63 - 1


def test_fuzzed_events_raise_only_decode_errors() -> None:
    """Random byte edits of valid events: decode returns an event or raises DecodeError, nothing else."""
    rng = random.Random(20261201)
    seeds = [encode(make_event(p, source="fuzz", tenant_id="acme"))[0] for p in sample_payloads()]
    alphabet = b'{}[]",:\\u0123456789abcdefDdEe-+.eE \x00\xff\xed\xa0\x80truefalsenull'
    kinds: set[DecodeErrorKind] = set()
    ok = 0
    for i in range(6_000):
        value = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(value))
            action = rng.random()
            if action < 0.4:
                value[pos] = rng.choice(alphabet)
            elif action < 0.7:
                value[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
            elif action < 0.9:
                del value[pos : pos + rng.randint(1, 8)]
            else:
                value[pos:pos] = (b"[" * 3000 + b"]" * 3000) if i % 2 else b'"\\udc80"'
        try:
            decode(bytes(value))
            ok += 1
        except DecodeError as exc:
            kinds.add(exc.kind)
    assert {DecodeErrorKind.NOT_JSON, DecodeErrorKind.INVALID, DecodeErrorKind.TOO_DEEP} <= kinds
    assert ok > 0


# --- Dead letters always fit on the dead-letter topic -------------------------------------------------------


def test_a_huge_dead_letter_is_truncated_with_size_and_hash() -> None:
    value = b"\xff" + bytes(range(256)) * 20_000  # 5 MB, not UTF-8
    key = b"k" * 100_000
    error = ("\x00\udc80\u2028" * 400_000)  # control characters and lone surrogates: the worst to encode
    letter = DeadLetter.from_bytes(topic="llm.requests", partition=3, offset=9, error_kind="not_json", error=error,
                                   value=value, key=key, consumer="c" * 500)
    encoded, headers = encode(make_event(letter, source="s" * 200, tenant_id="t" * 200, trace_id="x" * 200))
    assert len(encoded) + sum(len(k) + len(v) for k, v in headers) <= MAX_MESSAGE_BYTES
    assert letter.original_truncated and letter.original_size == len(value)
    assert letter.original_sha256 == hashlib.sha256(value).hexdigest()
    assert letter.original() == value[:ORIGINAL_MAX_BYTES]
    assert letter.original_key_truncated and base64.b64decode(letter.original_key_b64 or "") == key[:KEY_MAX_BYTES]
    back = decode(encoded, headers, expect=DeadLetter).payload
    assert back == letter


def test_oversize_invalid_request_makes_a_dead_letter_that_fits() -> None:
    value = _with(payload__messages=[{"role": "user", "content": "\u00e9" * 1_000_001}])
    with pytest.raises(DecodeError) as info:
        decode(value)
    letter = DeadLetter.from_bytes(topic="llm.requests", partition=0, offset=1, error_kind=info.value.kind.value,
                                   error=str(info.value), value=value)
    assert len(encode(make_event(letter, source="t", tenant_id="acme"))[0]) <= MAX_MESSAGE_BYTES
    assert letter.original_size == len(value) > MAX_MESSAGE_BYTES


def test_a_small_dead_letter_keeps_everything() -> None:
    letter = DeadLetter.from_bytes(topic="t", partition=0, offset=0, error_kind="not_json", error="bad",
                                   value=b"{oops", key=b"k1")
    assert letter.original() == b"{oops" and not letter.original_truncated and letter.original_size == 5
    assert base64.b64decode(letter.original_key_b64 or "") == b"k1" and not letter.original_key_truncated
    empty = DeadLetter.from_bytes(topic="t", partition=0, offset=1, error_kind="empty", error="", value=None)
    assert empty.original() == b"" and empty.original_size == 0 and empty.original_key_b64 is None
