"""Write one rollout's report page to a file (used by ``llmops rollout report`` and ``llmops demo``)."""

from __future__ import annotations

from pathlib import Path

from services.core.clickhouse.client import connect
from services.core.settings import Settings
from services.report.drift import evidently_html
from services.report.history import load_history
from services.report.page import render


def write_report(settings: Settings, alias: str, rollout_id: str | None = None, *, path: Path | None = None,
                 with_evidently: bool = True) -> Path:
    """Render the rollout's page (the latest rollout of ``alias`` by default) and write it; returns the file's path.

    Default path: ``LLMOPS_DATA_DIR/reports/rollout-ALIAS-ROLLOUT.html``. Raises
    :class:`services.report.history.NoRollout` when there is nothing to report.
    """
    client = connect(settings)
    try:
        history = load_history(client, alias, rollout_id)
        drift = evidently_html(client, history) if with_evidently else None
    finally:
        client.close()
    path = path or settings.data_dir / "reports" / f"rollout-{alias}-{history.rollout_id}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(history, evidently_html=drift), encoding="utf-8")
    return path
