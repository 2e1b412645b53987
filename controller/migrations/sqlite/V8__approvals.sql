-- Approvals: the policy rule that asks one of a campaign (recorded at
-- submit), when the request expires, and who decided.
ALTER TABLE campaigns ADD COLUMN approval_rule TEXT NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN approval_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN approval_min_targets INTEGER NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN approval_expires_s INTEGER NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN approval_deadline_ms INTEGER;
ALTER TABLE campaigns ADD COLUMN approval_decided_by TEXT NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN approval_decided_ms INTEGER;
ALTER TABLE campaigns ADD COLUMN approval_approved INTEGER NOT NULL DEFAULT 0;
