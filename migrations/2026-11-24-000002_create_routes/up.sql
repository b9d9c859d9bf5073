-- Static routes: packets whose destination starts with `prefix` (at a segment boundary)
-- go to `account_id`. Each account's own address routes to it without a row here.
CREATE TABLE routes (
    prefix TEXT PRIMARY KEY CHECK (
        length(prefix) <= 1023
        AND prefix ~ '^(g|private|example|peer|self|test|test1|test2|test3|local)([.][A-Za-z0-9_~-]+)*$'
    ),
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX routes_account_id_idx ON routes (account_id);
