DROP TRIGGER routes_notify_config ON routes;
DROP TRIGGER accounts_notify_config ON accounts;
DROP FUNCTION notify_config_changed();
