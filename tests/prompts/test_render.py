"""Rendering prompt templates: typed variables, missing/extra variables, the sandbox, parameter merging."""

from __future__ import annotations

import pytest

from schemas.envelope import utc_now
from schemas.prompts import PromptParams, PromptVariable, PromptVersion, TemplateMessage
from schemas.requests import GenerationParams, InferenceRequest, PromptRef
from services.prompts.definition import PromptDefinition
from services.prompts.registry import PromptRegistry, UnknownPrompt
from services.prompts.render import RenderError, TemplateProblem, render


def version(content: str = "Summarize in {{ words }} words: {{ text }}", n: int = 1, **kw: object) -> PromptVersion:
    data: dict[str, object] = dict(
        name="summarize", version=n, messages=[TemplateMessage(role="user", content=content)],
        variables=[PromptVariable(name="text"), PromptVariable(name="words", type="integer", default="40")],
        params=PromptParams(temperature=0.0, max_tokens=64), content_hash=f"h{n}", push_id=f"p{n}", created_at=utc_now(),
    )
    data.update(kw)
    return PromptVersion.model_validate(data)


def test_renders_typed_variables_and_defaults() -> None:
    assert render(version(), {"text": "a b c"})[0].content == "Summarize in 40 words: a b c"
    assert render(version(), {"text": "x", "words": " 7 "})[0].content == "Summarize in 7 words: x"


def test_missing_and_extra_variables_are_named() -> None:
    with pytest.raises(RenderError, match=r"missing variable\(s\): text.*unknown variable\(s\): colour"):
        render(version(), {"colour": "red"})


def test_wrong_type_is_refused() -> None:
    with pytest.raises(RenderError, match="'words' must be an integer"):
        render(version(), {"text": "x", "words": "many"})


def test_sandbox_refuses_python_internals() -> None:
    evil = version(content="{{ text.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(RenderError, match="cannot render"):
        render(evil, {"text": "x"})


def test_template_may_only_use_declared_variables() -> None:
    with pytest.raises(TemplateProblem, match="undeclared variables: tone"):
        PromptDefinition(name="p", messages=[TemplateMessage(role="user", content="{{ tone }} {{ text }}")],
                         variables=[PromptVariable(name="text")]).check()
    with pytest.raises(TemplateProblem, match="template error"):
        PromptDefinition(name="p", messages=[TemplateMessage(role="user", content="{{ text ")],
                         variables=[PromptVariable(name="text")]).check()


def test_registry_first_push_of_a_number_wins_and_labels_move() -> None:
    reg = PromptRegistry()
    assert reg.apply(version(n=1))
    assert not reg.apply(version(n=1, push_id="other", content="late"))
    assert reg.apply(version(n=2, content="v2 {{ text }} {{ words }}"))
    assert reg.get("summarize", "1").push_id == "p1"
    assert reg.get("summarize").version == 2
    from schemas.prompts import PromptLabel

    reg.apply(PromptLabel(name="summarize", label="production", version=1, moved_at=utc_now()))
    assert reg.get("summarize", "production").version == 1
    reg.apply(PromptLabel(name="summarize", label="production", version=2, moved_at=utc_now()))
    assert reg.get("summarize", "production").version == 2
    with pytest.raises(UnknownPrompt, match="no label 'staging'"):
        reg.get("summarize", "staging")
    with pytest.raises(UnknownPrompt, match="unknown prompt 'nope'"):
        reg.get("nope")


def test_render_request_keeps_provenance_and_merges_params() -> None:
    reg = PromptRegistry()
    reg.apply(version())
    req = InferenceRequest(request_id="r1", tenant="t", application="a", model_alias="chat",
                           prompt=PromptRef(prompt_id="summarize", version="latest", variables={"text": "hi"}),
                           params=GenerationParams(max_tokens=10))
    out = reg.render_request(req)
    assert out.messages is not None and out.messages[0].content == "Summarize in 40 words: hi"
    assert out.prompt is not None and out.prompt.version == "1"
    assert out.params.max_tokens == 10  # the request chose it
    assert out.params.temperature == 0.0  # left at the default: the prompt's value
    assert not out.needs_rendering
    # a rendered reference survives the wire contract
    assert InferenceRequest.model_validate_json(out.model_dump_json()) == out
