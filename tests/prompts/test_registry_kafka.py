"""The prompt registry on the real broker: push/label/show/diff round trip, concurrent pushes, the ClickHouse mirror."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from click.testing import CliRunner

from services.cli.main import cli
from services.core.clickhouse.client import connect
from services.core.settings import Settings
from services.prompts.definition import PromptDefinition
from services.prompts.mirror import PromptMirror
from services.prompts.store import PromptFollower, push, read_registry, wait_ready
from tests.streams.helpers import wait_until


def write_prompt(path: Path, name: str, user: str = "Summarize in {{ words }} words: {{ text }}") -> Path:
    path.write_text(yaml.safe_dump({
        "name": name, "model_alias": "chat",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": user}],
        "variables": [{"name": "text"}, {"name": "words", "type": "integer", "default": "40"}],
        "params": {"temperature": 0, "max_tokens": 64},
    }))
    return path


def test_cli_round_trip(local_stack: Settings, unique: str, tmp_path: Path) -> None:
    name = f"summarize-{unique}"
    runner = CliRunner()
    first = write_prompt(tmp_path / "v1.yaml", name)
    out = runner.invoke(cli, ["prompts", "push", str(first), "--label", "production"], catch_exceptions=False)
    assert out.exit_code == 0 and f"pushed {name}@1" in out.output and f"label production -> {name}@1" in out.output
    again = runner.invoke(cli, ["prompts", "push", str(first)], catch_exceptions=False)
    assert f"unchanged, already {name}@1" in again.output
    second = write_prompt(tmp_path / "v2.yaml", name, user="In {{ words }} words or fewer, summarize: {{ text }}")
    assert f"pushed {name}@2" in runner.invoke(cli, ["prompts", "push", str(second)], catch_exceptions=False).output

    listed = runner.invoke(cli, ["prompts", "list"], catch_exceptions=False).output
    assert any(line.split()[:2] == [name, "2"] and "production=1" in line for line in listed.splitlines())
    shown = runner.invoke(cli, ["prompts", "show", f"{name}@production"], catch_exceptions=False).output
    assert shown.startswith(f"# {name}@1  labels: production") and "Summarize in {{ words }}" in shown
    diff = runner.invoke(cli, ["prompts", "diff", f"{name}@1", "2"], catch_exceptions=False).output
    assert "-  content: 'Summarize in" in diff and "+  content: 'In {{ words }} words or fewer" in diff

    moved = runner.invoke(cli, ["prompts", "label", name, "2", "production"], catch_exceptions=False)
    assert moved.exit_code == 0
    registry = asyncio.run(read_registry(local_stack))
    assert registry.get(name, "production").version == 2

    bad = runner.invoke(cli, ["prompts", "label", name, "9", "staging"])
    assert bad.exit_code == 1 and "has no version 9" in bad.output
    missing = runner.invoke(cli, ["prompts", "show", f"{name}@staging"])
    assert missing.exit_code == 1 and "no label 'staging'" in missing.output


def test_push_rejects_undeclared_variables(local_stack: Settings, unique: str, tmp_path: Path) -> None:
    path = write_prompt(tmp_path / "bad.yaml", f"bad-{unique}", user="{{ text }} in {{ tone }}")
    out = CliRunner().invoke(cli, ["prompts", "push", str(path)])
    assert out.exit_code == 1 and "undeclared variables: tone" in out.output


def test_concurrent_pushes_get_distinct_numbers(local_stack: Settings, unique: str) -> None:
    name = f"race-{unique}"

    def definition(i: int) -> PromptDefinition:
        return PromptDefinition.model_validate({
            "name": name, "messages": [{"role": "user", "content": f"variant {i}: {{{{ text }}}}"}],
            "variables": [{"name": "text"}],
        })

    async def go() -> list[int]:
        results = await asyncio.gather(*(push(local_stack, definition(i)) for i in range(3)))
        return sorted(r.version.version for r in results)

    assert asyncio.run(go()) == [1, 2, 3]
    registry = asyncio.run(read_registry(local_stack))
    contents = {registry.get(name, str(n)).messages[0].content for n in (1, 2, 3)}
    assert contents == {f"variant {i}: {{{{ text }}}}" for i in range(3)}


def test_mirror_writes_versions_and_labels(local_stack: Settings, unique: str, tmp_path: Path) -> None:
    name = f"mirrored-{unique}"
    runner = CliRunner()
    runner.invoke(cli, ["prompts", "push", str(write_prompt(tmp_path / "p.yaml", name)), "--label", "staging"],
                  catch_exceptions=False)

    async def mirror_once() -> None:
        mirror = PromptMirror(local_stack, interval_s=0.2)
        follower = PromptFollower(local_stack, on_accepted=mirror.add)
        tasks = [asyncio.create_task(follower.run()), asyncio.create_task(mirror.run())]
        await wait_ready(follower, tasks[0], 30)
        follower.stop()
        mirror.stop()
        await asyncio.gather(*tasks)

    asyncio.run(mirror_once())
    client = connect(local_stack)
    rows = wait_until(lambda: client.query(
        "SELECT version, model_alias, JSONExtractString(params, 'max_tokens') FROM prompt_versions FINAL WHERE name = %(n)s",
        parameters={"n": name}).result_rows, 10, "mirrored version")
    assert [tuple(r) for r in rows] == [(1, "chat", "64")]
    labels = client.query("SELECT label, version FROM v_prompt_labels WHERE name = %(n)s", parameters={"n": name})
    assert [tuple(r) for r in labels.result_rows] == [("staging", 1)]
