-- Notifications: how far each webhook has read the event log, and the
-- notifications that failed every try (dead letters).
CREATE TABLE notification_cursors (
    webhook TEXT PRIMARY KEY,
    event_id INTEGER NOT NULL
);
CREATE TABLE notification_failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    campaign_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    error TEXT NOT NULL
);
