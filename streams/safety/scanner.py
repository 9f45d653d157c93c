"""One call per prompt or completion: run the PII, injection and toxicity scanners, apply the policy.

``scan`` returns a ``ScanResult``:

* ``findings``: ``SafetyFinding`` records, spans only (never the matched value). PII gives one
  finding per hit (its score is the detector's confidence, ``PII_CONFIDENCE``); injection and
  toxicity give at most one finding per text, with all contributing spans.
* ``redacted_text``: the text to store, with the spans of every ``redact`` *or* ``block``
  finding replaced by ``[REDACTED:<kind>]``; ``None`` when nothing had to be redacted (store
  the text as is).
* ``blocked``: True when any finding's action is ``block``. For injection, ``block`` is applied
  only at or above the policy's ``injection_block_threshold`` (weaker findings are flagged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from schemas.safety import SafetyFinding, SafetySpan
from streams.safety.injection import scan_injection
from streams.safety.pii import scan_pii
from streams.safety.policy import Action, SafetyPolicy
from streams.safety.redact import redact
from streams.safety.toxicity import scan_toxicity

__all__ = ["DEFAULT_POLICY", "PII_CONFIDENCE", "ScanResult", "scan"]

DEFAULT_POLICY: Final[SafetyPolicy] = SafetyPolicy()

# How sure a hit of each kind is PII: checksum/structure-validated kinds 1.0, looser ones less.
PII_CONFIDENCE: Final[dict[str, float]] = {
    "private_key": 1.0, "jwt": 1.0, "aws_access_key": 1.0, "github_token": 1.0, "slack_token": 1.0,
    "openai_key": 0.95, "credit_card": 1.0, "iban": 1.0, "email": 0.95, "us_ssn": 0.9, "uk_nino": 0.9,
    "es_dni": 0.9, "ipv6": 0.85, "ipv4": 0.8, "generic_secret": 0.8, "phone": 0.75,
}


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What ``scan`` found and what to do about it."""

    findings: list[SafetyFinding] = field(default_factory=list)
    redacted_text: str | None = None
    blocked: bool = False


def scan(
    request_id: str,
    deployment_id: str | None,
    scanned: Literal["prompt", "completion"],
    text: str,
    policy: SafetyPolicy = DEFAULT_POLICY,
) -> ScanResult:
    """Scan ``text`` with all three scanners and apply ``policy``."""
    findings: list[SafetyFinding] = []
    to_redact: list[SafetySpan] = []
    blocked = False

    def add(category: Literal["pii", "prompt_injection", "toxicity"], score: float,
            spans: list[SafetySpan], action: Action) -> None:
        nonlocal blocked
        findings.append(SafetyFinding(
            request_id=request_id, deployment_id=deployment_id, scanned=scanned,
            category=category, score=score, spans=spans, action=action,
        ))
        if action != "flag":
            to_redact.extend(spans)
        if action == "block":
            blocked = True

    for span in scan_pii(text):
        add("pii", PII_CONFIDENCE.get(span.kind, 0.8), [span], policy.action_for("pii", span.kind))

    inj = scan_injection(text)
    if inj.spans and inj.score >= policy.injection_flag_threshold:
        action = policy.action_for("prompt_injection")
        if action == "block" and inj.score < policy.injection_block_threshold:
            action = "flag"
        add("prompt_injection", inj.score, inj.spans, action)

    tox = scan_toxicity(text)
    if tox.spans and tox.score >= policy.toxicity_min_score:
        add("toxicity", tox.score, tox.spans, policy.action_for("toxicity"))

    redacted = redact(text, to_redact) if to_redact else None
    return ScanResult(findings=findings, redacted_text=redacted, blocked=blocked)
