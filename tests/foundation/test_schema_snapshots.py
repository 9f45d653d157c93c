"""Event contracts against the committed JSON Schema snapshots in schemas/jsonschema/.

An incompatible change (removed or retyped field, new required field, dropped enum value) fails with
the reasons. A compatible change fails only the up-to-date check, which says how to refresh.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from click.testing import CliRunner

from schemas.compat import Schema, export_json_schemas, incompatibilities
from services.cli.main import cli

SNAPSHOTS = Path(__file__).resolve().parents[2] / "schemas" / "jsonschema"


def _snapshots() -> dict[str, Schema]:
    return {p.name: json.loads(p.read_text()) for p in SNAPSHOTS.glob("*.json")}


def test_no_incompatible_change_against_snapshots() -> None:
    current = export_json_schemas()
    snapshots = _snapshots()
    problems = []
    for name, old in snapshots.items():
        if name not in current:
            problems.append(f"{name}: event type/version no longer exported (consumers of it would break)")
            continue
        problems += [f"{name}: {p}" for p in incompatibilities(old, current[name])]
    assert not problems, "incompatible event contract changes:\n  " + "\n  ".join(problems)


def test_snapshots_are_up_to_date() -> None:
    current = {k: json.loads(json.dumps(v)) for k, v in export_json_schemas().items()}
    assert current == _snapshots(), "schemas changed compatibly: run `llmops schemas export schemas/jsonschema`"


def _request_schema() -> Schema:
    return copy.deepcopy(export_json_schemas()["inference.request.v1.json"])


def test_detects_removed_field() -> None:
    old = _request_schema()
    new = _request_schema()
    del new["$defs"]["InferenceRequest"]["properties"]["priority"]
    assert incompatibilities(old, new) == ["field 'payload.priority' was removed"]


def test_detects_retyped_field() -> None:
    old = _request_schema()
    new = _request_schema()
    new["$defs"]["GenerationParams"]["properties"]["max_tokens"] = {"type": "string"}
    assert incompatibilities(old, new) == ["field 'payload.params.max_tokens' changed type from integer to string"]


def test_detects_new_required_field_and_allows_new_optional() -> None:
    old = _request_schema()
    new = _request_schema()
    new["$defs"]["InferenceRequest"]["properties"]["region"] = {"type": "string"}
    assert incompatibilities(old, new) == []
    new["$defs"]["InferenceRequest"]["required"].append("region")
    assert incompatibilities(old, new) == [
        "new required field 'payload.region' (old producers do not send it); make it optional"
    ]


def test_detects_dropped_enum_value() -> None:
    old = copy.deepcopy(export_json_schemas()["inference.completion.v1.json"])
    new = copy.deepcopy(old)
    finish = new["$defs"]["Completion"]["properties"]["finish_reason"]
    finish["enum"] = [v for v in finish["enum"] if v != "deadline"]
    assert incompatibilities(old, new) == ["field 'payload.finish_reason' no longer accepts ['deadline']"]


def test_cli_export_writes_every_event(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["schemas", "export", str(tmp_path / "out")], obj={})
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(export_json_schemas())
