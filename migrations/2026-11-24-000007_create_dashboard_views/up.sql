-- Views for dashboards and `ilp-connector balances`; see README "Dashboards".
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

CREATE VIEW dashboard_settlements_in_flight AS
SELECT s.ledger,
       s.state,
       count(*) AS settlements,
       coalesce(sum(s.amount), 0) AS amount,
       min(s.created_at) AS oldest_created_at,
       max(now() - s.created_at) AS oldest_age
FROM settlements s
GROUP BY s.ledger, s.state;

CREATE VIEW dashboard_ledger_polls AS
SELECT l.name AS ledger,
       l.kind,
       l.last_poll_at,
       l.next_poll_at,
       l.lease_owner,
       l.lease_expires_at
FROM ledgers l;
