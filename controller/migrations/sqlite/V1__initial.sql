-- Campaigns, scopes, tasks, leases, targets, dispatches, counters, events.
CREATE TABLE campaigns (
    id TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    submitted_by TEXT NOT NULL,
    client_token TEXT NOT NULL,
    spec BLOB NOT NULL,                 -- muster.v1.CampaignSpec, protobuf
    spec_sha256 TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    state INTEGER NOT NULL,             -- muster.v1.CampaignState
    state_reason TEXT NOT NULL DEFAULT '',
    started_ms INTEGER,
    finished_ms INTEGER,
    eligible INTEGER NOT NULL DEFAULT 0,        -- targets that may run
    concurrency_limit INTEGER NOT NULL DEFAULT 0,
    error_threshold INTEGER,                    -- NULL: unlimited
    errors INTEGER NOT NULL DEFAULT 0,          -- as SSM counts them
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    export_url TEXT NOT NULL DEFAULT '',
    exported_ms INTEGER,
    export_error TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX campaigns_client_token ON campaigns (submitted_by, client_token) WHERE client_token != '';
CREATE INDEX campaigns_created ON campaigns (created_ms DESC, id DESC);
CREATE INDEX campaigns_state ON campaigns (state);

CREATE TABLE scopes (
    campaign_id TEXT NOT NULL REFERENCES campaigns (id),
    account_id TEXT NOT NULL,
    region TEXT NOT NULL,
    state INTEGER NOT NULL,             -- muster.v1.ScopeState
    error TEXT NOT NULL DEFAULT '',
    managed INTEGER NOT NULL DEFAULT 0,
    offline INTEGER NOT NULL DEFAULT 0,
    unmanaged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, account_id, region)
);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    campaign_id TEXT NOT NULL REFERENCES campaigns (id),
    kind INTEGER NOT NULL,              -- muster.v1.TaskKind
    account_id TEXT NOT NULL,
    region TEXT NOT NULL,
    platform INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL,             -- see tasks.rs
    attempt INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    enqueued_attempt INTEGER NOT NULL DEFAULT 0,
    lease_id INTEGER,
    lease_owner TEXT,
    lease_expires_ms INTEGER,
    created_ms INTEGER NOT NULL,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX tasks_campaign_state ON tasks (campaign_id, state);
CREATE INDEX tasks_state_expiry ON tasks (state, lease_expires_ms);
CREATE INDEX tasks_enqueue ON tasks (state, enqueued_attempt, attempt);

CREATE TABLE leases (
    lease_id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks (id),
    attempt INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    granted_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    outcome TEXT NOT NULL DEFAULT ''
);
CREATE INDEX leases_task ON leases (task_id);

CREATE TABLE targets (
    campaign_id TEXT NOT NULL REFERENCES campaigns (id),
    account_id TEXT NOT NULL,
    region TEXT NOT NULL,
    instance_id TEXT NOT NULL,          -- '' for an undiscoverable scope
    name TEXT NOT NULL DEFAULT '',
    platform INTEGER NOT NULL DEFAULT 0,
    ping INTEGER NOT NULL DEFAULT 0,
    status INTEGER NOT NULL,            -- muster.v1.TargetStatus
    timeout_kind INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    task_id TEXT,
    command_id TEXT NOT NULL DEFAULT '',
    document_name TEXT NOT NULL DEFAULT '',
    ssm_status_details TEXT NOT NULL DEFAULT '',
    dispatched_ms INTEGER,
    started_ms INTEGER,
    finished_ms INTEGER,
    steps BLOB,                         -- muster.v1.StepOutput list, protobuf
    PRIMARY KEY (campaign_id, account_id, region, instance_id)
) WITHOUT ROWID;
CREATE INDEX targets_pending ON targets (campaign_id, status, account_id, region, platform, instance_id);
CREATE INDEX targets_task ON targets (task_id) WHERE task_id IS NOT NULL;

CREATE TABLE dispatches (
    task_id TEXT NOT NULL REFERENCES tasks (id),
    command_id TEXT NOT NULL,
    instance_ids TEXT NOT NULL,         -- JSON array
    sent_ms INTEGER,
    attempt INTEGER NOT NULL,
    adopted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, command_id)
);

-- Targets by (scope, status), kept in step with every status change so
-- that progress is O(scopes), not O(targets).
CREATE TABLE counters (
    campaign_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    region TEXT NOT NULL,
    status INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, account_id, region, status)
) WITHOUT ROWID;

-- Audit and lifecycle: who submitted, planned, cancelled what; state changes.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX events_campaign ON events (campaign_id, id);

CREATE TABLE sequences (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO sequences (name, value) VALUES ('lease_id', 0);
