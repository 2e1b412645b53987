-- After a patch document ran on a target: the instance's patch state as
-- Patch Manager reported it for that run (missing, failed, pending a
-- reboot), a muster.v1.PatchState in protobuf; NULL for other commands and
-- where nothing was reported. Not indexed, so a result's update stays
-- where it was (HOT on PostgreSQL).
ALTER TABLE targets ADD COLUMN patch_state BYTEA;
