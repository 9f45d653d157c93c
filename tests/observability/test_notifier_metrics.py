"""The notifier's metrics after real alerts: deliveries per sink and outcome, records processed and dead letters."""

from __future__ import annotations

import io

from services.core import metrics
from services.core.settings import Settings
from tests.notifier.helpers import Reply, alert_event, receiver, wait_until
from tests.notifier.test_service import Running, _config, _publish, _topics
from tests.observability.scrape import Scrape


async def test_notifier_metrics_move(local_stack: Settings, unique: str) -> None:
    topics = _topics(local_stack, unique)
    events = [alert_event(f"obs-{unique}-{i}", "budget", "critical") for i in range(3)]
    before = Scrape(metrics.exposition().decode())
    with receiver(lambda path, key, nth: Reply(200) if path == "/ok" else Reply(404)) as rx:
        config = _config(unique, [{"name": f"ok-{unique}", "url": rx.url("/ok")},
                                  {"name": f"gone-{unique}", "url": rx.url("/gone")}], console=True)
        _publish(local_stack, topics.alerts, [*events, b"not json"])
        async with Running(local_stack, config, topics, console=io.StringIO()) as notifier:
            await wait_until(lambda: notifier.stats.consumer.committed.get(f"{topics.alerts}/0") == 4, 30, "4 committed")
    after = Scrape(metrics.exposition().decode())

    def moved(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    assert moved("llmops_alert_deliveries_total", sink=f"ok-{unique}", outcome="delivered") == 3
    assert moved("llmops_alert_deliveries_total", sink=f"gone-{unique}", outcome="rejected") == 3
    assert moved("llmops_alert_deliveries_total", sink="<console>", outcome="delivered") == 3
    group = f"notify.{unique}"
    assert moved("llmops_events_processed_total", service=group, topic=topics.alerts) == 4
    assert moved("llmops_dead_letters_total", service=group, topic=topics.alerts, reason="not_json") == 1
