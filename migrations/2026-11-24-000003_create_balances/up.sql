-- One row per account: the number dashboards read.
-- Sign: positive = we owe the account holder. Packets from the account lower it, packets to it
-- raise it, settlements we pay lower it, settlements we receive raise it.
-- `held` is the sum of the amounts of the account's Prepares still in flight; they count
-- against the credit limit before they are posted.
CREATE TABLE balances (
    account_id BIGINT PRIMARY KEY REFERENCES accounts (id),
    balance BIGINT NOT NULL DEFAULT 0,
    held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
    -- How far below zero balance - held may go; NULL: no limit.
    credit_limit BIGINT DEFAULT 0 CHECK (credit_limit IS NULL OR credit_limit >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The no-overdraft rule, enforced by the database itself (and again in Rust).
    CONSTRAINT balances_within_credit_limit
        CHECK (credit_limit IS NULL OR balance - held >= -credit_limit)
);

-- Append-only: every change of balances.balance, so that balance = sum(amount) per account.
-- Rows may aggregate many packets of one committed batch.
CREATE TABLE balance_journal (
    id BIGSERIAL PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    amount BIGINT NOT NULL CHECK (amount <> 0),
    kind TEXT NOT NULL CHECK (kind IN (
        'packets', 'settlement_sent', 'settlement_refunded', 'settlement_received', 'adjustment'
    )),
    -- The settlement or claim this row stands for (its idempotency key), when there is one.
    reference TEXT,
    packet_count BIGINT NOT NULL DEFAULT 0 CHECK (packet_count >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX balance_journal_account_id_idx ON balance_journal (account_id, id);

CREATE FUNCTION balance_journal_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'balance_journal is append-only';
END;
$$;

CREATE TRIGGER balance_journal_append_only
    BEFORE UPDATE OR DELETE ON balance_journal
    FOR EACH ROW EXECUTE FUNCTION balance_journal_is_append_only();
