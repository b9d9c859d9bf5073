ALTER TABLE accounts DROP COLUMN max_amount_per_second, DROP COLUMN max_packets_per_second;
