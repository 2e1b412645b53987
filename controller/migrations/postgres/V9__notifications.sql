-- Notifications: how far each webhook has read the event log, and the
-- notifications that failed every try (dead letters).
CREATE TABLE notification_cursors (
    webhook TEXT COLLATE "C" PRIMARY KEY,
    event_id BIGINT NOT NULL
);
CREATE TABLE notification_failures (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook TEXT COLLATE "C" NOT NULL,
    event_id BIGINT NOT NULL,
    campaign_id TEXT COLLATE "C" NOT NULL,
    at_ms BIGINT NOT NULL,
    error TEXT COLLATE "C" NOT NULL
);
