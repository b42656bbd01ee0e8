//! The migration runner: the embedded `migrations/*.sql`, applied in file-name order, each in its
//! own transaction, under a session advisory lock so several replicas can start at once. Each
//! applied file's SHA-256 is recorded; if an applied file has changed, the runner refuses to start.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// `pg_advisory_lock` key: "hvmigrat" in ASCII.
pub const MIGRATION_LOCK_KEY: i64 = 0x6876_6d69_6772_6174;

/// One embedded migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    pub fn checksum(&self) -> [u8; 32] {
        Sha256::digest(self.sql.as_bytes()).into()
    }
}

/// The migrations compiled into this binary, ordered by name.
pub const MIGRATIONS: &[Migration] = &[
    Migration { name: "0001_vault_schema.sql", sql: include_str!("../../migrations/0001_vault_schema.sql") },
    Migration {
        name: "0002_last_rotate_request.sql",
        sql: include_str!("../../migrations/0002_last_rotate_request.sql"),
    },
];

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "migration {name} was changed after it was applied (checksum differs); restore the original file \
         and add a new migration instead"
    )]
    ChecksumMismatch { name: String },
    #[error("failed to {step}")]
    Query {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("failed to apply migration {name}")]
    Apply {
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationReport {
    pub applied: Vec<String>,
    pub already_applied: usize,
    /// Applied in the database but unknown to this binary (a newer version ran); tolerated so
    /// rolling upgrades work.
    pub unknown: Vec<String>,
}

fn q(step: &'static str) -> impl FnOnce(tokio_postgres::Error) -> MigrationError {
    move |source| MigrationError::Query { step, source }
}

/// Applies `migrations` on `client` (a read-write session). Holds the advisory lock for the whole
/// run and releases it on every path.
pub async fn apply(client: &mut Client, migrations: &[Migration]) -> Result<MigrationReport, MigrationError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(q("take the migration lock"))?;
    let result = apply_locked(client, migrations).await;
    let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY]).await;
    let report = result?;
    unlock.map_err(q("release the migration lock"))?;
    Ok(report)
}

async fn apply_locked(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrationError> {
    // Only create when missing: a service role without CREATE on the database can still run
    // the (no-op) check when the schema is current.
    let exists: bool = client
        .query_one("SELECT to_regclass('vault.schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(q("look for the migrations table"))?
        .get(0);
    if !exists {
        client
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS vault;
             CREATE TABLE IF NOT EXISTS vault.schema_migrations (
                 name        text        PRIMARY KEY,
                 checksum    bytea       NOT NULL CHECK (octet_length(checksum) = 32),
                 applied_at  timestamptz NOT NULL DEFAULT now()
             );",
            )
            .await
            .map_err(q("create the migrations table"))?;
    }
    let rows = client
        .query("SELECT name, checksum FROM vault.schema_migrations ORDER BY name", &[])
        .await
        .map_err(q("read applied migrations"))?;
    let applied: Vec<(String, Vec<u8>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();

    let mut sorted: Vec<&Migration> = migrations.iter().collect();
    sorted.sort_by_key(|m| m.name);
    let mut report = MigrationReport::default();
    for (name, checksum) in &applied {
        match sorted.iter().find(|m| m.name == name) {
            Some(m) if m.checksum().as_slice() != checksum.as_slice() => {
                return Err(MigrationError::ChecksumMismatch { name: name.clone() });
            }
            Some(_) => report.already_applied += 1,
            None => report.unknown.push(name.clone()),
        }
    }
    if !report.unknown.is_empty() {
        tracing::warn!(unknown = ?report.unknown, "Database has migrations this binary does not know");
    }
    for m in sorted {
        if applied.iter().any(|(name, _)| name == m.name) {
            continue;
        }
        let tx = client.transaction().await.map_err(q("begin a migration transaction"))?;
        tx.batch_execute(m.sql)
            .await
            .map_err(|source| MigrationError::Apply { name: m.name.to_owned(), source })?;
        tx.execute(
            "INSERT INTO vault.schema_migrations (name, checksum) VALUES ($1, $2)",
            &[&m.name, &m.checksum().as_slice()],
        )
        .await
        .map_err(q("record an applied migration"))?;
        tx.commit().await.map_err(|source| MigrationError::Apply { name: m.name.to_owned(), source })?;
        tracing::info!(migration = m.name, "Applied migration");
        report.applied.push(m.name.to_owned());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_sorted_and_unique() {
        let names: Vec<_> = MIGRATIONS.iter().map(|m| m.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert!(
            names.iter().all(|n| n.ends_with(".sql") && n.as_bytes()[..4].iter().all(u8::is_ascii_digit))
        );
    }

    #[test]
    fn every_file_in_the_directory_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS.iter().map(|m| m.name.to_owned()).collect();
        assert_eq!(files, embedded);
    }
}
