"""A minimal Faust worker built with the guard rails, with failures injected by the records themselves.

``python -m tests.streams.faust_probe --topic T --group G --out DIR [--poison-handler ok|fatal]`` consumes ``T`` with
one :func:`services.core.faust_runtime.batch_agent`. The handler's side effect is a line ``partition offset`` per
record appended to ``DIR/stored`` (fsynced before it returns), unless a record's value asks for a failure:

* ``transient:N:ID`` -- the whole batch fails with a transient error the first N times it contains this record;
* ``poison:ID`` -- the batch fails with a ValueError whenever it contains this record (a poison record);
* ``stall:ID`` -- the batch fails transiently for ever (a sink that never comes back).

Poison records go to the poison handler: ``ok`` appends ``partition offset reason`` to ``DIR/dead``; ``fatal``
raises a non-transient error (the process must exit hard, committing nothing more).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import Counter
from pathlib import Path

import faust

from services.core.errors import Transient
from services.core.faust_runtime import BatchGuard, Record, batch_agent, make_app
from services.core.settings import Settings


def build(topic: str, group: str, out: Path, poison_handler: str) -> faust.App:
    app = make_app(group, Settings(), commit_interval_s=0.5)
    attempts: Counter[str] = Counter()

    def append(name: str, lines: list[str]) -> None:
        with (out / name).open("a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())

    async def handle(records: list[Record]) -> None:
        for r in records:
            value = (r.value or b"").decode()
            if value.startswith("transient:"):
                _, times, ident = value.split(":", 2)
                attempts[ident] += 1
                if attempts[ident] <= int(times):
                    raise Transient(f"injected transient failure {attempts[ident]}/{times} at {ident}")
            elif value.startswith("poison:"):
                raise ValueError(f"injected poison {value}")
            elif value.startswith("stall:"):
                raise Transient("injected stall")
        append("stored", [f"{r.partition} {r.offset}" for r in records])

    async def poison(record: Record, exc: BaseException) -> None:
        if poison_handler == "fatal":
            raise RuntimeError("injected: the dead-letter topic rejects everything")
        append("dead", [f"{record.partition} {record.offset} {type(exc).__name__}"])

    guard = BatchGuard("probe", handle, poison, retry_initial_s=0.05, retry_max_s=0.2)
    batch_agent(app, [topic], guard, batch_size=50, within_s=0.2)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--poison-handler", choices=["ok", "fatal"], default="ok")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    app = build(args.topic, args.group, args.out, args.poison_handler)
    faust.Worker(app, loglevel="INFO", redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
