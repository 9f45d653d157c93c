"""The codec: every event round-trips; every kind of bad input gives its documented error kind."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from pydantic import BaseModel, ValidationError

from schemas import EVENT_TYPES, DecodeError, DecodeErrorKind, decode, encode, make_event
from schemas.codec import HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION
from schemas.completions import Completion
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
    assert back.occurred_at.utcoffset() is not None and back.occurred_at.utcoffset().total_seconds() == 0


def test_every_registered_type_has_a_sample() -> None:
    assert {type(p) for p in sample_payloads()} == {et.model for et in EVENT_TYPES.values()}


def _valid() -> dict:
    payload = sample_payloads()[0]
    return json.loads(encode(make_event(payload, source="t", tenant_id="acme"))[0])


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
def test_bad_bytes_give_the_documented_error(value: bytes | None, headers: list | None, kind: DecodeErrorKind) -> None:
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
    with pytest.raises(ValidationError, match="exactly one"):
        InferenceRequest(**base)
    with pytest.raises(ValidationError, match="exactly one"):
        InferenceRequest(**base, messages=[Message(role="user", content="x")], prompt={"prompt_id": "p", "version": "1"})


def test_rollout_weights_must_sum_to_one() -> None:
    with pytest.raises(ValidationError, match="sum to 1"):
        RolloutEvent(alias="a", rollout_id="r", stable_deployment="s", action="start", step=0, weights={"s": 0.7})


def test_make_event_rejects_naive_and_keeps_utc() -> None:
    with pytest.raises(ValidationError):
        make_event(sample_payloads()[2], source="t", tenant_id="acme", occurred_at=datetime(2026, 1, 1))
