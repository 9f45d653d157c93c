"""Per-tenant safety policy: what to do (flag, redact or block) with each category of finding.

``SafetyPolicy`` holds an action per category, optional per-kind overrides (e.g. block on a
``private_key`` while only redacting emails), the score thresholds, and whether the learned injection
layer may block on its own (by default it only flags). ``TenantPolicies``
maps tenants to policies with a default; in a file, a tenant's entry only lists what differs
from the default and inherits the rest. ``load_policies`` reads YAML (``.yaml``/``.yml``) or
JSON (anything else).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.safety import SafetyCategory
from streams.safety.injection import BLOCK_THRESHOLD, FLAG_THRESHOLD

__all__ = ["Action", "SafetyPolicy", "TenantPolicies", "load_policies"]

Action = Literal["flag", "redact", "block"]


class SafetyPolicy(BaseModel):
    """One tenant's policy. The defaults redact PII and flag injection and toxicity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pii: Action = "redact"
    prompt_injection: Action = "flag"
    toxicity: Action = "flag"
    kind_actions: dict[str, Action] = Field(
        default_factory=dict, description="Per span kind overrides, e.g. {'private_key': 'block'}."
    )
    injection_flag_threshold: float = Field(default=FLAG_THRESHOLD, ge=0.0, le=1.0)
    injection_block_threshold: float = Field(
        default=BLOCK_THRESHOLD, ge=0.0, le=1.0,
        description="A 'block' action on injection applies only at or above this score; below it the finding is flagged.",
    )
    toxicity_min_score: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Toxicity findings below this are dropped (the classifier's own boundary, 0.5, always applies).",
    )
    learned_injection_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="The learned injection layer flags at or above this score; None: the threshold shipped with its model.",
    )
    learned_injection_blocks: bool = Field(
        default=False,
        description="Whether a learned-layer flag alone may block (when prompt_injection is 'block'); by default it only flags.",
    )

    def action_for(self, category: SafetyCategory, kind: str | None = None) -> Action:
        """The action for a finding of ``category`` (and span ``kind``, when overridden)."""
        if kind is not None and kind in self.kind_actions:
            return self.kind_actions[kind]
        action: Action = getattr(self, category)
        return action


class TenantPolicies(BaseModel):
    """Tenant -> policy, with a default for every tenant not listed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: SafetyPolicy = Field(default_factory=SafetyPolicy)
    tenants: dict[str, SafetyPolicy] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _inherit_default(cls, data: Any) -> Any:
        """Tenant entries given as mappings are merged over the default's mapping."""
        if not isinstance(data, dict):
            return data
        default = data.get("default") or {}
        if isinstance(default, SafetyPolicy):
            default = default.model_dump()
        tenants = data.get("tenants") or {}
        if not isinstance(default, dict) or not isinstance(tenants, dict):
            return data
        merged: dict[str, Any] = {}
        for name, entry in tenants.items():
            if isinstance(entry, dict):
                combined = {**default, **entry}
                if isinstance(default.get("kind_actions"), dict) and isinstance(entry.get("kind_actions"), dict):
                    combined["kind_actions"] = {**default["kind_actions"], **entry["kind_actions"]}
                merged[name] = combined
            else:
                merged[name] = entry
        return {**data, "tenants": merged}

    def for_tenant(self, tenant: str | None) -> SafetyPolicy:
        """The tenant's policy, or the default."""
        if tenant is None:
            return self.default
        return self.tenants.get(tenant, self.default)


def load_policies(path: str | Path) -> TenantPolicies:
    """Read ``TenantPolicies`` from a YAML or JSON file (validation errors propagate)."""
    p = Path(path)
    raw_text = p.read_text(encoding="utf-8")
    raw = yaml.safe_load(raw_text) if p.suffix.lower() in (".yaml", ".yml") else json.loads(raw_text)
    return TenantPolicies.model_validate(raw or {})
