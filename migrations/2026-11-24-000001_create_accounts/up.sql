-- Accounts: one per peer, parent or child we exchange packets with.
-- Soft-deleted (deleted_at) so the journal keeps its history; a username is unique, ignoring
-- case, among the accounts that are not deleted.
CREATE TABLE accounts (
    id BIGSERIAL PRIMARY KEY,
    -- Usernames are one ILP address segment (RFC 15), compared without regard to case.
    username TEXT NOT NULL CHECK (username ~ '^[A-Za-z0-9_~-]{1,64}$'),
    -- NULL: derived as <node address>.<username> for children; required for parents and peers
    -- only when routing to them by their own address.
    ilp_address TEXT CHECK (
        ilp_address IS NULL
        OR (length(ilp_address) <= 1023
            AND ilp_address ~ '^(g|private|example|peer|self|test|test1|test2|test3|local)([.][A-Za-z0-9_~-]+)+$')
    ),
    asset_code TEXT NOT NULL CHECK (asset_code ~ '^[A-Za-z0-9]{1,16}$'),
    asset_scale SMALLINT NOT NULL CHECK (asset_scale BETWEEN 0 AND 255),
    relation TEXT NOT NULL CHECK (relation IN ('parent', 'peer', 'child')),
    -- NULL: no per-packet limit besides what a balance can hold.
    max_packet_amount BIGINT CHECK (max_packet_amount >= 0),
    -- When the balance reaches settle_threshold, the worker pays it down to settle_to.
    settle_threshold BIGINT,
    settle_to BIGINT NOT NULL DEFAULT 0,
    -- Name of the ledger (worker config) that settles this account; NULL: never settled.
    ledger TEXT CHECK (ledger IS NULL OR ledger ~ '^[A-Za-z0-9_.-]{1,64}$'),
    -- SHA-256 of the bearer token the peer sends us; the token itself is never stored.
    incoming_token_hash BYTEA NOT NULL UNIQUE CHECK (octet_length(incoming_token_hash) = 32),
    -- Where and how we send the peer its packets over ILP-over-HTTP.
    outgoing_url TEXT CHECK (outgoing_url IS NULL OR outgoing_url ~ '^https?://'),
    outgoing_token TEXT,
    -- Expected round trip to the peer: the margin the expiry shortener subtracts.
    round_trip_time_ms INTEGER NOT NULL DEFAULT 500 CHECK (round_trip_time_ms BETWEEN 0 AND 60000),
    -- The peer's ed25519 public key, for signed settlement claims (ledger kind `claims`).
    claims_public_key BYTEA CHECK (claims_public_key IS NULL OR octet_length(claims_public_key) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ,
    CHECK (settle_threshold IS NULL OR settle_to <= settle_threshold)
);

CREATE UNIQUE INDEX accounts_username_live_key ON accounts (lower(username)) WHERE deleted_at IS NULL;
