"""Variant ids and the router's pre-dispatch step: rendering, and a prompt-version rollout overriding the version."""

from __future__ import annotations

import pytest

from schemas.requests import InferenceRequest, Message, PromptRef
from schemas.variants import Variant, parse_variant
from services.prompts.dispatch import prepare_for_dispatch
from services.prompts.registry import PromptRegistry
from tests.prompts.test_render import version


def registry() -> PromptRegistry:
    reg = PromptRegistry()
    reg.apply(version(content="v1: {{ text }}", n=1))
    reg.apply(version(content="v2: {{ text }}", n=2))
    return reg


def test_parse_variants() -> None:
    assert parse_variant("chat-v1") == Variant("chat-v1")
    assert parse_variant("chat-v1/summarize@4") == Variant("chat-v1", "summarize", "4")
    assert parse_variant("chat-v1/summarize@4").id == "chat-v1/summarize@4"
    for bad in ("chat v1", "chat-v1/summarize", "chat-v1/summarize@latest", "chat-v1/@3"):
        with pytest.raises(ValueError, match="invalid"):
            parse_variant(bad)
    canary = parse_variant("chat-v1/summarize@4")
    assert canary.matches("chat-v1", "4") and canary.matches("chat-v1", "4", "summarize")
    assert not canary.matches("chat-v1", "3") and not canary.matches("chat-v2", "4")
    assert not canary.matches("chat-v1", "4", "other-prompt")
    assert Variant("chat-v1").matches("chat-v1", None)


def ref_request(**kw: object) -> InferenceRequest:
    data: dict[str, object] = dict(request_id="r", tenant="t", application="a", model_alias="chat",
                                   prompt=PromptRef(prompt_id="summarize", version="1", variables={"text": "hi"}))
    data.update(kw)
    return InferenceRequest.model_validate(data)


def test_unrendered_prompt_is_rendered_at_its_version() -> None:
    deployment, out = prepare_for_dispatch(ref_request(), "chat-v1", registry())
    assert deployment == "chat-v1" and out.deployment_id == "chat-v1"
    assert out.messages is not None and out.messages[0].content == "v1: hi" and out.prompt is not None
    assert out.prompt.version == "1"


def test_prompt_variant_overrides_the_version_even_when_rendered() -> None:
    reg = registry()
    rendered = reg.render_request(ref_request())  # what the gateway sends: rendered at v1
    deployment, out = prepare_for_dispatch(rendered, "chat-v1/summarize@2", reg)
    assert deployment == "chat-v1" and out.messages is not None and out.messages[0].content == "v2: hi"
    assert out.prompt is not None and out.prompt.version == "2"
    _, same = prepare_for_dispatch(rendered, "chat-v1/summarize@1", reg)  # the stable variant keeps it
    assert same.messages == rendered.messages


def test_other_requests_only_change_deployment() -> None:
    plain = InferenceRequest(request_id="r", tenant="t", application="a", model_alias="chat",
                             messages=[Message(role="user", content="hello")])
    deployment, out = prepare_for_dispatch(plain, "chat-v1/summarize@2", registry())
    assert deployment == "chat-v1" and out.messages == plain.messages and out.prompt is None
