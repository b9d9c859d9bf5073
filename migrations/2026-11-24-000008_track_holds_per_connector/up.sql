-- Holds (balances.held) are written with synchronous_commit off and die with the connector
-- process that made them. To release the holds of a process that died, each process
-- registers here, heartbeats, and keeps its share of every account's holds in
-- balance_holds, in the same transaction as balances.held. A sweeper releases the share of a
-- process whose heartbeat is older than the longest a packet can be held.
CREATE TABLE connector_instances (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The last balance batch this process committed: after an ambiguous commit error, the
    -- process reads it to learn whether the batch was applied.
    last_batch_id UUID
);

CREATE TABLE balance_holds (
    instance_id UUID NOT NULL REFERENCES connector_instances (id),
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    amount BIGINT NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (instance_id, account_id)
);
