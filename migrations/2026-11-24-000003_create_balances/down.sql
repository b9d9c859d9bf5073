DROP TABLE balance_journal;
DROP FUNCTION balance_journal_is_append_only();
DROP TABLE balances;
