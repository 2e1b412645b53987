-- A campaign's discovery cost the writer O(scopes^2): every scope's
-- hand-off read the whole campaign (BENCHMARKS.md, "What a discovery
-- costs"). The same on both engines.

-- One scope's tasks (a hand-off, a lease's share of its scope's rate, the
-- release of one scope's batches) read through an index of their own, not
-- every queued or leased task of the campaign.
CREATE INDEX tasks_scope_state ON tasks (campaign_id, account_id, region, state);
-- The scopes that could not be discovered, counted on every hand-off.
CREATE INDEX scopes_state ON scopes (campaign_id, state);

-- A campaign's targets by status, in one row per status: the sum of its
-- `counters`, kept by the triggers below on every change to them, whoever
-- writes it (a controller of the previous release during a rolling
-- deploy, copy-store, retention). Derived: copy-store does not copy it.
CREATE TABLE campaign_counters (
    campaign_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, status)
) WITHOUT ROWID;
INSERT INTO campaign_counters (campaign_id, status, count)
    SELECT campaign_id, status, SUM(count) FROM counters GROUP BY campaign_id, status;
-- Each change adds to its campaign's row, creating it if need be: an
-- upsert, never a bare UPDATE that would lose a change to a missing row.
CREATE TRIGGER counters_insert AFTER INSERT ON counters BEGIN
    INSERT INTO campaign_counters (campaign_id, status, count) VALUES (NEW.campaign_id, NEW.status, NEW.count)
        ON CONFLICT (campaign_id, status) DO UPDATE SET count = count + excluded.count;
END;
-- A report's change: one statement.
CREATE TRIGGER counters_update AFTER UPDATE ON counters
WHEN NEW.campaign_id = OLD.campaign_id AND NEW.status = OLD.status BEGIN
    INSERT INTO campaign_counters (campaign_id, status, count) VALUES (NEW.campaign_id, NEW.status, NEW.count - OLD.count)
        ON CONFLICT (campaign_id, status) DO UPDATE SET count = count + excluded.count;
END;
CREATE TRIGGER counters_rekey AFTER UPDATE ON counters
WHEN NEW.campaign_id <> OLD.campaign_id OR NEW.status <> OLD.status BEGIN
    INSERT INTO campaign_counters (campaign_id, status, count) VALUES (OLD.campaign_id, OLD.status, -OLD.count)
        ON CONFLICT (campaign_id, status) DO UPDATE SET count = count + excluded.count;
    INSERT INTO campaign_counters (campaign_id, status, count) VALUES (NEW.campaign_id, NEW.status, NEW.count)
        ON CONFLICT (campaign_id, status) DO UPDATE SET count = count + excluded.count;
    DELETE FROM campaign_counters WHERE campaign_id = OLD.campaign_id AND status = OLD.status AND count = 0;
END;
-- A campaign's rows deleted (retention, by a controller of any release)
-- take its sums with them.
CREATE TRIGGER counters_delete AFTER DELETE ON counters BEGIN
    INSERT INTO campaign_counters (campaign_id, status, count) VALUES (OLD.campaign_id, OLD.status, -OLD.count)
        ON CONFLICT (campaign_id, status) DO UPDATE SET count = count + excluded.count;
    DELETE FROM campaign_counters WHERE campaign_id = OLD.campaign_id AND status = OLD.status AND count = 0;
END;
