//! The integration suite: one binary, every test over HTTP against a real database, each
//! body on both SQLite and PostgreSQL.

mod helpers;

mod concurrency;
mod errors;
mod migrations;
mod openapi;
mod operations;
mod organizations;
mod pooler;
mod resources;
mod secrets;
mod shutdown;
mod startup;
mod tenancy;
