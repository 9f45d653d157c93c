"""Session fixtures: one real local broker and one real ClickHouse server for the whole test run.

Both start once on free ports under a temporary data directory, with the catalog's topics created
and the migrations applied, and stop at the end. Set LLMOPS_KAFKA_BOOTSTRAP / LLMOPS_CLICKHOUSE_URL to
run the suite against external servers instead (they are then used, never started or stopped).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from services.core.clickhouse.migrations import migrate
from services.core.kafka.admin import ensure_topics
from services.core.settings import Settings
from services.infra.process import free_port
from services.infra.stack import LocalStack


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a running broker and ClickHouse, topics created, migrations applied.

    The process environment is set to match, so subprocesses (workers, Ray actors) see the same stack.
    """
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("llmops"),
        broker_port=free_port(),
        clickhouse_http_port=free_port(),
        clickhouse_tcp_port=free_port(),
        clickhouse_database="llmops_test",
    )
    stack = LocalStack(settings)
    stack.up()
    env = settings.to_env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        ensure_topics(settings)
        migrate(settings)
        yield settings
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stack.down()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and tenant names, so tests never see each other's data."""
    return uuid.uuid4().hex[:10]
