-- Signed cumulative claims received over `peer.settle`, written by the connector and
-- processed (verified, credited exactly once) by the settlement worker.
CREATE TABLE settlement_claims (
    id BIGSERIAL PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    -- Total the peer has paid us on this channel so far, in the account's base units.
    cumulative_amount BIGINT NOT NULL CHECK (cumulative_amount >= 0),
    -- Exactly what was signed, and the ed25519 signature over it.
    signed_payload BYTEA NOT NULL,
    signature BYTEA NOT NULL CHECK (octet_length(signature) = 64),
    state TEXT NOT NULL DEFAULT 'received' CHECK (state IN ('received', 'credited', 'rejected')),
    credited BIGINT CHECK (credited IS NULL OR credited >= 0),
    reason TEXT,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at TIMESTAMPTZ,
    CHECK ((state = 'credited') = (credited IS NOT NULL))
);

CREATE INDEX settlement_claims_received_idx ON settlement_claims (account_id, id) WHERE state = 'received';
