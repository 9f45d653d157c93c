"""Safety: scan the prompt and completion text of every completion, redact stored text per tenant policy.

For a completion it returns the texts to store (redacted where the tenant's policy says redact or
block), the findings as ``safety_findings`` rows and as ``SafetyFinding`` events for ``llm.safety``.
Finding events get a deterministic ``event_id`` (from request, scanned part and index), so a replayed
batch republishes the same events and consumers can deduplicate. Request messages and feedback
comments are redacted with the same policy (their findings are not published: the prompt is scanned
on the completion).

Every call scans a whole batch with one ``Scanner.scan_batch`` (``streams/safety/scanner.py``): identical texts are
detected once, and the scanner's cache means a completion's prompt -- the conversation its request carried, already
scanned when the request was stored -- is not scanned again. The scanner is shared by the agents, whose batches are
prepared in threads, so its calls are serialized (scanning holds the interpreter anyway).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from schemas.codec import make_event
from schemas.completions import Completion
from schemas.envelope import Envelope
from schemas.safety import SafetyFinding
from streams.safety.policy import TenantPolicies, load_policies
from streams.safety.scanner import ScanItem, Scanner, ScanResult, default_scanner

SAFETY_COLUMNS = [
    "tenant_id", "occurred_at", "request_id", "deployment_id", "scanned", "finding_index", "category", "action",
    "score", "kinds", "spans",
]
_NS = uuid.UUID("6f1c2a52-3a43-4a4e-9a4e-1f3f5f0c9b11")
Scanned = Literal["prompt", "completion"]


def load_tenant_policies(path: Path | None) -> TenantPolicies:
    """Policies from the file, or the default policy (redact PII, flag the rest) when there is none."""
    if path is None or not path.exists():
        return TenantPolicies()
    return load_policies(path)


@dataclass
class CompletionScan:
    """What the safety scan made of one completion."""

    prompt_text: str
    text: str
    blocked: bool
    injection_score: float = 0.0
    """Highest injection score of prompt and completion (also below the finding threshold; the review queue reads it)."""
    toxicity_score: float = 0.0
    """Highest toxicity probability of prompt and completion."""
    findings: list[SafetyFinding] = field(default_factory=list)
    text_findings: int = 0
    """Findings on the completion text (what the deployment windows count)."""
    rows: list[list[Any]] = field(default_factory=list)
    events: list[Envelope[SafetyFinding]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TextToStore:
    """A free text of a stored event (a request's message, a feedback comment) and whose policy applies."""

    tenant: str
    request_id: str
    deployment_id: str | None
    text: str


class Safety:
    """Per-tenant scanning and redaction of batches."""

    def __init__(self, policies: TenantPolicies, source: str = "streams.safety", scanner: Scanner | None = None) -> None:
        self.policies = policies
        self.source = source
        self._scanner = scanner
        self._lock = threading.Lock()
        self.scans = 0
        """Texts scanned so far (before the scanner's own deduplication and cache)."""

    def _scan(self, items: Sequence[ScanItem]) -> list[ScanResult]:
        if not items:
            return []
        with self._lock:
            if self._scanner is None:
                self._scanner = default_scanner()  # loads the learned layer once, on first use
            self.scans += len(items)
            return self._scanner.scan_batch(items)

    def redactions(self, texts: Sequence[TextToStore]) -> Callable[[str, str], str]:
        """Scan these texts as their tenants' policies say; returns ``stored(tenant, text)``: the text to store."""
        items = [ScanItem(t.request_id or "unknown", t.deployment_id, "prompt", t.text, self.policies.for_tenant(t.tenant))
                 for t in texts if t.text]
        stored = {(t.tenant, item.text): result.redacted_text
                  for t, item, result in zip([t for t in texts if t.text], items, self._scan(items), strict=True)
                  if result.redacted_text is not None}

        def lookup(tenant: str, text: str) -> str:
            return stored.get((tenant, text), text)

        return lookup

    def redactor(self, tenant: str, request_id: str, deployment_id: str | None) -> Callable[[str], str]:
        """A function that returns one text as it may be stored for this tenant (one scan per call)."""

        def redact(text: str) -> str:
            return self.redactions([TextToStore(tenant, request_id, deployment_id, text)])(tenant, text)

        return redact

    def scan_completions(self, events: Sequence[Envelope[Completion]]) -> list[CompletionScan]:
        """Scan the prompt and text of each completion (one scanner call for the batch)."""
        items: list[ScanItem] = []
        owners: list[tuple[int, Scanned]] = []
        for n, event in enumerate(events):
            c = event.payload
            policy = self.policies.for_tenant(event.tenant_id)
            parts: list[tuple[Scanned, str]] = [("prompt", c.prompt_text), ("completion", c.text)]
            for scanned, text in parts:
                if text:
                    items.append(ScanItem(c.request_id, c.deployment_id, scanned, text, policy))
                    owners.append((n, scanned))
        out = [CompletionScan(prompt_text=e.payload.prompt_text, text=e.payload.text, blocked=False) for e in events]
        for (n, scanned), result in zip(owners, self._scan(items), strict=True):
            self._add(out[n], events[n], scanned, result)
        return out

    def scan_completion(self, event: Envelope[Completion]) -> CompletionScan:
        return self.scan_completions([event])[0]

    def _add(self, out: CompletionScan, event: Envelope[Completion], scanned: Scanned, result: ScanResult) -> None:
        c = event.payload
        if result.redacted_text is not None:
            if scanned == "prompt":
                out.prompt_text = result.redacted_text
            else:
                out.text = result.redacted_text
        out.blocked = out.blocked or result.blocked
        if scanned == "completion":
            out.text_findings += len(result.findings)
        out.injection_score = max(out.injection_score, result.injection_score)
        out.toxicity_score = max(out.toxicity_score, result.toxicity_score)
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
