-- When each task's attempt was last put on the queue, so one whose
-- message was lost (or moved to the dead-letter queue) is sent again.
ALTER TABLE tasks ADD COLUMN enqueued_ms INTEGER;
