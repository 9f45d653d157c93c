"""A real install: build the wheel, install it into a fresh virtual environment, and run the stack from elsewhere.

Nothing of the source tree is on the path: the commands run from a temporary directory, so every default
(migrations, prices, policies, specs) must come from the installed package data. This test installs the
dependencies into the new environment (from pip's cache or the index), so it takes a few minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from services.infra.process import free_port

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{out[-4000:]}"
    return out


@pytest.mark.timeout(1800)
def test_wheel_installs_and_runs_the_stack_without_the_source_tree(tmp_path: Path) -> None:
    # Build from a copy of the tracked files, so nothing untracked (or a stale build/) can end up in the wheel.
    src = tmp_path / "src"
    for name in subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(src)], src, dict(os.environ))
    wheels = sorted(dist.glob("llmops_stream-*.whl"))
    assert len(wheels) == 1, wheels

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PIP_DISABLE_PIP_VERSION_CHECK="1")
    _run([str(bin_dir / "pip"), "install", "--quiet", str(wheels[0])], work, env)

    # The installed package, not this checkout, answers.
    where = _run([str(bin_dir / "python"), "-c", "import services, streams, schemas; print(services.__file__)"], work, env)
    assert str(env_dir) in where and str(ROOT) not in where

    env.update(
        LLMOPS_DATA_DIR=str(work / "data"), LLMOPS_BROKER_PORT=str(free_port()),
        LLMOPS_CLICKHOUSE_HTTP_PORT=str(free_port()), LLMOPS_CLICKHOUSE_TCP_PORT=str(free_port()),
    )
    llmops = str(bin_dir / "llmops")
    try:
        _run([llmops, "infra", "up"], work, env)
        assert "created" in _run([llmops, "topics", "create"], work, env)
        assert "applied 0001_raw_requests.sql" in _run([llmops, "migrate"], work, env)
        assert "up to date" in _run([llmops, "migrate"], work, env)
        smoke = _run([llmops, "smoke", "--events", "5", "--keep-running"], work, env)
        assert "consumed 15 events of this run" in smoke, smoke
        assert "raw_completions  5 rows" in smoke, smoke
        specs = _run([str(bin_dir / "python"), "-c", "from services.inference.spec import shipped_specs; print(shipped_specs())"],
                     work, env)
        assert "smollm2-cpu" in specs
    finally:
        subprocess.run([llmops, "infra", "down"], cwd=work, env=env, capture_output=True, timeout=120, check=False)
