//! The audit trail without making reads wait on the primary.
//!
//! Each audited request reserves a slot in a bounded in-memory queue *before* it does any work; the
//! handler fills in what it did; the response middleware turns that into an [`AuditEvent`] and sends
//! it through the reserved slot. A background task writes the queue to the primary in batches and,
//! when the primary is unreachable, retries the same batch with capped exponential backoff while the
//! queue absorbs new events. Because the slot is reserved first, a full queue is noticed before a
//! secret is touched: management calls then answer 503 (never performed unaudited); reads do too
//! under `fail-closed` (the default), or go on and are counted under `drop-reads`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;

use crate::backend::{AuditEvent, Backend};
use crate::metrics::Metrics;

/// Events per write (the store splits larger batches itself).
pub const BATCH_SIZE: usize = 1000;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// After a partial batch, wait this long for more events: under read load the primary then sees a
/// few audit transactions per second instead of one per handful of reads.
const LINGER: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    FailClosed,
    DropReads,
}

/// Whether a call reads secret material (reads, verify, batch) or manages the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    Read,
    Management,
}

/// What the handler tells the audit middleware about the call it served.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub action: Option<&'static str>,
    pub actor: Option<String>,
    pub secret: Option<String>,
    /// Extra detail for the record (e.g. verify `match`/`mismatch`).
    pub detail: Option<&'static str>,
}

/// Request-scoped, shared between the middleware and the handler.
pub type AuditCell = Arc<Mutex<AuditNote>>;

pub fn note(cell: &AuditCell, f: impl FnOnce(&mut AuditNote)) {
    // A poisoned note only means a handler panicked mid-update; the note is still the best record.
    let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard);
}

#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditEvent>,
    policy: OverflowPolicy,
    metrics: Arc<Metrics>,
}

/// A reserved place in the queue, or (under `drop-reads`) the knowledge that there is none.
pub struct AuditSlot {
    permit: Option<mpsc::OwnedPermit<AuditEvent>>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("audit queue is full")]
pub struct QueueFull;

impl AuditSink {
    pub fn new(
        capacity: usize,
        policy: OverflowPolicy,
        metrics: Arc<Metrics>,
    ) -> (Self, mpsc::Receiver<AuditEvent>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx, policy, metrics }, rx)
    }

    pub fn reserve(&self, class: CallClass) -> Result<AuditSlot, QueueFull> {
        match self.tx.clone().try_reserve_owned() {
            Ok(permit) => Ok(AuditSlot { permit: Some(permit), metrics: self.metrics.clone() }),
            Err(_) if class == CallClass::Read && self.policy == OverflowPolicy::DropReads => {
                Ok(AuditSlot { permit: None, metrics: self.metrics.clone() })
            }
            Err(_) => {
                self.metrics.audit_rejected.inc();
                Err(QueueFull)
            }
        }
    }

    /// Events waiting to be written.
    pub fn backlog(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

impl AuditSlot {
    pub fn record(self, event: AuditEvent) {
        match self.permit {
            Some(permit) => {
                permit.send(event);
            }
            None => {
                self.metrics.audit_dropped.inc();
                tracing::warn!(
                    action = event.action,
                    outcome = event.outcome,
                    "Audit queue full; event dropped"
                );
            }
        }
    }
}

/// Writes queued events to the primary until every sender is gone and the queue is empty.
pub async fn run_flusher(
    mut rx: mpsc::Receiver<AuditEvent>,
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(BATCH_SIZE);
    while rx.recv_many(&mut batch, BATCH_SIZE).await > 0 {
        if batch.len() < BATCH_SIZE && !rx.is_closed() {
            tokio::time::sleep(LINGER).await;
            let room = BATCH_SIZE - batch.len();
            rx.recv_many(&mut batch, room).await;
        }
        let received = batch.len() as u64;
        let rows = coalesce(std::mem::take(&mut batch));
        write_batch(backend.as_ref(), &rows, &metrics).await;
        metrics.audit_written.inc_by(received);
    }
    tracing::info!("Audit queue drained");
}

/// Writes `rows`, retrying the whole batch while the database is unreachable. Any other refusal
/// means some row itself cannot be stored, and retrying would stall the trail behind it forever
/// (every later call then answers 503 once the queue fills): the rows are then written one by one,
/// and a row the database refuses is replaced by a placeholder that keeps its time, client, action
/// and outcome and says the event could not be stored. Only if that is refused as well is the event
/// dropped — counted in `audit_events_unstorable` and logged.
async fn write_batch(backend: &dyn Backend, rows: &[AuditEvent], metrics: &Metrics) {
    if append_retrying(backend, rows, metrics).await.is_ok() {
        return;
    }
    for row in rows {
        let Err(e) = append_retrying(backend, std::slice::from_ref(row), metrics).await else { continue };
        tracing::error!(error = %e, action = row.action, "Audit event refused by the database; storing a placeholder");
        let placeholder = AuditEvent {
            at: row.at,
            actor: "audit-writer".to_owned(),
            client_ip: row.client_ip,
            action: row.action,
            secret: None,
            outcome: row.outcome,
            detail: Some(format!("the original event could not be stored ({e})")),
        };
        if let Err(e) = append_retrying(backend, &[placeholder], metrics).await {
            metrics.audit_unstorable.inc();
            tracing::error!(error = %e, action = row.action, "Audit placeholder refused too; event dropped");
        }
    }
}

/// Appends `rows`, retrying with capped backoff while the database is unavailable; returns any
/// other error at once.
async fn append_retrying(
    backend: &dyn Backend,
    rows: &[AuditEvent],
    metrics: &Metrics,
) -> Result<(), crate::backend::BackendError> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match backend.append_audit_batch(rows).await {
            Ok(()) => return Ok(()),
            Err(crate::backend::BackendError::DatabaseUnavailable(_)) => {
                metrics.audit_write_failures.inc();
                tracing::warn!(pending = rows.len(), "Audit database unavailable; retrying the batch");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => {
                metrics.audit_write_failures.inc();
                return Err(e);
            }
        }
    }
}

