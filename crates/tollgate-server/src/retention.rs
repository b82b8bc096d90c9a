//! Retention: with `audit_retention_days` set, every node prunes events older than that now and then
//! ([`AuditLog::prune_audit`](tollgate_core::ports::AuditLog::prune_audit), which keeps each chain verifiable from
//! an anchor), and every node deletes dashboard sessions that have ended (signed out or past their absolute expiry:
//! [`SessionStore::prune_sessions`](tollgate_core::ports::SessionStore::prune_sessions)). Pruning twice, or on
//! several nodes at once, is harmless: each chain is pruned under its lock, and an ended session is never read.

use crate::app::App;
use crate::outage::Outage;
use std::sync::Weak;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a node prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);
const DAY: i64 = 86_400;

/// The pruning task of a node: started by `App::build` when retention is set, stopped by `App::close`. It holds the
/// app weakly, so an app dropped without `close` still goes away.
#[derive(Debug, Default)]
pub struct Retention {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Retention {
    /// A task not yet started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prunes `app`'s ended sessions, and its audit log if its configuration keeps events for a limited number of
    /// days (`days` > 0), now and every hour (`PRUNE_EVERY`).
    pub fn start(&self, app: Weak<App>, days: u64) {
        let keep = (days > 0).then(|| i64::try_from(days).unwrap_or(i64::MAX).saturating_mul(DAY));
        self.tasks.spawn(
            self.stop
                .clone()
                .run_until_cancelled_owned(prune(app, keep)),
        );
        self.tasks.close();
    }

    /// Stops pruning (the server is stopping).
    pub async fn close(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

async fn prune(app: Weak<App>, keep_seconds: Option<i64>) {
    let mut outage = Outage::default();
    let mut sessions_outage = Outage::default();
    loop {
        {
            let Some(app) = app.upgrade() else {
                return;
            };
            if let Some(keep_seconds) = keep_seconds {
                let before = app.clock.now().saturating_sub(keep_seconds);
                match app.store.prune_audit(before).await {
                    Ok(pruned) => {
                        if pruned > 0 {
                            tracing::info!(
                                pruned,
                                before,
                                "pruned audit events past their retention"
                            );
                        }
                        outage.ended("audit events are pruned again");
                    }
                    Err(error) => outage.failed(
                        &error,
                        "pruning audit events failed; trying again every hour",
                    ),
                }
            }
            match app.store.prune_sessions(app.clock.now()).await {
                Ok(_) => sessions_outage.ended("ended dashboard sessions are pruned again"),
                Err(error) => sessions_outage.failed(
                    &error,
                    "pruning ended dashboard sessions failed; trying again every hour",
                ),
            }
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}
