-- A campaign's discovery cost the writer O(scopes^2): every scope's
-- hand-off read the whole campaign (BENCHMARKS.md, "What a discovery
-- costs"). The same on both engines.

-- One scope's tasks (a hand-off, a lease's share of its scope's rate, the
-- release of one scope's batches) read through an index of their own, not
-- every queued or leased task of the campaign. (Built under the table's
-- lock: writes wait for it, once, during the deploy that migrates.)
CREATE INDEX tasks_scope_state ON tasks (campaign_id, account_id, region, state);
-- The scopes that could not be discovered, counted on every hand-off.
CREATE INDEX scopes_state ON scopes (campaign_id, state);

-- A campaign's targets by status, in one row per status: the sum of its
-- `counters`, kept by the trigger below on every change to them, whoever
-- writes it (a controller of the previous release during a rolling
-- deploy, copy-store, retention). Derived: copy-store does not copy it.
-- Every write transaction holds the store's write lock, so the rows that
-- every report now updates are never contended.
CREATE TABLE campaign_counters (
    campaign_id TEXT COLLATE "C" NOT NULL,
    status BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, status)
);
INSERT INTO campaign_counters (campaign_id, status, count)
    SELECT campaign_id, status, SUM(count) FROM counters GROUP BY campaign_id, status;
-- Each change adds to its campaign's row, creating it if need be: an
-- upsert, never a bare UPDATE that would lose a change to a missing row.
CREATE FUNCTION muster_campaign_counters() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.campaign_id = OLD.campaign_id AND NEW.status = OLD.status THEN
        -- A report's change: one statement.
        INSERT INTO campaign_counters (campaign_id, status, count)
            VALUES (NEW.campaign_id, NEW.status, NEW.count - OLD.count)
            ON CONFLICT (campaign_id, status) DO UPDATE SET count = campaign_counters.count + excluded.count;
        RETURN NULL;
    END IF;
    -- Otherwise the old row's count leaves its sum and the new row's joins
    -- its own.
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO campaign_counters (campaign_id, status, count) VALUES (OLD.campaign_id, OLD.status, -OLD.count)
            ON CONFLICT (campaign_id, status) DO UPDATE SET count = campaign_counters.count + excluded.count;
        -- A sum that came to 0 goes: a campaign's rows deleted (retention,
        -- by a controller of any release) take its sums with them.
        DELETE FROM campaign_counters WHERE campaign_id = OLD.campaign_id AND status = OLD.status AND count = 0;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO campaign_counters (campaign_id, status, count) VALUES (NEW.campaign_id, NEW.status, NEW.count)
            ON CONFLICT (campaign_id, status) DO UPDATE SET count = campaign_counters.count + excluded.count;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER counters_campaign_counters AFTER INSERT OR UPDATE OR DELETE ON counters
    FOR EACH ROW EXECUTE FUNCTION muster_campaign_counters();
