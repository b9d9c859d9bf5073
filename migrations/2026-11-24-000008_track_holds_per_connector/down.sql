DROP TABLE balance_holds;
DROP TABLE connector_instances;
