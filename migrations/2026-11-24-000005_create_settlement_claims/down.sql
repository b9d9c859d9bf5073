DROP TABLE settlement_claims;
