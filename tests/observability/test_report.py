"""`llmops rollout report`: the page's content from a rollout recorded by the judge's own row builder over traffic
that went through the stream worker; self-contained; and, where Debian's chromium is installed, it renders."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from datetime import datetime, timedelta
from html import unescape
from pathlib import Path

import pytest
from click.testing import CliRunner

from schemas.rollouts import GateResult, RolloutEvent
from services.cli.main import cli
from services.core.clickhouse.client import connect
from services.core.settings import Settings
from services.rollout.store import DECISION_COLUMNS, DECISIONS, command_row, decision_row
from tests.observability.traffic import Traffic

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _record_rollout(settings: Settings, traffic: Traffic, alias: str) -> tuple[datetime, datetime]:
    """A rollout of the traffic's canary: start, holds, a step up, holds, then a rollback on latency."""
    client = connect(settings)
    t0, t1 = client.query(
        "SELECT min(occurred_at), max(occurred_at) FROM raw_completions FINAL WHERE tenant_id = {t:String}",
        parameters={"t": traffic.tenant},
    ).result_rows[0]
    start, end = t0 - timedelta(seconds=5), t1 + timedelta(seconds=20)
    stable, canary = traffic.stable, traffic.canary

    def gates(i: int, failing: bool) -> list[GateResult]:
        ratio = 1.2 + 0.3 * i
        return [
            GateResult(gate="latency_p95", passed=not failing, observed=ratio, threshold=1.5, canary_samples=10 * i,
                       stable_samples=40 * i, detail=f"p95 ratio {ratio:.2f}",
                       status="rollback" if failing else "pending", canary_value=400.0 * ratio, stable_value=400.0),
            GateResult(gate="error_rate", passed=True, observed=0.01 * i, threshold=0.05, canary_samples=10 * i,
                       stable_samples=40 * i, status="within_margin", canary_value=0.01 * i + 0.01, stable_value=0.01),
        ]

    plan: list[tuple[str, int, dict[str, float], str, bool]] = [
        ("start", 0, {stable: 0.9, canary: 0.1}, "rollout started", False),
        ("hold", 0, {stable: 0.9, canary: 0.1}, "not enough samples yet", False),
        ("step_up", 1, {stable: 0.75, canary: 0.25}, "every gate passed: step up to 25%", False),
        ("hold", 1, {stable: 0.75, canary: 0.25}, "latency_p95 inconclusive", False),
        ("rollback", 1, {stable: 1.0, canary: 0.0}, "latency_p95: canary p95 2.4x stable (tolerance 1.5x)", True),
    ]
    rows = []
    for i, (action, step, weights, reason, failing) in enumerate(plan):
        at = start + (end - start) * i / (len(plan) - 1)
        event = RolloutEvent(alias=alias, rollout_id=f"r-{traffic.unique}", stable_deployment=stable,
                             canary_deployment=canary, action=action, step=step, weights=weights, reason=reason,
                             gates=[] if action == "start" else gates(i, failing), canary_requests=10 * i,
                             stable_requests=40 * i)
        rows.append(command_row(event, at) if action == "start" else decision_row(event, start, start, at))
    client.insert(DECISIONS, rows, column_names=DECISION_COLUMNS)
    return start, end


@pytest.fixture(scope="module")
def report_page(local_stack: Settings, traffic: Traffic, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    alias = f"chat-{traffic.unique}"
    _record_rollout(local_stack, traffic, alias)
    path = tmp_path_factory.mktemp("report") / "report.html"
    result = CliRunner().invoke(cli, ["rollout", "report", alias, "--html", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(path)
    return path, path.read_text(encoding="utf-8")


def test_report_tells_the_rollout(report_page: tuple[Path, str], traffic: Traffic) -> None:
    _, page = report_page
    outer = re.sub(r'srcdoc="[^"]*"', 'srcdoc=""', page)  # Evidently's embedded page, checked separately
    assert f"<title>Rollout report: chat-{traffic.unique} (rolled back)</title>" in outer
    assert traffic.canary in outer and traffic.stable in outer
    # Per gate: a chart with the threshold marked, and each decision marked with its reason.
    assert "Gate latency_p95: 1 of 4 decisions not passed" in outer
    assert "Gate error_rate: 0 of 4 decisions not passed" in outer
    # Both sides' values per gate (the judge records them), and the compared statistic against its threshold.
    assert "<title>canary</title>" in outer and "<title>stable</title>" in outer
    assert "threshold 1.5" in outer and "threshold 0.05" in outer
    assert "<td class=num>960</td><td class=num>400</td><td class=num>2.4</td><td class=num>1.5</td>" in outer
    assert outer.count("<g class=\"decision\">") >= 3 * 5  # start, step_up, rollback: weights, 2 charts per gate
    assert "rollback at" in outer and "latency_p95: canary p95 2.4x stable (tolerance 1.5x)" in outer
    # Weights over time, latency distributions of both sides (60 completions each, 3 errors left out), drift.
    assert "Traffic weights" in outer
    assert f"{traffic.stable} (stable) (n=57)" in outer and f"{traffic.canary} (canary) (n=57)" in outer
    assert "Drift share per check" in outer and "Latest check:" in outer
    assert "Decision log" in outer and outer.count("<tr><td>") >= 5
    # Self-contained: no script, nothing fetched (the SVG namespace is a name, not a fetch).
    assert "<script" not in outer
    assert not re.search(r'(src|href)="https?:', outer)
    assert set(re.findall(r"https?://[^\"'\s<]+", outer)) <= {"http://www.w3.org/2000/svg"}


def test_report_embeds_evidently(report_page: tuple[Path, str]) -> None:
    _, page = report_page
    (srcdoc,) = re.findall(r'<iframe title="Evidently data drift report" sandbox="allow-scripts" srcdoc="([^"]*)"', page)
    inner = unescape(srcdoc)
    assert inner.lstrip().lower().startswith("<!doctype html") or "<html" in inner[:500].lower()
    assert "total_ms" in inner and "finish_reason" in inner
    assert not re.search(r'<script[^>]+src="https?:', inner), "Evidently's page loads nothing from the network"


def _png_pixels(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG (enough to tell a blank page from a drawn one)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(png):
        (length,), kind = struct.unpack(">I", png[pos:pos + 4]), png[pos + 4:pos + 8]
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", data[:8])
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make tools installs it)")
def test_report_renders_in_chromium(report_page: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = report_page
    shot = tmp_path / "report.png"
    common = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1100,1800", path.as_uri()],
                   check=True, capture_output=True, timeout=120)
    width, height, pixels = _png_pixels(shot.read_bytes())
    assert (width, height) == (1100, 1800)
    # Not blank: a drawn page has many distinct byte values and far from all-white rows.
    assert len(set(pixels)) > 50
    assert pixels.count(255) / len(pixels) < 0.97
    dom = subprocess.run([*common, "--dump-dom", path.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    assert "<title>Rollout report: chat-" in dom and "Traffic weights" in dom
