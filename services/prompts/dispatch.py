"""What a router does to a request before dispatch: pick the variant's deployment and render the request's prompt.

One function, so the router renders exactly as the gateway does (both through :class:`PromptRegistry`):
* a PromptRef not rendered yet is rendered at the version it names (a number, a label, ``latest``);
* when the chosen variant pins a version of the request's prompt (a prompt-version rollout), the request is
  rendered at that version, even if the gateway already rendered it at another (its variables travel with it).
"""

from __future__ import annotations

from schemas.requests import InferenceRequest
from schemas.variants import parse_variant
from services.prompts.registry import PromptRegistry


def prepare_for_dispatch(request: InferenceRequest, variant_id: str, registry: PromptRegistry) -> tuple[str, InferenceRequest]:
    """(deployment, request to dispatch); raises UnknownPrompt or RenderError (the router answers with an error)."""
    variant = parse_variant(variant_id)
    ref = request.prompt
    if ref is not None and variant.prompt_id is not None and ref.prompt_id == variant.prompt_id:
        if ref.version != variant.prompt_version or request.needs_rendering:
            unrendered = request.model_copy(update={"messages": None})
            request = registry.render_request(unrendered, version=variant.prompt_version)
    elif request.needs_rendering:
        request = registry.render_request(request)
    return variant.deployment, request.model_copy(update={"deployment_id": variant.deployment})
