-- Settlement support for the worker's adaptors and the connector's settlement handlers.

-- The non-secret adaptor options the worker publishes at start-up, so that connectors can
-- find what they need (an rfc38 ledger's `engine_url`). Never tokens or keys.
ALTER TABLE ledgers ADD COLUMN options JSONB NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(options) = 'object');

-- Connectors cache ledgers too. Only a change of kind or options concerns them, not the
-- lease and schedule columns the worker writes on every poll.
CREATE TRIGGER ledgers_notify_config AFTER INSERT OR DELETE OR UPDATE OF kind, options ON ledgers
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();

-- The order of an account's settlements: a cumulative claim covers every non-failed
-- settlement of its account and ledger up to its own seq.
ALTER TABLE settlements ADD COLUMN seq BIGSERIAL NOT NULL;
ALTER TABLE settlements ADD CONSTRAINT settlements_seq_key UNIQUE (seq);
CREATE INDEX settlements_account_seq_idx ON settlements (account_id, ledger, seq);

-- Accounts an rfc38 engine already knows (`POST /accounts` answered): created once per
-- (ledger, account) before the account's first settlement.
CREATE TABLE ledger_accounts (
    ledger TEXT NOT NULL,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (ledger, account_id)
);

-- Settlements per ledger, state and age bucket, for dashboards.
CREATE VIEW dashboard_settlements_by_age AS
SELECT s.ledger,
       s.state,
       CASE
           WHEN now() - s.created_at < interval '1 minute' THEN 'under 1 minute'
           WHEN now() - s.created_at < interval '1 hour' THEN 'under 1 hour'
           WHEN now() - s.created_at < interval '1 day' THEN 'under 1 day'
           ELSE '1 day or more'
       END AS age,
       count(*) AS settlements,
       coalesce(sum(s.amount), 0) AS amount,
       coalesce(sum(s.attempts), 0) AS attempts,
       min(s.created_at) AS oldest_created_at
FROM settlements s
GROUP BY 1, 2, 3;
