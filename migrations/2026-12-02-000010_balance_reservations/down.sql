DROP VIEW dashboard_balances;
DROP TABLE connector_in_flight;

ALTER TABLE balance_reservations RENAME CONSTRAINT balance_reservations_amount_check TO balance_holds_amount_check;
ALTER TABLE balance_reservations RENAME CONSTRAINT balance_reservations_account_id_fkey TO balance_holds_account_id_fkey;
ALTER TABLE balance_reservations RENAME CONSTRAINT balance_reservations_instance_id_fkey TO balance_holds_instance_id_fkey;
ALTER TABLE balance_reservations RENAME CONSTRAINT balance_reservations_pkey TO balance_holds_pkey;
ALTER TABLE balance_reservations RENAME TO balance_holds;

ALTER TABLE balances RENAME CONSTRAINT balances_reserved_check TO balances_held_check;
ALTER TABLE balances RENAME COLUMN reserved TO held;

CREATE VIEW dashboard_balances AS
SELECT a.id AS account_id,
       a.username,
       a.asset_code,
       a.asset_scale,
       b.balance,
       b.held,
       b.credit_limit,
       b.balance - b.held AS available,
       b.balance::NUMERIC / 10 ^ a.asset_scale::NUMERIC AS balance_whole,
       b.held::NUMERIC / 10 ^ a.asset_scale::NUMERIC AS held_whole,
       a.settle_threshold,
       a.settle_to,
       a.ledger,
       b.updated_at
FROM accounts a
JOIN balances b ON b.account_id = a.id
WHERE a.deleted_at IS NULL;
