-- Approvals: the policy rule that asks one of a campaign (recorded at
-- submit), when the request expires, and who decided.
ALTER TABLE campaigns ADD COLUMN approval_rule TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN approval_reason TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN approval_min_targets BIGINT NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN approval_expires_s BIGINT NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN approval_deadline_ms BIGINT;
ALTER TABLE campaigns ADD COLUMN approval_decided_by TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN approval_decided_ms BIGINT;
ALTER TABLE campaigns ADD COLUMN approval_approved BIGINT NOT NULL DEFAULT 0;
