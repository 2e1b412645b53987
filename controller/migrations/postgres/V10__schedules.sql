-- Schedules: saved campaigns (each PutSchedule a new version) that start
-- at a time or on a cron schedule, the outcome of each run time, and the
-- schedule and maintenance window of the campaigns they start.
CREATE TABLE schedules (
    name TEXT COLLATE "C" PRIMARY KEY,
    version BIGINT NOT NULL,          -- the current version
    next_run_ms BIGINT,               -- NULL: nothing left to run
    created_ms BIGINT NOT NULL
);
CREATE TABLE schedule_versions (
    name TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    spec BYTEA NOT NULL,                -- muster.v1.ScheduleSpec, protobuf
    owner TEXT COLLATE "C" NOT NULL,               -- who stored it: runs start as them
    owner_via TEXT COLLATE "C" NOT NULL,
    owner_arn TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE schedule_runs (
    name TEXT COLLATE "C" NOT NULL,
    scheduled_ms BIGINT NOT NULL,
    version BIGINT NOT NULL,
    outcome BIGINT NOT NULL,          -- muster.v1.RunOutcome
    campaign_id TEXT COLLATE "C" NOT NULL,
    reason TEXT COLLATE "C" NOT NULL,
    recorded_ms BIGINT NOT NULL,
    PRIMARY KEY (name, scheduled_ms)
);
ALTER TABLE campaigns ADD COLUMN schedule_name TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN schedule_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN window_opened_ms BIGINT;
ALTER TABLE campaigns ADD COLUMN window_end_ms BIGINT;
ALTER TABLE campaigns ADD COLUMN window_on_end TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN window_after TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN window_cancelling BIGINT NOT NULL DEFAULT 0;
CREATE INDEX campaigns_schedule ON campaigns (schedule_name, created_ms);
