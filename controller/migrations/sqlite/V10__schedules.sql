-- Schedules: saved campaigns (each PutSchedule a new version) that start
-- at a time or on a cron schedule, the outcome of each run time, and the
-- schedule and maintenance window of the campaigns they start.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,          -- the current version
    next_run_ms INTEGER,               -- NULL: nothing left to run
    created_ms INTEGER NOT NULL
);
CREATE TABLE schedule_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    spec BLOB NOT NULL,                -- muster.v1.ScheduleSpec, protobuf
    owner TEXT NOT NULL,               -- who stored it: runs start as them
    owner_via TEXT NOT NULL,
    owner_arn TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE schedule_runs (
    name TEXT NOT NULL,
    scheduled_ms INTEGER NOT NULL,
    version INTEGER NOT NULL,
    outcome INTEGER NOT NULL,          -- muster.v1.RunOutcome
    campaign_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    recorded_ms INTEGER NOT NULL,
    PRIMARY KEY (name, scheduled_ms)
);
ALTER TABLE campaigns ADD COLUMN schedule_name TEXT NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN schedule_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN window_opened_ms INTEGER;
ALTER TABLE campaigns ADD COLUMN window_end_ms INTEGER;
ALTER TABLE campaigns ADD COLUMN window_on_end TEXT NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN window_after TEXT NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN window_cancelling INTEGER NOT NULL DEFAULT 0;
CREATE INDEX campaigns_schedule ON campaigns (schedule_name, created_ms);
