//! The integration suite: one binary, every test over HTTP against a real database, each
//! body on both SQLite and PostgreSQL.

mod helpers;

mod errors;
mod migrations;
mod openapi;
mod operations;
mod organizations;
mod startup;
