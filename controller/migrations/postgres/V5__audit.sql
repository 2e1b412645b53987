-- The audit trail: who did what, from where (ListAuditEvents, and the
-- results export). Kept with its campaign, or by age when it has none.
CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    principal TEXT COLLATE "C" NOT NULL,
    via TEXT COLLATE "C" NOT NULL,
    peer TEXT COLLATE "C" NOT NULL,
    action TEXT COLLATE "C" NOT NULL,
    campaign_id TEXT COLLATE "C" NOT NULL DEFAULT '',
    detail TEXT COLLATE "C" NOT NULL
);
CREATE INDEX audit_campaign ON audit (campaign_id, id);
CREATE INDEX audit_principal ON audit (principal, id);
CREATE INDEX audit_at ON audit (at_ms);
