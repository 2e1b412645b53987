-- Which controller leads (runs reconcile, dispatch, export, retention) and
-- its fencing epoch: one row, taken over when it expires.
CREATE TABLE leadership (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    holder TEXT COLLATE "C" NOT NULL,
    epoch BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
