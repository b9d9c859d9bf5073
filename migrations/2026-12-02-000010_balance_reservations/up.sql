-- Balances v2 (escrow): each connector instance holds a durable credit *reservation* per
-- sender and holds its Prepares in memory against it. `balances.held` (the sum of every
-- Prepare in flight, written per packet) becomes `balances.reserved` (the sum of every
-- instance's reservation); the no-overdraft CHECK now reads `balance - reserved >= -credit_limit`.
-- A hold left by a connector of the previous version becomes that instance's reservation of
-- the same amount, and the sweeper releases it like any dead instance's reservation.
ALTER TABLE balances RENAME COLUMN held TO reserved;
ALTER TABLE balances RENAME CONSTRAINT balances_held_check TO balances_reserved_check;

ALTER TABLE balance_holds RENAME TO balance_reservations;
ALTER TABLE balance_reservations RENAME CONSTRAINT balance_holds_pkey TO balance_reservations_pkey;
ALTER TABLE balance_reservations RENAME CONSTRAINT balance_holds_instance_id_fkey TO balance_reservations_instance_id_fkey;
ALTER TABLE balance_reservations RENAME CONSTRAINT balance_holds_account_id_fkey TO balance_reservations_account_id_fkey;
ALTER TABLE balance_reservations RENAME CONSTRAINT balance_holds_amount_check TO balance_reservations_amount_check;

-- What each instance has in flight per account, as of its last heartbeat (about 1 s old):
-- a gauge for operators, never used to decide anything.
CREATE TABLE connector_in_flight (
    instance_id UUID NOT NULL REFERENCES connector_instances (id) ON DELETE CASCADE,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    amount BIGINT NOT NULL CHECK (amount >= 0),
    packets BIGINT NOT NULL CHECK (packets >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, account_id)
);

DROP VIEW dashboard_balances;
CREATE VIEW dashboard_balances AS
SELECT a.id AS account_id,
       a.username,
       a.asset_code,
       a.asset_scale,
       b.balance,
       b.reserved,
       f.in_flight,
       b.credit_limit,
       -- What connectors may still reserve for this account (NULL: no credit limit).
       b.balance - b.reserved + b.credit_limit AS available,
       b.balance::NUMERIC / 10 ^ a.asset_scale::NUMERIC AS balance_whole,
       b.reserved::NUMERIC / 10 ^ a.asset_scale::NUMERIC AS reserved_whole,
       f.in_flight::NUMERIC / 10 ^ a.asset_scale::NUMERIC AS in_flight_whole,
       a.settle_threshold,
       a.settle_to,
       a.ledger,
       b.updated_at
FROM accounts a
JOIN balances b ON b.account_id = a.id
CROSS JOIN LATERAL (
    SELECT coalesce(sum(i.amount), 0)::BIGINT AS in_flight
    FROM connector_in_flight i WHERE i.account_id = a.id
) f
WHERE a.deleted_at IS NULL;
