-- Running connectors apply one change at a time instead of reloading everything: accounts and
-- routes notify per row with what changed, `LISTEN ilp_config` payloads of the form
-- `accounts <id>` and `routes <prefix>` (an UPDATE that moves a route names both prefixes).
-- A bare table name (`ledgers`, `rates`, or `accounts`/`routes` after a TRUNCATE) means
-- "reload that table". Updates that change nothing notify nothing.
CREATE FUNCTION notify_account_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('ilp_config', 'accounts ' || OLD.id);
    ELSE
        PERFORM pg_notify('ilp_config', 'accounts ' || NEW.id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION notify_route_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM pg_notify('ilp_config', 'routes ' || OLD.prefix);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('ilp_config', 'routes ' || NEW.prefix);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER accounts_notify_config ON accounts;
DROP TRIGGER routes_notify_config ON routes;

CREATE TRIGGER accounts_notify_row AFTER INSERT OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION notify_account_changed();
CREATE TRIGGER accounts_notify_row_update AFTER UPDATE ON accounts
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION notify_account_changed();
CREATE TRIGGER accounts_notify_truncate AFTER TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();
CREATE TRIGGER routes_notify_row AFTER INSERT OR DELETE ON routes
    FOR EACH ROW EXECUTE FUNCTION notify_route_changed();
CREATE TRIGGER routes_notify_row_update AFTER UPDATE ON routes
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION notify_route_changed();
CREATE TRIGGER routes_notify_truncate AFTER TRUNCATE ON routes
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();
