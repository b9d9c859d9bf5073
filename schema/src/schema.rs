// @generated automatically by Diesel CLI.

diesel::table! {
    accounts (id) {
        id -> Int8,
        username -> Text,
        ilp_address -> Nullable<Text>,
        asset_code -> Text,
        asset_scale -> Int2,
        relation -> Text,
        max_packet_amount -> Nullable<Int8>,
        settle_threshold -> Nullable<Int8>,
        settle_to -> Int8,
        ledger -> Nullable<Text>,
        incoming_token_hash -> Bytea,
        outgoing_url -> Nullable<Text>,
        outgoing_token -> Nullable<Text>,
        round_trip_time_ms -> Int4,
        claims_public_key -> Nullable<Bytea>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        spread -> Nullable<Numeric>,
        max_packets_per_second -> Nullable<Int8>,
        max_amount_per_second -> Nullable<Int8>,
        stream_receiver -> Bool,
    }
}

diesel::table! {
    balance_conversions (id) {
        id -> Int8,
        reference -> Text,
        from_account_id -> Int8,
        to_account_id -> Int8,
        from_asset_code -> Text,
        from_asset_scale -> Int2,
        to_asset_code -> Text,
        to_asset_scale -> Int2,
        rate -> Numeric,
        spread -> Numeric,
        source_amount -> Int8,
        destination_amount -> Int8,
        packet_count -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    balance_journal (id) {
        id -> Int8,
        account_id -> Int8,
        amount -> Int8,
        kind -> Text,
        reference -> Nullable<Text>,
        packet_count -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    balance_reservations (instance_id, account_id) {
        instance_id -> Uuid,
        account_id -> Int8,
        amount -> Int8,
    }
}

diesel::table! {
    balances (account_id) {
        account_id -> Int8,
        balance -> Int8,
        reserved -> Int8,
        credit_limit -> Nullable<Int8>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    connector_in_flight (instance_id, account_id) {
        instance_id -> Uuid,
        account_id -> Int8,
        amount -> Int8,
        packets -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    connector_instances (id) {
        id -> Uuid,
        name -> Text,
        started_at -> Timestamptz,
        heartbeat_at -> Timestamptz,
        last_batch_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    incoming_settlements (id) {
        id -> Int8,
        account_id -> Int8,
        idempotency_key -> Text,
        amount -> Numeric,
        scale -> Int2,
        credited -> Int8,
        response -> Nullable<Jsonb>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    ledger_accounts (ledger, account_id) {
        ledger -> Text,
        account_id -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    ledgers (name) {
        name -> Text,
        kind -> Text,
        next_poll_at -> Timestamptz,
        last_poll_at -> Nullable<Timestamptz>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamptz>,
        options -> Jsonb,
    }
}

diesel::table! {
    node_secrets (name) {
        name -> Text,
        secret -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    rates (asset_code) {
        asset_code -> Text,
        rate -> Numeric,
        source -> Text,
        expires_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    routes (prefix) {
        prefix -> Text,
        account_id -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    settlement_claims (id) {
        id -> Int8,
        account_id -> Int8,
        cumulative_amount -> Int8,
        signed_payload -> Bytea,
        signature -> Bytea,
        state -> Text,
        credited -> Nullable<Int8>,
        reason -> Nullable<Text>,
        received_at -> Timestamptz,
        processed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    settlement_leftovers (account_id) {
        account_id -> Int8,
        amount -> Numeric,
        scale -> Int2,
    }
}

diesel::table! {
    settlements (id) {
        id -> Uuid,
        account_id -> Int8,
        ledger -> Text,
        amount -> Int8,
        state -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        seq -> Int8,
    }
}

diesel::joinable!(balance_journal -> accounts (account_id));
diesel::joinable!(balance_reservations -> accounts (account_id));
diesel::joinable!(balance_reservations -> connector_instances (instance_id));
diesel::joinable!(balances -> accounts (account_id));
diesel::joinable!(connector_in_flight -> accounts (account_id));
diesel::joinable!(connector_in_flight -> connector_instances (instance_id));
diesel::joinable!(incoming_settlements -> accounts (account_id));
diesel::joinable!(ledger_accounts -> accounts (account_id));
diesel::joinable!(routes -> accounts (account_id));
diesel::joinable!(settlement_claims -> accounts (account_id));
diesel::joinable!(settlement_leftovers -> accounts (account_id));
diesel::joinable!(settlements -> accounts (account_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    balance_conversions,
    balance_journal,
    balance_reservations,
    balances,
    connector_in_flight,
    connector_instances,
    incoming_settlements,
    ledger_accounts,
    ledgers,
    node_secrets,
    rates,
    routes,
    settlement_claims,
    settlement_leftovers,
    settlements,
);
