"""The ClickHouse server child process: chdb's embedded engine told to listen on HTTP and TCP.

Run as ``python clickhouse_child.py DATA_PATH`` with a ``config.xml`` (listen_host, http_port,
tcp_port) in the working directory. It serves until the long-running ``sleepEachRow`` query below is
killed (``KILL QUERY``), then exits 0. Imports nothing of the project so it starts fast.
"""

from __future__ import annotations

import sys

SERVE_QUERY = (
    "SELECT sleepEachRow(1) FROM numbers(1000000000) "
    "SETTINGS function_sleep_max_microseconds_per_block=0, max_block_size=1 FORMAT Null"
)


def main() -> int:
    import chdb._chdb as chdb_engine

    data_path = sys.argv[1]
    print(f"clickhouse: serving data at {data_path}", flush=True)
    try:
        chdb_engine.query(  # type: ignore[attr-defined]  # chdb's compiled module carries no type information for query()
            f"SYSTEM START LISTEN QUERIES ALL; {SERVE_QUERY}", "TabSeparated", path=data_path
        )
    except Exception as exc:  # noqa: BLE001 - a KILL QUERY ends the serving query with an exception
        if "QUERY_WAS_CANCELLED" not in str(exc) and "cancelled" not in str(exc).lower():
            print(f"clickhouse: stopped with error: {exc}", flush=True)
            return 1
    print("clickhouse: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