/// Reads and verifies that agree in everything but time and request id (same actor, client,
/// action, secret, outcome) and were queued together become one row whose detail carries the
/// count, the time span and the first request id. Every read is still accounted for, and a burst of
/// reads costs the primary one row per distinct (client, secret, outcome), not one per request.
/// Management events are never merged.
pub fn coalesce(events: Vec<AuditEvent>) -> Vec<AuditEvent> {
    use std::collections::HashMap;
    let mut out: Vec<AuditEvent> = Vec::with_capacity(events.len());
    // key -> (index in `out`, count, last time)
    let mut groups: HashMap<GroupKey, (usize, u64, Timestamp)> = HashMap::new();
    for e in events {
        if !READ_ACTIONS.contains(&e.action) {
            out.push(e);
            continue;
        }
        let (what, _) = split_detail(e.detail.as_deref());
        let key = (e.actor.clone(), e.client_ip, e.action, e.secret.clone(), e.outcome, what.to_owned());
        match groups.get_mut(&key) {
            Some((_, count, last)) => {
                *count += 1;
                *last = e.at;
            }
            None => {
                groups.insert(key, (out.len(), 1, e.at));
                out.push(e);
            }
        }
    }
    for ((.., what), (i, count, last)) in groups {
        if count > 1 {
            let e = &mut out[i];
            let (_, first_id) = split_detail(e.detail.as_deref());
            let prefix = if what.is_empty() { String::new() } else { format!("{what} ") };
            e.detail = Some(format!("{prefix}count={count} until={last} first_request_id={first_id}"));
        }
    }
    out
}

/// actor, client, action, secret, outcome, detail without the request id
type GroupKey = (String, Option<std::net::IpAddr>, &'static str, Option<String>, &'static str, String);

const READ_ACTIONS: [&str; 4] = ["read", "read_version", "verify", "batch_read"];

/// `"mismatch request_id=abc"` -> (`"mismatch"`, `"abc"`).
fn split_detail(detail: Option<&str>) -> (&str, &str) {
    let d = detail.unwrap_or("");
    match d.rsplit_once("request_id=") {
        Some((what, id)) => (what.trim_end(), id),
        None => (d, ""),
    }
}

/// The outcome recorded for a response status (the store's closed set).
pub fn outcome_for(status: u16) -> &'static str {
    match status {
        200..=299 => "success",
        401 | 403 => "denied",
        404 => "not_found",
        409 => "conflict",
        429 => "locked_out",
        503 => "unavailable",
        _ if status >= 500 => "error",
        _ => "invalid",
    }
}

