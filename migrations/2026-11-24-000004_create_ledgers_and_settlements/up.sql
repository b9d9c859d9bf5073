-- Ledgers: the settlement worker's config names them; this table holds their poll schedule
-- state and the lease that keeps two worker replicas from polling one ledger at once.
CREATE TABLE ledgers (
    name TEXT PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    kind TEXT NOT NULL CHECK (kind IN ('rfc38', 'claims')),
    next_poll_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_poll_at TIMESTAMPTZ,
    lease_owner TEXT,
    lease_expires_at TIMESTAMPTZ,
    CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
);

-- Outgoing settlements: `id` is the idempotency key, committed (with the balance change)
-- before the ledger is called, and reused on every retry.
CREATE TABLE settlements (
    id UUID PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    ledger TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'confirmed', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX settlements_pending_idx ON settlements (ledger, next_attempt_at) WHERE state = 'pending';

-- Incoming settlements: credited exactly once per (account, idempotency key).
-- amount/scale are as the ledger reported them; credited is what the balance rose by,
-- in the account's units.
CREATE TABLE incoming_settlements (
    id BIGSERIAL PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    idempotency_key TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    amount NUMERIC(40, 0) NOT NULL CHECK (amount >= 0),
    scale SMALLINT NOT NULL CHECK (scale BETWEEN 0 AND 255),
    credited BIGINT NOT NULL CHECK (credited >= 0),
    -- The answer we gave, replayed for the same key (RFC 38).
    response JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT incoming_settlements_idempotency_key UNIQUE (account_id, idempotency_key)
);

-- What scale conversion could not credit yet, in units of 10^-scale of the account's asset
-- unit; credited once it adds up to one base unit, never rounded away.
CREATE TABLE settlement_leftovers (
    account_id BIGINT PRIMARY KEY REFERENCES accounts (id),
    amount NUMERIC(40, 0) NOT NULL CHECK (amount >= 0),
    scale SMALLINT NOT NULL CHECK (scale BETWEEN 0 AND 255)
);
