//! The audit log: append (single or batched), read newest first, verify the hash chain.
//!
//! Hashing and ids are assigned by the database trigger under a lock on the chain head, so
//! concurrent appenders from any replica chain correctly. The API should buffer events and flush
//! them with [`Store::append_audit_batch`] so reads never wait on the primary.

use std::net::IpAddr;

use jiff::Timestamp;
use tokio_postgres::Row;

use crate::error::{StoreError, db};
use crate::model::{AuditEvent, AuditOutcome, AuditRecord, MAX_AUDIT_ACTOR, MAX_AUDIT_DETAIL, Page};
use crate::secrets::{DEFAULT_PAGE, MAX_PAGE};
use crate::store::{Store, with_writer};

/// Largest batch written in one statement; larger batches are split.
pub const MAX_AUDIT_BATCH: usize = 1000;

impl Store {
    pub async fn append_audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.append_audit_batch(vec![event]).await
    }

    /// Appends events in order, in one transaction per chunk of [`MAX_AUDIT_BATCH`]. Over-long
    /// actors and details are truncated; an invalid action becomes `invalid-action`.
    pub async fn append_audit_batch(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        for chunk in events.chunks(MAX_AUDIT_BATCH) {
            let mut at = Vec::with_capacity(chunk.len());
            let mut actor = Vec::with_capacity(chunk.len());
            let mut ip: Vec<Option<IpAddr>> = Vec::with_capacity(chunk.len());
            let mut action = Vec::with_capacity(chunk.len());
            let mut secret: Vec<Option<String>> = Vec::with_capacity(chunk.len());
            let mut outcome = Vec::with_capacity(chunk.len());
            let mut detail: Vec<Option<String>> = Vec::with_capacity(chunk.len());
            for e in chunk {
                at.push(e.at);
                actor.push(truncate(if e.actor.is_empty() { "-" } else { &e.actor }, MAX_AUDIT_ACTOR));
                ip.push(e.client_ip);
                action.push(if valid_action(&e.action) {
                    e.action.clone()
                } else {
                    "invalid-action".to_owned()
                });
                secret.push(e.secret.as_deref().filter(|s| !s.is_empty()).map(|s| truncate(s, 253)));
                outcome.push(e.outcome.as_str());
                detail.push(e.detail.as_deref().map(|d| truncate(d, MAX_AUDIT_DETAIL)));
            }
            with_writer!(self, |client| {
                async {
                let stmt = client
                    .prepare_cached(
                        "INSERT INTO vault.audit_log (at, actor, client_ip, action, secret, outcome, detail) \
                         SELECT a, b, c, d, f, g, h FROM unnest($1::timestamptz[], $2::text[], $3::inet[], $4::text[], $5::text[], \
                                              $6::text[], $7::text[]) WITH ORDINALITY AS e(a, b, c, d, f, g, h, n) \
                         ORDER BY n",
                    )
                    .await
                    .map_err(db("prepare the audit append"))?;
                client
                    .execute(&stmt, &[&at, &actor, &ip, &action, &secret, &outcome, &detail])
                    .await
                    .map_err(db("append audit events"))?;
                Ok(())
            }
            .await
            })?;
        }
        Ok(())
    }

    /// Audit rows newest first; `cursor` is a previous page's `next_cursor`.
    pub async fn read_audit(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<AuditRecord>, StoreError> {
        let before: i64 = match cursor {
            None | Some("") => i64::MAX,
            Some(c) => {
                c.parse().map_err(|_| StoreError::invalid("cursor", "not a cursor from a previous page"))?
            }
        };
        let limit = if limit == 0 { DEFAULT_PAGE } else { limit.min(MAX_PAGE) };
        let fetch = i64::from(limit) + 1;
        let rows: Vec<Row> = with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached(
                    "SELECT id, at, actor, client_ip, action, secret, outcome, detail FROM vault.audit_log \
                     WHERE id < $1 ORDER BY id DESC LIMIT $2",
                )
                .await
                .map_err(db("prepare the audit read"))?;
            client.query(&stmt, &[&before, &fetch]).await.map_err(db("read the audit log"))
        }
        .await)?;
        let mut items = rows
            .iter()
            .map(|r| {
                let outcome: &str = r.get(6);
                Ok(AuditRecord {
                    id: r.get(0),
                    at: r.get(1),
                    actor: r.get(2),
                    client_ip: r.get(3),
                    action: r.get(4),
                    secret: r.get(5),
                    outcome: AuditOutcome::parse(outcome).ok_or_else(|| StoreError::Corrupt {
                        what: "audit row",
                        detail: format!("unknown outcome {outcome:?}"),
                    })?,
                    detail: r.get(7),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|r| r.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Verifies the whole hash chain in the database. `Ok(None)`: intact; `Ok(Some(id))`: the
    /// first row that was altered, removed or inserted out of chain.
    pub async fn verify_audit_chain(&self) -> Result<Option<i64>, StoreError> {
        let row: Row = with_writer!(self, |client| async {
            client
                .query_one("SELECT vault.verify_audit_chain()", &[])
                .await
                .map_err(db("verify the audit chain"))
        }
        .await)?;
        Ok(row.get(0))
    }
}

/// Convenience constructor for the common case.
impl AuditEvent {
    pub fn new(
        at: Timestamp,
        actor: impl Into<String>,
        action: impl Into<String>,
        outcome: AuditOutcome,
    ) -> Self {
        Self {
            at,
            actor: actor.into(),
            client_ip: None,
            action: action.into(),
            secret: None,
            outcome,
            detail: None,
        }
    }
}

fn valid_action(a: &str) -> bool {
    let mut bytes = a.bytes();
    (1..=64).contains(&a.len())
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions() {
        assert!(valid_action("secret.read"));
        assert!(valid_action("token.create"));
        assert!(!valid_action("Secret.read"));
        assert!(!valid_action(""));
        assert!(!valid_action("a b"));
    }
}