pub fn event(
    note: AuditNote,
    client_ip: Option<std::net::IpAddr>,
    status: u16,
    request_id: &str,
) -> Option<AuditEvent> {
    let action = note.action?;
    let detail = note.detail.or((status == 401).then_some("unauthenticated"));
    Some(AuditEvent {
        at: Timestamp::now(),
        actor: note.actor.unwrap_or_else(|| "anonymous".to_owned()),
        client_ip,
        action,
        secret: note.secret,
        outcome: outcome_for(status),
        detail: Some(match detail {
            Some(d) => format!("{d} request_id={request_id}"),
            None => format!("request_id={request_id}"),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: &'static str) -> AuditEvent {
        event(AuditNote { action: Some(action), ..Default::default() }, None, 200, "r").unwrap()
    }

    #[test]
    fn full_queue_fails_closed_for_management_and_by_policy_for_reads() {
        let metrics = Arc::new(Metrics::new());
        let (sink, _rx) = AuditSink::new(2, OverflowPolicy::DropReads, metrics.clone());
        sink.reserve(CallClass::Management).unwrap().record(ev("create"));
        sink.reserve(CallClass::Read).unwrap().record(ev("read"));
        assert_eq!(sink.backlog(), 2);
        assert_eq!(sink.reserve(CallClass::Management).err(), Some(QueueFull));
        let slot = sink.reserve(CallClass::Read).unwrap();
        slot.record(ev("read"));
        assert_eq!(metrics.audit_dropped.get(), 1);

        let (closed, _rx2) = AuditSink::new(1, OverflowPolicy::FailClosed, metrics);
        let _held = closed.reserve(CallClass::Read).unwrap();
        assert_eq!(closed.reserve(CallClass::Read).err(), Some(QueueFull));
    }

    /// One unstorable event (a NUL, which PostgreSQL refuses in text and the in-memory backend
    /// refuses alike) must not stall the trail: its neighbours are written, it becomes a
    /// placeholder, and the flusher goes on.
    #[tokio::test]
    async fn an_unstorable_event_does_not_stall_the_trail() {
        let backend: Arc<dyn Backend> = Arc::new(crate::memory::MemoryBackend::new());
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::channel(16);
        let flusher = tokio::spawn(run_flusher(rx, backend.clone(), metrics.clone()));
        let mut poison = ev("create");
        poison.secret = Some("a\0b".into());
        for e in [ev("create"), poison, ev("delete")] {
            tx.send(e).await.unwrap();
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), flusher).await.expect("the flusher stalled").unwrap();
        let page = backend.read_audit(None, 100).await.unwrap();
        let actions: Vec<_> = page.items.iter().map(|r| (r.action.as_str(), r.actor.as_str())).collect();
        assert_eq!(actions.len(), 3, "{actions:?}");
        assert!(actions.contains(&("delete", "anonymous")), "{actions:?}");
        let placeholder = page.items.iter().find(|r| r.actor == "audit-writer").expect("a placeholder");
        assert_eq!((placeholder.action.as_str(), placeholder.secret.as_deref()), ("create", None));
        assert!(placeholder.detail.as_deref().unwrap().contains("could not be stored"));
        assert_eq!(metrics.audit_unstorable.get(), 0);
    }

    #[test]
    fn reads_coalesce_management_does_not() {
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        let ev = |action: &'static str, secret: &str, detail: &str, s: i64| AuditEvent {
            at: at(s),
            actor: "anonymous".into(),
            client_ip: Some("10.0.0.1".parse().unwrap()),
            action,
            secret: Some(secret.into()),
            outcome: "success",
            detail: Some(detail.into()),
        };
        let out = coalesce(vec![
            ev("read", "a", "request_id=r1", 0),
            ev("verify", "a", "mismatch request_id=r2", 1),
            ev("read", "a", "request_id=r3", 2),
            ev("create", "b", "request_id=r4", 3),
            ev("create", "b", "request_id=r5", 4),
            ev("read", "a", "request_id=r6", 5),
            ev("verify", "a", "match request_id=r7", 6),
        ]);
        let details: Vec<_> = out.iter().map(|e| (e.action, e.detail.clone().unwrap())).collect();
        assert_eq!(out.len(), 5, "{details:?}");
        assert_eq!(details[0], ("read", format!("count=3 until={} first_request_id=r1", at(5))));
        assert_eq!(details[1], ("verify", "mismatch request_id=r2".to_owned()));
        assert_eq!(details[2].0, "create");
        assert_eq!(details[3].0, "create");
        assert_eq!(details[4], ("verify", "match request_id=r7".to_owned()));
    }

    #[test]
    fn outcome_from_status() {
        assert_eq!(outcome_for(201), "success");
        assert_eq!(outcome_for(403), "denied");
        assert_eq!(outcome_for(401), "denied");
        assert_eq!(outcome_for(405), "invalid");
        assert_eq!(outcome_for(429), "locked_out");
        assert_eq!(outcome_for(500), "error");
        assert!(event(AuditNote::default(), None, 200, "").is_none());
        let e = event(AuditNote { action: Some("read"), ..Default::default() }, None, 401, "abc").unwrap();
        assert_eq!(e.detail.as_deref(), Some("unauthenticated request_id=abc"));
    }
}
