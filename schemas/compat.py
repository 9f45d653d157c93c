"""JSON Schema export of every event, and a backward-compatibility check between two exports.

A change is incompatible for consumers when a field is removed, its type changes, or a new field is
required (old producers do not send it). New optional fields are compatible.
"""

from __future__ import annotations

from typing import Any

from schemas.envelope import Envelope
from schemas.registry import EVENT_TYPES

Schema = dict[str, Any]


def export_json_schemas() -> dict[str, Schema]:
    """File name -> JSON Schema of the envelope with its payload, for every registered event type."""
    out = {}
    for et in EVENT_TYPES.values():
        schema = Envelope[et.model].model_json_schema()  # type: ignore[name-defined]  # a run-time type argument
        schema["title"] = f"{et.name} v{et.version}"
        schema["x-event-type"] = et.name
        schema["x-schema-version"] = et.version
        out[f"{et.name}.v{et.version}.json"] = schema
    return out


def _resolve(node: Schema, root: Schema) -> Schema:
    while "$ref" in node:
        name = node["$ref"].split("/")[-1]
        node = root.get("$defs", {}).get(name, {})
    return node


def _type_signature(node: Schema, root: Schema) -> str:
    node = _resolve(node, root)
    if "anyOf" in node:
        return "|".join(sorted(_type_signature(n, root) for n in node["anyOf"]))
    if "enum" in node:
        return "enum"
    if "const" in node:
        return "const"
    t = node.get("type", "any")
    if t == "array":
        return f"array<{_type_signature(node.get('items', {}), root)}>"
    if t == "object" and "additionalProperties" in node and isinstance(node["additionalProperties"], dict):
        return f"map<{_type_signature(node['additionalProperties'], root)}>"
    return str(t)


def _enum_values(node: Schema, root: Schema) -> set[Any]:
    node = _resolve(node, root)
    if "anyOf" in node:
        return set().union(*(_enum_values(n, root) for n in node["anyOf"]))
    return set(node.get("enum", []))


def _fields(node: Schema, root: Schema, prefix: str, out: dict[str, tuple[str, bool, set[Any]]], depth: int = 0) -> None:
    node = _resolve(node, root)
    if depth > 12:
        return
    for variant in node.get("anyOf", []):
        _fields(variant, root, prefix, out, depth + 1)
    if node.get("type") == "array":
        _fields(node.get("items", {}), root, prefix + "[]", out, depth + 1)
    required = set(node.get("required", []))
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        out[path] = (_type_signature(prop, root), name in required, _enum_values(prop, root))
        _fields(prop, root, path, out, depth + 1)


def incompatibilities(old: Schema, new: Schema) -> list[str]:
    """Readable reasons why ``new`` cannot read what ``old`` producers wrote (empty: compatible)."""
    before: dict[str, tuple[str, bool, set[Any]]] = {}
    after: dict[str, tuple[str, bool, set[Any]]] = {}
    _fields(old, old, "", before)
    _fields(new, new, "", after)
    problems = []
    for path, (sig, _req, enum) in sorted(before.items()):
        if path not in after:
            problems.append(f"field '{path}' was removed")
            continue
        new_sig, _new_req, new_enum = after[path]
        if new_sig != sig:
            problems.append(f"field '{path}' changed type from {sig} to {new_sig}")
        elif enum - new_enum:
            problems.append(f"field '{path}' no longer accepts {sorted(map(str, enum - new_enum))}")
    for path, (_sig, req, _enum) in sorted(after.items()):
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        if path not in before and req and (parent == "" or parent in before):
            problems.append(f"new required field '{path}' (old producers do not send it); make it optional")
    return problems
