-- PostgreSQL. Text compares byte by byte (COLLATE "C"), as in SQLite, so that
-- pages and cursors order the same on both engines.
-- Campaigns, scopes, tasks, leases, targets, dispatches, counters, events.
CREATE TABLE campaigns (
    id TEXT COLLATE "C" PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    submitted_by TEXT COLLATE "C" NOT NULL,
    client_token TEXT COLLATE "C" NOT NULL,
    spec BYTEA NOT NULL,                 -- muster.v1.CampaignSpec, protobuf
    spec_sha256 TEXT COLLATE "C" NOT NULL,
    dry_run BIGINT NOT NULL,
    state BIGINT NOT NULL,             -- muster.v1.CampaignState
    state_reason TEXT COLLATE "C" NOT NULL DEFAULT '',
    started_ms BIGINT,
    finished_ms BIGINT,
    eligible BIGINT NOT NULL DEFAULT 0,        -- targets that may run
    concurrency_limit BIGINT NOT NULL DEFAULT 0,
    error_threshold BIGINT,                    -- NULL: unlimited
    errors BIGINT NOT NULL DEFAULT 0,          -- as SSM counts them
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    export_url TEXT COLLATE "C" NOT NULL DEFAULT '',
    exported_ms BIGINT,
    export_error TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX campaigns_client_token ON campaigns (submitted_by, client_token) WHERE client_token != '';
CREATE INDEX campaigns_created ON campaigns (created_ms DESC, id DESC);
CREATE INDEX campaigns_state ON campaigns (state);

CREATE TABLE scopes (
    campaign_id TEXT COLLATE "C" NOT NULL REFERENCES campaigns (id),
    account_id TEXT COLLATE "C" NOT NULL,
    region TEXT COLLATE "C" NOT NULL,
    state BIGINT NOT NULL,             -- muster.v1.ScopeState
    error TEXT COLLATE "C" NOT NULL DEFAULT '',
    managed BIGINT NOT NULL DEFAULT 0,
    offline BIGINT NOT NULL DEFAULT 0,
    unmanaged BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, account_id, region)
);

CREATE TABLE tasks (
    id TEXT COLLATE "C" PRIMARY KEY,
    campaign_id TEXT COLLATE "C" NOT NULL REFERENCES campaigns (id),
    kind BIGINT NOT NULL,              -- muster.v1.TaskKind
    account_id TEXT COLLATE "C" NOT NULL,
    region TEXT COLLATE "C" NOT NULL,
    platform BIGINT NOT NULL DEFAULT 0,
    state BIGINT NOT NULL,             -- see tasks.rs
    attempt BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    enqueued_attempt BIGINT NOT NULL DEFAULT 0,
    lease_id BIGINT,
    lease_owner TEXT COLLATE "C",
    lease_expires_ms BIGINT,
    created_ms BIGINT NOT NULL,
    last_error TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX tasks_campaign_state ON tasks (campaign_id, state);
CREATE INDEX tasks_state_expiry ON tasks (state, lease_expires_ms);
CREATE INDEX tasks_enqueue ON tasks (state, enqueued_attempt, attempt);

CREATE TABLE leases (
    lease_id BIGINT PRIMARY KEY,
    task_id TEXT COLLATE "C" NOT NULL REFERENCES tasks (id),
    attempt BIGINT NOT NULL,
    worker_id TEXT COLLATE "C" NOT NULL,
    granted_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    outcome TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX leases_task ON leases (task_id);

CREATE TABLE targets (
    campaign_id TEXT COLLATE "C" NOT NULL REFERENCES campaigns (id),
    account_id TEXT COLLATE "C" NOT NULL,
    region TEXT COLLATE "C" NOT NULL,
    instance_id TEXT COLLATE "C" NOT NULL,          -- '' for an undiscoverable scope
    name TEXT COLLATE "C" NOT NULL DEFAULT '',
    platform BIGINT NOT NULL DEFAULT 0,
    ping BIGINT NOT NULL DEFAULT 0,
    status BIGINT NOT NULL,            -- muster.v1.TargetStatus
    timeout_kind BIGINT NOT NULL DEFAULT 0,
    exit_code BIGINT,
    reason TEXT COLLATE "C" NOT NULL DEFAULT '',
    task_id TEXT COLLATE "C",
    command_id TEXT COLLATE "C" NOT NULL DEFAULT '',
    document_name TEXT COLLATE "C" NOT NULL DEFAULT '',
    ssm_status_details TEXT COLLATE "C" NOT NULL DEFAULT '',
    dispatched_ms BIGINT,
    started_ms BIGINT,
    finished_ms BIGINT,
    steps BYTEA,                         -- muster.v1.StepOutput list, protobuf
    PRIMARY KEY (campaign_id, account_id, region, instance_id)
);
CREATE INDEX targets_pending ON targets (campaign_id, status, account_id, region, platform, instance_id);
CREATE INDEX targets_task ON targets (task_id) WHERE task_id IS NOT NULL;

CREATE TABLE dispatches (
    task_id TEXT COLLATE "C" NOT NULL REFERENCES tasks (id),
    command_id TEXT COLLATE "C" NOT NULL,
    instance_ids TEXT COLLATE "C" NOT NULL,         -- JSON array
    sent_ms BIGINT,
    attempt BIGINT NOT NULL,
    adopted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, command_id)
);

-- Targets by (scope, status), kept in step with every status change so
-- that progress is O(scopes), not O(targets).
CREATE TABLE counters (
    campaign_id TEXT COLLATE "C" NOT NULL,
    account_id TEXT COLLATE "C" NOT NULL,
    region TEXT COLLATE "C" NOT NULL,
    status BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, account_id, region, status)
);

-- Audit and lifecycle: who submitted, planned, cancelled what; state changes.
CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id TEXT COLLATE "C" NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    detail TEXT COLLATE "C" NOT NULL
);
CREATE INDEX events_campaign ON events (campaign_id, id);

CREATE TABLE sequences (
    name TEXT COLLATE "C" PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO sequences (name, value) VALUES ('lease_id', 0);
