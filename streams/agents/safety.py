"""Safety agent: scan the prompt and completion text of every completion, redact stored text per tenant policy.

For a completion it returns the texts to store (redacted where the tenant's policy says redact or
block), the findings as ``safety_findings`` rows and as ``SafetyFinding`` events for ``llm.safety``.
Finding events get a deterministic ``event_id`` (from request, scanned part and index), so a replayed
batch republishes the same events and consumers can deduplicate. Request messages and feedback
comments are redacted with the same policy (their findings are not published: the prompt is scanned
on the completion).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from schemas.codec import make_event
from schemas.completions import Completion
from schemas.envelope import Envelope
from schemas.safety import SafetyFinding
from streams.safety.policy import SafetyPolicy, TenantPolicies, load_policies
from streams.safety.scanner import scan

SAFETY_COLUMNS = [
    "tenant_id", "occurred_at", "request_id", "deployment_id", "scanned", "finding_index", "category", "action",
    "score", "kinds", "spans",
]
_NS = uuid.UUID("6f1c2a52-3a43-4a4e-9a4e-1f3f5f0c9b11")


def load_tenant_policies(path: Path | None) -> TenantPolicies:
    """Policies from the file, or the default policy (redact PII, flag the rest) when there is none."""
    if path is None or not path.exists():
        return TenantPolicies()
    return load_policies(path)


@dataclass
class CompletionScan:
    """What the safety agent made of one completion."""

    prompt_text: str
    text: str
    blocked: bool
    findings: list[SafetyFinding] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    events: list[Envelope[SafetyFinding]] = field(default_factory=list)


class SafetyAgent:
    """Per-tenant scanning and redaction."""

    def __init__(self, policies: TenantPolicies, source: str = "streams.safety") -> None:
        self.policies = policies
        self.source = source

    def policy(self, tenant: str) -> SafetyPolicy:
        return self.policies.for_tenant(tenant)

    def redactor(self, tenant: str, request_id: str, deployment_id: str | None) -> Callable[[str], str]:
        """A function that returns a text as it may be stored for this tenant."""
        policy = self.policy(tenant)

        def redact(text: str) -> str:
            if not text:
                return text
            result = scan(request_id, deployment_id, "prompt", text, policy)
            return text if result.redacted_text is None else result.redacted_text

        return redact

    def scan_completion(self, event: Envelope[Completion]) -> CompletionScan:
        c = event.payload
        policy = self.policy(event.tenant_id)
        out = CompletionScan(prompt_text=c.prompt_text, text=c.text, blocked=False)
        parts: list[tuple[Literal["prompt", "completion"], str]] = [("prompt", c.prompt_text), ("completion", c.text)]
        for scanned, text in parts:
            if not text:
                continue
            result = scan(c.request_id, c.deployment_id, scanned, text, policy)
            if result.redacted_text is not None:
                if scanned == "prompt":
                    out.prompt_text = result.redacted_text
                else:
                    out.text = result.redacted_text
            out.blocked = out.blocked or result.blocked
            for i, finding in enumerate(result.findings):
                out.findings.append(finding)
                out.rows.append([
                    event.tenant_id, event.occurred_at, c.request_id, c.deployment_id, scanned, i, finding.category,
                    finding.action, finding.score, sorted({s.kind for s in finding.spans}),
                    json.dumps([s.model_dump() for s in finding.spans]),
                ])
                out.events.append(make_event(
                    finding, source=self.source, tenant_id=event.tenant_id, trace_id=event.trace_id,
                    event_id=uuid.uuid5(_NS, f"{event.tenant_id}/{c.request_id}/{scanned}/{i}"),
                    occurred_at=event.occurred_at,
                ))
        return out
