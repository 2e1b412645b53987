-- A result must not touch an index. targets_pending held `status`, which
-- every dispatch and result changes, so no update of a target was HOT and
-- each one inserted into every index of the table. The pending set is now
-- a generated column that only leaving PENDING changes, with the index over
-- pending rows alone: a result (RUNNING to a final status) changes no
-- indexed value and, with the room fillfactor leaves, stays on its page.
-- Adding a stored column rewrites the table once, under its lock.
ALTER TABLE targets ADD COLUMN pending BOOLEAN GENERATED ALWAYS AS (status = 1) STORED;
DROP INDEX targets_pending;
CREATE INDEX targets_pending ON targets (campaign_id, account_id, region, platform, instance_id) WHERE pending;
ALTER TABLE targets SET (fillfactor = 80);
