DROP TABLE settlement_leftovers;
DROP TABLE incoming_settlements;
DROP TABLE settlements;
DROP TABLE ledgers;
