//! Rotation and grace expiry of API-owned automatic secrets (created through the REST API, not
//! by a VaultSecret), run by the leader beside the Controller so every automatic secret rotates
//! whoever created it. Driven by the database's `next_rotation_at`; each rotation is guarded by
//! the expected current version, so an overlap with another writer cannot rotate twice.

use std::sync::Arc;
use std::time::Duration;

use hyperion_vault_store::model::{DueFilter, RotateOutcome};
use jiff::Timestamp;
use tracing::{info, warn};

use crate::context::Context;
use crate::reconcile::error_chain;

/// Due secrets handled per sweep.
const BATCH: u32 = 1000;

/// Sweeps forever, every `every`.
pub async fn run(ctx: Arc<Context>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep(&ctx).await;
    }
}

/// One pass: rotate due API-owned secrets, then shred every version whose grace has ended.
pub async fn sweep(ctx: &Context) {
    let now = Timestamp::now();
    match ctx.store.due_rotations(now, DueFilter::ApiOwned, BATCH).await {
        Ok(due) => {
            for d in due {
                match ctx.store.rotate(&d.name, d.current_version, None, now).await {
                    Ok(RotateOutcome::Rotated { version, .. }) => {
                        ctx.metrics.rotated("api_schedule");
                        info!(secret = %d.name.as_str(), version = version.version, "Rotated API secret");
                    }
                    Ok(RotateOutcome::Conflict { .. }) => {}
                    Err(e) => {
                        ctx.metrics.error(if e.is_unavailable() { "store_unavailable" } else { "store" });
                        warn!(secret = %d.name.as_str(), error = %error_chain(&e), "Could not rotate API secret");
                    }
                }
            }
        }
        Err(e) => {
            ctx.metrics.error("store_unavailable");
            warn!(error = %error_chain(&e), "Could not list due rotations");
        }
    }
    if let Err(e) = ctx.store.expire_grace_versions(now).await {
        warn!(error = %error_chain(&e), "Could not expire grace versions");
    }
}
