DROP VIEW dashboard_conversions;
DROP TABLE balance_conversions;
ALTER TABLE accounts DROP COLUMN spread;
DROP TABLE rates;
