-- Cross-currency forwarding. `rates` holds, per asset code, what one whole unit of the asset
-- is worth in the operator's base asset (any asset, as long as every rate uses the same one):
-- forwarding from asset A to asset B converts at rate(A) / rate(B). Connectors cache the table
-- and reload it on NOTIFY, like accounts and routes. A rate from a provider carries
-- `expires_at` (fetched + the provider's max age): past it, the rate is stale and not used.
-- Rates set by hand never expire unless given a max age.
CREATE TABLE rates (
    asset_code TEXT PRIMARY KEY CHECK (asset_code ~ '^[A-Za-z0-9]{1,16}$'),
    rate NUMERIC NOT NULL CHECK (rate > 0 AND rate < 1e28),
    source TEXT NOT NULL DEFAULT 'manual' CHECK (length(source) BETWEEN 1 AND 64),
    expires_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TRIGGER rates_notify_config AFTER INSERT OR UPDATE OR DELETE ON rates
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();

-- The sender's spread, overriding the node's (a fraction: 0.002 keeps 0.2 % of a converted
-- amount). NULL: the node's.
ALTER TABLE accounts ADD COLUMN spread NUMERIC CHECK (spread >= 0 AND spread < 1);

-- What each committed batch converted, per (sender, next hop, rate, spread): written in the
-- same transaction as the batch's balance changes (`reference` = the batch id, as in
-- balance_journal), so it is exactly once too. `rate` is the mid rate used (destination whole
-- units per source whole unit), `spread` the part kept; every destination amount is
-- floor(source amount x rate x (1 - spread) x 10^(to_scale - from_scale)), per packet.
CREATE TABLE balance_conversions (
    id BIGSERIAL PRIMARY KEY,
    reference TEXT NOT NULL,
    from_account_id BIGINT NOT NULL REFERENCES accounts (id),
    to_account_id BIGINT NOT NULL REFERENCES accounts (id),
    from_asset_code TEXT NOT NULL,
    from_asset_scale SMALLINT NOT NULL,
    to_asset_code TEXT NOT NULL,
    to_asset_scale SMALLINT NOT NULL,
    rate NUMERIC NOT NULL CHECK (rate > 0),
    spread NUMERIC NOT NULL CHECK (spread >= 0 AND spread < 1),
    source_amount BIGINT NOT NULL CHECK (source_amount >= 0),
    destination_amount BIGINT NOT NULL CHECK (destination_amount >= 0),
    packet_count BIGINT NOT NULL CHECK (packet_count > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);


CREATE TRIGGER balance_conversions_append_only
    BEFORE UPDATE OR DELETE ON balance_conversions
    FOR EACH ROW EXECUTE FUNCTION balance_journal_is_append_only();

-- What the node gained (or lost) by conversion, per asset pair: the senders paid
-- `source_whole`; at the mid rates used, that was worth `value_whole` in the destination
-- asset; the next hops were credited `destination_whole`. `gain_whole` (destination asset)
-- is the spread kept plus the rounding down of each packet.
CREATE VIEW dashboard_conversions AS
SELECT from_asset_code,
       to_asset_code,
       sum(packet_count)::BIGINT AS packets,
       sum(source_amount::NUMERIC / 10 ^ from_asset_scale::NUMERIC) AS source_whole,
       sum(source_amount::NUMERIC / 10 ^ from_asset_scale::NUMERIC * rate) AS value_whole,
       sum(destination_amount::NUMERIC / 10 ^ to_asset_scale::NUMERIC) AS destination_whole,
       sum(source_amount::NUMERIC / 10 ^ from_asset_scale::NUMERIC * rate)
           - sum(destination_amount::NUMERIC / 10 ^ to_asset_scale::NUMERIC) AS gain_whole,
       max(created_at) AS last_at
FROM balance_conversions
GROUP BY from_asset_code, to_asset_code;
