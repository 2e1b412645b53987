#!/usr/bin/env python3
"""What a target's output costs in SQLite's `targets` table, by page size.

`targets` is a WITHOUT ROWID table: its rows live in an index b-tree, which
keeps at most about a quarter of a page of a row on the page itself and
puts the rest in overflow pages of their own. This builds the table as the
controller's migrations do (the columns that matter here), dispatches
10,000 targets, then records a result with `OUTPUT` bytes of output for
each, 512 per transaction (the store's group commit), with WAL and
synchronous=FULL as the store opens it. It prints the file's bytes per
target and the results per second for 4 KiB and 16 KiB pages, with and
without ROWID, for several output sizes. Compare within a run.

    python3 deploy/local/sqlite_page_sizes.py
"""

import os
import sqlite3
import tempfile
import time

TARGETS = 10_000
GROUP = 512
OUTPUTS = (300, 1024, 2600, 8192, 16384)
LAYOUTS = ((4096, "WITHOUT ROWID"), (16384, "WITHOUT ROWID"), (4096, ""), (16384, ""))


def run(path, page_size, without_rowid, output_bytes):
    """Bytes per target and results per second for one layout."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA page_size = {page_size}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute(
        "CREATE TABLE targets (campaign_id TEXT NOT NULL, account_id TEXT NOT NULL, region TEXT NOT NULL, "
        "instance_id TEXT NOT NULL, name TEXT NOT NULL DEFAULT '', status INTEGER NOT NULL, "
        "reason TEXT NOT NULL DEFAULT '', task_id TEXT, command_id TEXT NOT NULL DEFAULT '', steps BLOB, "
        f"PRIMARY KEY (campaign_id, account_id, region, instance_id)) {without_rowid}"
    )
    instances = [f"i-{i:017x}" for i in range(TARGETS)]
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO targets (campaign_id, account_id, region, instance_id, name, status) "
        "VALUES ('c1', '111111111111', 'us-east-1', ?, 'web', 1)",
        [(i,) for i in instances],
    )
    db.execute("COMMIT")
    output = b"y" * output_bytes
    started = time.perf_counter()
    for start in range(0, TARGETS, GROUP):
        db.execute("BEGIN")
        db.executemany(
            "UPDATE targets SET status = 3, reason = 'exit code 0', command_id = 'cmd', steps = ? "
            "WHERE campaign_id = 'c1' AND account_id = '111111111111' AND region = 'us-east-1' "
            "AND instance_id = ?",
            [(output, i) for i in instances[start : start + GROUP]],
        )
        db.execute("COMMIT")
    seconds = time.perf_counter() - started
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(path)
    db.close()
    return size / TARGETS, TARGETS / seconds


def main():
    names = [f"{page // 1024} KiB {'w/o rowid' if wr else 'rowid'}" for page, wr in LAYOUTS]
    print("| output | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(LAYOUTS))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "targets.db")
        for output_bytes in OUTPUTS:
            cells = []
            for page_size, without_rowid in LAYOUTS:
                per_target, rate = run(path, page_size, without_rowid, output_bytes)
                cells.append(f"{per_target:,.0f} B, {rate:,.0f}/s")
            print(f"| {output_bytes:,} B | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
