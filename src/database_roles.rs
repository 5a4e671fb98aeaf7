//! Least privilege: the SQL that makes one role own the schema (migrations, on `DIRECT_URL`)
//! and a narrower role for the service (rows only, on `DATABASE_URL`).
//!
//! `tolstoy roles` prints it for an administrator to read and run once per database; the test
//! suite runs the very same text.

use std::time::Duration;

/// Why a role or database name was refused.
#[derive(Debug, thiserror::Error)]
#[error("{what} must be a plain PostgreSQL name (letters, digits, _; at most 63 bytes)")]
pub struct NameError {
    pub what: &'static str,
}

/// Who gets what.
#[derive(Clone, Debug)]
pub struct DatabaseRoles<'a> {
    /// Owns the schema and runs migrations; not a superuser.
    pub owner: &'a str,
    /// The service's role: `SELECT, INSERT, UPDATE, DELETE` on the tables, usage on sequences.
    pub app: &'a str,
    /// The database the grants are for.
    pub database: &'a str,
    /// Set on the application role, so that the database itself cancels a runaway statement,
    /// through any pooler.
    pub statement_timeout: Duration,
}

fn checked<'a>(what: &'static str, name: &'a str) -> Result<&'a str, NameError> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        Ok(name)
    } else {
        Err(NameError { what })
    }
}

impl DatabaseRoles<'_> {
    /// The SQL, idempotent: run it again after the roles exist, or after migrations, and it
    /// changes nothing more.
    pub fn setup_sql(&self) -> Result<String, NameError> {
        let owner = checked("the owner role", self.owner)?;
        let app = checked("the application role", self.app)?;
        let database = checked("the database", self.database)?;
        let timeout_ms = self.statement_timeout.as_millis();
        Ok(format!(
            r#"-- Tolstoy roles for database "{database}". Run once as a superuser or the database
-- owner (on Neon: the project's owner role), connected to "{database}" directly.
-- Then give both roles a password (psql: \password {owner}), or create them in the Neon console
-- first; this script leaves existing roles as they are.

-- The owner: owns the tables, runs migrations (DIRECT_URL). Not a superuser.
DO $$ BEGIN
  CREATE ROLE "{owner}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- The application: reads and writes rows (DATABASE_URL); no DDL, owns nothing.
DO $$ BEGIN
  CREATE ROLE "{app}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
ALTER ROLE "{app}" SET statement_timeout = {timeout_ms};
ALTER ROLE "{app}" SET idle_in_transaction_session_timeout = 60000;

GRANT CONNECT ON DATABASE "{database}" TO "{owner}", "{app}";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO "{owner}";
GRANT USAGE ON SCHEMA public TO "{app}";

-- Rows of the tables that exist now, and of every table the owner creates from now on.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{app}";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{app}";
ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{app}";
ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO "{app}";
"#
        ))
    }
}
