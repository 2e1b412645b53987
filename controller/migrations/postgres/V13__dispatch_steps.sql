-- Which command of a task's sequence (CampaignSpec.then) each dispatch
-- is: 0 for the first.
ALTER TABLE dispatches ADD COLUMN step INTEGER NOT NULL DEFAULT 0;
