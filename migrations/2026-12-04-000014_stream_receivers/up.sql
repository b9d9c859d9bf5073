-- STREAM receivers hosted by the connector (SPSP): an account with `stream_receiver` set is
-- paid at its own address; the connector answers its STREAM packets and its SPSP queries, and
-- what it is paid is credited to it on the normal balance path.
ALTER TABLE accounts ADD COLUMN stream_receiver BOOLEAN NOT NULL DEFAULT false;

-- Secrets every connector instance of this database shares, so that any replica can answer a
-- STREAM packet whose shared secret another one handed out. Made once, here, from two random
-- UUIDs (244 random bits) hashed; never changed by the connector.
CREATE TABLE node_secrets (
    name TEXT PRIMARY KEY,
    secret BYTEA NOT NULL CHECK (octet_length(secret) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO node_secrets (name, secret)
VALUES ('stream', sha256((gen_random_uuid()::text || gen_random_uuid()::text)::bytea));
