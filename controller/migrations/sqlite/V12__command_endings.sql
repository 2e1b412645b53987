-- Run Command's final statuses as its EventBridge events reported them
-- (the hub's command event queue), kept an hour: a worker waiting on a
-- command learns here that it ended, whichever controller read the event.
CREATE TABLE command_endings (
    command_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    account_id TEXT NOT NULL,
    region TEXT NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE INDEX command_endings_received ON command_endings (received_ms);
