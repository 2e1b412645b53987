-- ExternalIds stay in the controller's configuration: a scope records only
-- which one applies (its name), and a campaign the one its submitter gave,
-- when the configuration allows that. Neither is ever in an API answer.
ALTER TABLE scopes ADD COLUMN external_id_ref TEXT NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN external_id TEXT NOT NULL DEFAULT '';
