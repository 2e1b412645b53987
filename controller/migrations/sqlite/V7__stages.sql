-- Waves: each target's stage (its index in the spec's stages; -1 for a
-- target that never runs, 0 in a campaign without stages) and where the
-- campaign's current stage is.
ALTER TABLE targets ADD COLUMN stage INTEGER NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN stage_index INTEGER NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN stage_phase INTEGER NOT NULL DEFAULT 0;      -- muster.v1.StagePhase
ALTER TABLE campaigns ADD COLUMN stage_until_ms INTEGER;                      -- BAKING: when it ends
ALTER TABLE campaigns ADD COLUMN stage_errors_accepted INTEGER NOT NULL DEFAULT 0;
