-- Which answer granted a lease: 'ask:<worker>:<request_id>' for a LeaseTask
-- (the lease and its same-account siblings), 'done:<lease_id>' for the leases
-- a CompleteTask handed on, '' otherwise. A call repeated because its answer
-- was lost is answered with the leases of the same key that are still held.
ALTER TABLE leases ADD COLUMN granted_for TEXT COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX leases_granted_for ON leases (granted_for) WHERE granted_for != '';
