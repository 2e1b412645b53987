-- A rerun names the campaign whose targets it runs again (RerunCampaign).
ALTER TABLE campaigns ADD COLUMN rerun_of TEXT NOT NULL DEFAULT '';
CREATE INDEX campaigns_rerun_of ON campaigns (rerun_of, created_ms) WHERE rerun_of != '';
