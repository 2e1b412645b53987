-- A result's output (its steps, protobuf) in a rowid table of its own.
-- `targets` is WITHOUT ROWID: its rows live in an index b-tree, which keeps
-- at most about a quarter of a page of a row in place and gives the rest
-- at least one overflow page of its own, so a target with 1-4 KiB of
-- output took 1.7-3.8x that on disk and every scan of targets read it.
-- A result now writes its output here and the row's `output_id`; rows
-- written before keep theirs in `targets.steps`, and reads look in both.
CREATE TABLE outputs (
    id INTEGER PRIMARY KEY,
    steps BLOB NOT NULL
);
ALTER TABLE targets ADD COLUMN output_id INTEGER;
