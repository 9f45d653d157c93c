"""The local stack's process management: clear errors, PID safety, stop only what we started."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli.main import cli
from services.core.settings import Settings
from services.infra.broker import LocalBroker
from services.infra.clickhouse_server import LocalClickHouse
from services.infra.process import InfraError, ManagedProcess, free_port
from services.infra.stack import LocalStack


def test_port_taken_gives_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = Settings(data_dir=tmp_path, broker_port=port)
        with pytest.raises(InfraError, match=rf"port 127.0.0.1:{port} is taken.*LLMOPS_BROKER_PORT"):
            LocalBroker(settings).start()
        settings = Settings(data_dir=tmp_path, clickhouse_http_port=port, clickhouse_tcp_port=free_port())
        with pytest.raises(InfraError, match="LLMOPS_CLICKHOUSE_HTTP_PORT"):
            LocalClickHouse(settings).start()


def test_stale_pid_file_never_kills_another_process(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc = ManagedProcess("broker", tmp_path / "run")
        proc.run_dir.mkdir(parents=True)
        # A PID file naming a live process that we did not start (its start time differs).
        proc.pid_file.write_text(json.dumps({"pid": other.pid, "start_time": "1", "argv": ["tansu"]}))
        assert proc.recorded_pid() is None
        assert not proc.pid_file.exists()
        assert LocalStack(Settings(data_dir=tmp_path)).down() == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_server_that_dies_at_start_points_at_its_log(tmp_path: Path) -> None:
    proc = ManagedProcess("doomed", tmp_path / "run")
    proc.start([sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"], cwd=tmp_path)
    with pytest.raises(InfraError, match=r"doomed exited during start-up; see .*doomed\.log:\n.*boom: bad config"):
        proc.wait_healthy(lambda: False, timeout_s=10)


def test_up_status_down_cycle_with_the_cli(tmp_path: Path) -> None:
    env = {
        "LLMOPS_DATA_DIR": str(tmp_path / "stack"),
        "LLMOPS_BROKER_PORT": str(free_port()),
        "LLMOPS_CLICKHOUSE_HTTP_PORT": str(free_port()),
        "LLMOPS_CLICKHOUSE_TCP_PORT": str(free_port()),
    }
    runner = CliRunner()
    try:
        up = runner.invoke(cli, ["infra", "up"], obj={}, env=env)
        assert up.exit_code == 0, up.output
        assert [line.split()[1] for line in up.output.splitlines()] == ["up", "up"]
        again = runner.invoke(cli, ["infra", "up"], obj={}, env=env)  # idempotent
        assert again.exit_code == 0, again.output
        st = runner.invoke(cli, ["infra", "status"], obj={}, env=env)
        assert st.exit_code == 0 and "clickhouse" in st.output and "broker" in st.output
    finally:
        down = runner.invoke(cli, ["infra", "down"], obj={}, env=env)
    assert down.exit_code == 0 and "clickhouse" in down.output and "broker" in down.output
    st = runner.invoke(cli, ["infra", "status"], obj={}, env=env)
    states = [line.split()[1] for line in st.output.splitlines()]
    assert st.exit_code == 1 and states == ["down", "down"]
    assert runner.invoke(cli, ["infra", "down"], obj={}, env=env).output.strip() == "nothing was running"


def test_clickhouse_keeps_data_across_restarts(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, clickhouse_http_port=free_port(), clickhouse_tcp_port=free_port())
    server = LocalClickHouse(settings)
    from services.core.clickhouse.client import connect

    server.start()
    try:
        connect(settings, database=None).command("CREATE TABLE default.keep (a UInt8) ENGINE = MergeTree ORDER BY a")
        connect(settings, database=None).command("INSERT INTO default.keep VALUES (7)")
    finally:
        t0 = time.monotonic()
        assert server.stop()
        assert time.monotonic() - t0 < 5, "KILL QUERY should stop the server promptly"
    server.start()
    try:
        assert connect(settings, database=None).query("SELECT a FROM default.keep").result_rows == [(7,)]
    finally:
        server.stop()


@pytest.mark.parametrize(
    "args",
    [[], ["infra"], ["infra", "up"], ["infra", "down"], ["infra", "status"], ["topics"], ["topics", "create"],
     ["topics", "list"], ["migrate"], ["schemas"], ["schemas", "export"], ["smoke"], ["serve"], ["router"], ["streams"],
     ["notify"], ["rollout"],
     ["rollout", "start"], ["rollout", "status"], ["rollout", "abort"], ["rollout", "judge"]],
    ids=lambda a: " ".join(a) or "llmops",
)
def test_every_command_explains_itself(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"], obj={})
    assert result.exit_code == 0
    assert "Usage: " in result.output
    doc_lines = [ln for ln in result.output.splitlines()[1:] if ln.strip() and not ln.startswith("Usage")]
    assert len(doc_lines) >= 2
