//! Integration tests of the connector: the CLI and the packet path against a real PostgreSQL.

mod cli;
