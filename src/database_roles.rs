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
    /// The schema that holds the tables (`DB_SCHEMA`); both roles' `search_path` in this
    /// database, so that queries through a transaction-mode pooler need no `SET`.
    pub schema: &'a str,
    /// Set on the application role, so that the database itself cancels a runaway statement,
    /// through any pooler.
    pub statement_timeout: Duration,
}

/// `name` if it is a plain PostgreSQL name, which needs no quoting: lower-case ASCII letters,
/// digits and `_`, not starting with a digit, at most 63 bytes.
pub fn plain_name<'a>(what: &'static str, name: &'a str) -> Result<&'a str, NameError> {
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
        let owner = plain_name("the owner role", self.owner)?;
        let app = plain_name("the application role", self.app)?;
        let database = plain_name("the database", self.database)?;
        let schema = plain_name("the schema", self.schema)?;
        let timeout_ms = self.statement_timeout.as_millis();
        let schema_sql = if schema == "public" {
            format!(
                r#"-- The tables live in the public schema, which only the owner may create in.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO "{owner}";
GRANT USAGE ON SCHEMA public TO "{app}";"#
            )
        } else {
            format!(
                r#"-- The tables live in the schema "{schema}", which the owner owns; the application may
-- use that schema only. The public schema is left as it is.
CREATE SCHEMA IF NOT EXISTS "{schema}" AUTHORIZATION "{owner}";
GRANT USAGE, CREATE ON SCHEMA "{schema}" TO "{owner}";
GRANT USAGE ON SCHEMA "{schema}" TO "{app}";"#
            )
        };
        Ok(format!(
            r#"-- Tolstoy roles for schema "{schema}" of database "{database}". Run once as a superuser or
-- the database owner (on Neon: the project's owner role), connected to "{database}" directly.
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
{schema_sql}
-- Both roles find the tables there, on every connection to this database, through any pooler.
ALTER ROLE "{owner}" IN DATABASE "{database}" SET search_path = "{schema}";
ALTER ROLE "{app}" IN DATABASE "{database}" SET search_path = "{schema}";

-- Rows of the tables that exist now, and of every table the owner creates from now on.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{app}";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{app}";
ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA "{schema}"
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{app}";
ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA "{schema}"
  GRANT USAGE, SELECT ON SEQUENCES TO "{app}";
"#
        ))
    }
}
