DROP TRIGGER routes_notify_truncate ON routes;
DROP TRIGGER routes_notify_row_update ON routes;
DROP TRIGGER routes_notify_row ON routes;
DROP TRIGGER accounts_notify_truncate ON accounts;
DROP TRIGGER accounts_notify_row_update ON accounts;
DROP TRIGGER accounts_notify_row ON accounts;
DROP FUNCTION notify_route_changed();
DROP FUNCTION notify_account_changed();

CREATE TRIGGER accounts_notify_config AFTER INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();
CREATE TRIGGER routes_notify_config AFTER INSERT OR UPDATE OR DELETE ON routes
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();
