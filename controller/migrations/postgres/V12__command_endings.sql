-- Run Command's final statuses as its EventBridge events reported them
-- (the hub's command event queue), kept an hour: a worker waiting on a
-- command learns here that it ended, whichever controller read the event.
CREATE TABLE command_endings (
    command_id TEXT COLLATE "C" PRIMARY KEY,
    status TEXT COLLATE "C" NOT NULL,
    account_id TEXT COLLATE "C" NOT NULL,
    region TEXT COLLATE "C" NOT NULL,
    received_ms BIGINT NOT NULL
);
CREATE INDEX command_endings_received ON command_endings (received_ms);
