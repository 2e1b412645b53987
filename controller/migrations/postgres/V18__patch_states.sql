-- After a patch document ran on a target: the instance's patch state as
-- Patch Manager reported it for that run (missing, failed, pending a
-- reboot), a muster.v1.PatchState in protobuf; NULL for other commands and
-- where nothing was reported. Not indexed, so a result's update stays
-- where it was (HOT on PostgreSQL).
ALTER TABLE targets ADD COLUMN patch_state BYTEA;

-- Those states summed per campaign (muster.v1.PatchCounters), moved by
-- the results that bring one, in the same transaction: a campaign's patch
-- picture costs one row's read, not a scan of its targets.
CREATE TABLE patch_counters (
    campaign_id TEXT COLLATE "C" PRIMARY KEY REFERENCES campaigns (id),
    reported BIGINT NOT NULL DEFAULT 0,
    compliant BIGINT NOT NULL DEFAULT 0,
    missing_targets BIGINT NOT NULL DEFAULT 0,
    missing_patches BIGINT NOT NULL DEFAULT 0,
    failed_targets BIGINT NOT NULL DEFAULT 0,
    failed_patches BIGINT NOT NULL DEFAULT 0,
    pending_reboot_targets BIGINT NOT NULL DEFAULT 0,
    pending_reboot_patches BIGINT NOT NULL DEFAULT 0
);
