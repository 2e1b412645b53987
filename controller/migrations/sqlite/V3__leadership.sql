-- Which controller leads (runs reconcile, dispatch, export, retention) and
-- its fencing epoch: one row, taken over when it expires.
CREATE TABLE leadership (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
