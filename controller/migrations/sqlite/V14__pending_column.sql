-- The pending set as a generated column, indexed over pending rows alone:
-- a result (RUNNING to a final status) no longer changes targets_pending.
-- The same numbers and queries as PostgreSQL's V14, where it makes result
-- writes HOT.
ALTER TABLE targets ADD COLUMN pending INTEGER GENERATED ALWAYS AS (status = 1) VIRTUAL;
DROP INDEX targets_pending;
CREATE INDEX targets_pending ON targets (campaign_id, account_id, region, platform, instance_id) WHERE pending;
