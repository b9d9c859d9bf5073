DROP VIEW dashboard_settlements_by_age;
DROP TABLE ledger_accounts;
DROP INDEX settlements_account_seq_idx;
ALTER TABLE settlements DROP COLUMN seq;
DROP TRIGGER ledgers_notify_config ON ledgers;
ALTER TABLE ledgers DROP COLUMN options;
