-- The tags of each target that the campaign's stages select by (JSON
-- object), as discovery reported them.
ALTER TABLE targets ADD COLUMN tags TEXT NOT NULL DEFAULT '';
