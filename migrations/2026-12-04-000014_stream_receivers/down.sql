DROP TABLE node_secrets;
ALTER TABLE accounts DROP COLUMN stream_receiver;
