//! Database tests on a real PostgreSQL: what the database itself guarantees.

mod constraints;
mod migrations;
