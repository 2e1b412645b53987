-- The audit trail: who did what, from where (ListAuditEvents, and the
-- results export). Kept with its campaign, or by age when it has none.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    principal TEXT NOT NULL,
    via TEXT NOT NULL,
    peer TEXT NOT NULL,
    action TEXT NOT NULL,
    campaign_id TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL
);
CREATE INDEX audit_campaign ON audit (campaign_id, id);
CREATE INDEX audit_principal ON audit (principal, id);
CREATE INDEX audit_at ON audit (at_ms);
