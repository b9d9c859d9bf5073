-- Per-account rates, shared by every live connector instance (each enforces the limit divided
-- by how many are live): Prepares per second (over it: T05) and base units per second (over
-- it: T04). NULL: no limit.
ALTER TABLE accounts
    ADD COLUMN max_packets_per_second BIGINT CHECK (max_packets_per_second > 0),
    ADD COLUMN max_amount_per_second BIGINT CHECK (max_amount_per_second > 0);
