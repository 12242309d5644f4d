#!/usr/bin/env python3
"""Benchmark (not a test): what SQLite alone costs per stored window, without the oracle.

    scripts/bench-sqlite-rows.py [--order per-node|interleaved] [--no-indexes] [--page-size N]

Inserts 51 200 rows shaped like the oracle's `windows` table after migration 13 (the same
columns, a 1 044-character JWS, the `(node_id, seq)` and `(node_id, job_id, seq)` indexes) into a
fresh database in WAL mode with synchronous=NORMAL, in transactions of 255 rows (the oracle's
average group commit under batched load), with a passive checkpoint every 16 transactions (the
oracle checkpoints every 250 ms). Prints the process CPU time per row, Python's own per-row
overhead (about 2 µs) included, so it is an upper bound of SQLite's share.

`per-node` (default) stores 64 nodes' windows 100 consecutive seqs at a time, as batch requests
of 100 windows arrive; `interleaved` stores one window of every node in turn, as one-window
requests of many nodes arrive. Pin it for stable figures: `taskset -c 0 scripts/…`.
"""

import argparse
import os
import sqlite3
import tempfile
import time
import uuid

NODES = 64
WINDOWS = 800
ROWS_PER_COMMIT = 255
COMMITS_PER_CHECKPOINT = 16
JWS_CHARS = 1044
TIMESTAMP = "2026-11-24T03:07:25.912449959+00:00"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--order", choices=["per-node", "interleaved"], default="per-node")
    parser.add_argument("--no-indexes", action="store_true")
    parser.add_argument("--page-size", type=int, default=4096)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(os.path.join(tmp, "rows.db"), isolation_level=None)
        db.execute(f"PRAGMA page_size={args.page_size}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE windows (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,"
            " node_id VARCHAR NOT NULL, seq INTEGER NOT NULL, job_id VARCHAR NULL,"
            " hash VARCHAR NOT NULL, jws TEXT NOT NULL, start_at TEXT NOT NULL,"
            " end_at TEXT NOT NULL, consumed_wh DOUBLE NOT NULL, solar_wh DOUBLE NOT NULL,"
            " is_final BOOLEAN NOT NULL, salt_length VARCHAR NOT NULL, received_at TEXT NOT NULL)"
        )
        if not args.no_indexes:
            db.execute("CREATE UNIQUE INDEX windows_node_seq ON windows (node_id, seq)")
            db.execute("CREATE INDEX windows_by_job ON windows (node_id, job_id, seq)")

        nodes = [str(uuid.uuid4()) for _ in range(NODES)]
        jws = ("eyJ" * JWS_CHARS)[:JWS_CHARS]
        rows = [
            (n, s, f"job-{n[:8]}", "h" * 43, jws, TIMESTAMP, TIMESTAMP, 1.0, 0.0, False,
             "digest", TIMESTAMP)
            for s in range(1, WINDOWS + 1)
            for n in nodes
        ]
        if args.order == "per-node":
            rows.sort(key=lambda r: ((r[1] - 1) // 100, r[0], r[1]))

        insert = (
            "INSERT INTO windows (node_id, seq, job_id, hash, jws, start_at, end_at,"
            " consumed_wh, solar_wh, is_final, salt_length, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        started = time.process_time()
        for commit, i in enumerate(range(0, len(rows), ROWS_PER_COMMIT)):
            db.execute("BEGIN")
            db.executemany(insert, rows[i : i + ROWS_PER_COMMIT])
            db.execute("COMMIT")
            if commit % COMMITS_PER_CHECKPOINT == 0:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        cpu = time.process_time() - started
        db.close()
    print(
        f"{len(rows)} rows, order {args.order}, indexes {not args.no_indexes}, "
        f"page size {args.page_size}: {cpu:.2f} s CPU, {cpu / len(rows) * 1e6:.1f} µs a row"
    )


if __name__ == "__main__":
    main()
