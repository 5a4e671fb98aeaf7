//! Tolstoy: a multi-tenant workflow-automation API server.
//!
//! Everything the binary and the integration tests need is reachable from here.

pub mod api;
pub mod config;
pub mod credentials;
pub mod database_roles;
pub mod db;
pub mod error;
pub mod identity;
pub mod middleware;
pub mod retention;
pub mod runs;
pub mod secrets;
pub mod service;
pub mod startup;
pub mod state;
pub mod telemetry;
