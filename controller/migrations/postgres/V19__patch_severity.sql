-- A campaign's patch counters also count what Patch Manager rates by
-- severity: targets with critical, and with security, patches not
-- compliant (muster.v1.PatchCounters fields 9-12). Rows written before
-- count none.
ALTER TABLE patch_counters
    ADD COLUMN critical_targets BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN critical_patches BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN security_targets BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN security_patches BIGINT NOT NULL DEFAULT 0;
