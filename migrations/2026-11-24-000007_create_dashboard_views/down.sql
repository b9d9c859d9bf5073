DROP VIEW dashboard_ledger_polls;
DROP VIEW dashboard_settlements_in_flight;
DROP VIEW dashboard_balances;
