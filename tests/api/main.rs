//! The integration suite: one binary, every test over HTTP against a real database, each
//! body on both SQLite and PostgreSQL.

mod helpers;

mod concurrency;
mod credentials;
mod email_domains;
mod errors;
mod export;
mod identity;
mod metrics;
mod migrations;
mod openapi;
mod operations;
mod organizations;
mod permissions;
mod pooler;
mod rate_limits;
mod recovery;
mod resources;
mod retention;
mod runs;
mod schema;
mod secrets;
mod shutdown;
mod startup;
mod tenancy;
mod traces;
