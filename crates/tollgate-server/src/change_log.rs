//! Follows the store's change log ([`ChangeLog`](tollgate_core::ports::ChangeLog)), so that a change made anywhere,
//! on another node or by the CLI, reaches this node's key cache within a second: a revoked key, a suspended tenant,
//! an archived project.
//!
//! The store writes the log itself, in the same transaction as each change. This node reads its last few seconds
//! every [`POLL_EVERY`] and applies what it has not applied yet: [`KeyCache::invalidate`] for a key,
//! [`KeyCache::invalidate_tenant`] for a tenant. Where the store can signal a commit (PostgreSQL's LISTEN/NOTIFY), a
//! signal makes it read at once; the signal is only a hint, and a lost one costs at most one poll. The follower
//! never fails a request and never panics: a read that fails is logged once per outage and retried, and meanwhile
//! the key cache, which knows when the log was last read, stops trusting old entries ([`crate::key_cache::MAX_LAG`]).
//! Old rows are pruned by every node now and then.

use crate::app::App;
use crate::key_cache::KeyCache;
use crate::outage::Outage;
use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tollgate_core::ports::{Change, Changed};

/// How often the log is read: with the read itself, a change reaches this node well within a second.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// How far back, by the store's clock, each read reaches. Ids are not commit-ordered on PostgreSQL (a transaction
/// that took its id first may commit last), so reading "after the last id seen" could skip a change for good;
/// re-reading a trailing window cannot, unless its transaction commits more than this after the change, which
/// the key cache's 5 s time-to-live still bounds. A change is re-read about 20 times: one small row each time.
pub const WINDOW: Duration = Duration::from_secs(5);
/// How long rows stay in the log: far longer than any reader's window, short enough to keep it small.
pub const KEEP: Duration = Duration::from_secs(3_600);
/// How often this node prunes the log.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How long to wait before asking for a change signal again, once it failed.
const SIGNAL_RETRY: Duration = Duration::from_secs(5);

/// A node's follower of the change log: started by `App::build`, stopped by `App::close`. Its tasks hold the app
/// weakly, so an app dropped without `close` (a test's, the CLI's) still goes away, and they with it.
#[derive(Debug, Default)]
pub struct ChangeFollower {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl ChangeFollower {
    /// A follower not yet started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts reading the log for `app` (whose key cache it keeps in step), listening for the store's change
    /// signal, and pruning.
    pub fn start(&self, app: Weak<App>) {
        let wake = Arc::new(Notify::new());
        // The reader ends when the app is gone; its guard then ends the other two.
        let reading = self.stop.child_token();
        self.tasks
            .spawn(self.stop.clone().run_until_cancelled_owned(follow(
                app.clone(),
                Arc::clone(&wake),
                reading.clone().drop_guard(),
            )));
        self.tasks.spawn(
            reading
                .clone()
                .run_until_cancelled_owned(listen(app.clone(), wake)),
        );
        self.tasks
            .spawn(reading.run_until_cancelled_owned(prune(app)));
        self.tasks.close();
    }

    /// Stops following (the server is stopping).
    pub async fn close(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

/// The ids of the log's window that have been applied.
#[derive(Debug, Default)]
struct Applied {
    ids: HashSet<i64>,
}

impl Applied {
    /// What a read of the window holds that was not applied before. Remembers only the read's ids: a row that has
    /// left the window is never read again (but if the store's clock stepped back, and then it is only forgotten
    /// twice, which is harmless).
    fn fresh(&mut self, read: Vec<Change>) -> Vec<Changed> {
        let ids = read.iter().map(|c| c.id).collect();
        let fresh = read
            .into_iter()
            .filter(|c| !self.ids.contains(&c.id))
            .map(|c| c.changed)
            .collect();
        self.ids = ids;
        fresh
    }
}

/// Forgets what `changed` names.
async fn apply(keys: &KeyCache, changed: Changed) {
    match changed {
        Changed::Key(digest) => keys.invalidate(&digest).await,
        Changed::Tenant(tenant_id) => keys.invalidate_tenant(&tenant_id),
        Changed::Everything => keys.invalidate_all(),
    }
}

/// Reads the log every [`POLL_EVERY`], or at once when woken, until the app is gone.
async fn follow(app: Weak<App>, wake: Arc<Notify>, _done: DropGuard) {
    let mut applied = Applied::default();
    let mut outage = Outage::default();
    loop {
        {
            let Some(app) = app.upgrade() else {
                return;
            };
            let started = Instant::now();
            match app.store.recent_changes(WINDOW).await {
                Ok(read) => {
                    for changed in applied.fresh(read) {
                        apply(&app.keys, changed).await;
                    }
                    app.keys.caught_up(started);
                    outage.ended("the change log is read again: changes made elsewhere reach this node");
                }
                Err(error) => outage.failed(
                    &error,
                    "cannot read the change log: changes made on other nodes or by the CLI may not reach this \
                     node, so it serves no cached key read more than a second ago until it can",
                ),
            }
        }
        // A wake-up that comes during a read is kept (a stored permit): the next wait ends at once.
        tokio::select! {
            () = tokio::time::sleep(POLL_EVERY) => {}
            () = wake.notified() => {}
        }
    }
}

/// Wakes the reader on each change signal, for as long as the store has one.
async fn listen(app: Weak<App>, wake: Arc<Notify>) {
    let mut outage = Outage::default();
    loop {
        let signal = match app.upgrade() {
            Some(app) => app.store.change_signal().await,
            None => return,
        };
        let error = match signal {
            // This store cannot signal (SQLite): the reader polls alone.
            Ok(None) => return,
            Ok(Some(mut signal)) => {
                outage.ended("listening for change notifications again");
                // Whatever was signalled while there was no signal is lost: read the log now.
                wake.notify_one();
                loop {
                    match signal.wait().await {
                        Ok(()) => wake.notify_one(),
                        Err(error) => break error,
                    }
                }
            }
            Err(error) => error,
        };
        outage.failed(
            &error,
            "change notifications are down: reading the change log every 250 ms alone until they are back",
        );
        tokio::time::sleep(SIGNAL_RETRY).await;
    }
}

/// Deletes rows older than [`KEEP`] every [`PRUNE_EVERY`], starting now. Apart from the reader, so that a prune
/// waiting for SQLite's write lock never delays a read.
async fn prune(app: Weak<App>) {
    let mut outage = Outage::default();
    loop {
        {
            let Some(app) = app.upgrade() else {
                return;
            };
            match app.store.prune_changes(KEEP).await {
                Ok(_) => outage.ended("the change log is pruned again"),
                Err(error) => outage.failed(
                    &error,
                    "pruning the change log failed; trying again every minute",
                ),
            }
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::key::KeyDigest;

    fn change(id: i64, changed: Changed) -> Change {
        Change {
            id,
            changed,
            at_ms: 0,
        }
    }

    #[test]
    fn a_change_committed_late_with_a_lower_id_is_applied_once_and_nothing_twice() {
        let (a, b) = (
            KeyDigest::from_bytes([1; 32]),
            KeyDigest::from_bytes([2; 32]),
        );
        let mut applied = Applied::default();
        // Id 7 was taken first but committed after 8: the first read sees only 8.
        assert_eq!(
            applied.fresh(vec![change(8, Changed::Key(b))]),
            vec![Changed::Key(b)]
        );
        assert_eq!(
            applied.fresh(vec![change(7, Changed::Key(a)), change(8, Changed::Key(b))]),
            vec![Changed::Key(a)]
        );
        assert_eq!(
            applied.fresh(vec![change(7, Changed::Key(a)), change(8, Changed::Key(b))]),
            vec![]
        );
        // 7 left the window; 9 is new.
        assert_eq!(
            applied.fresh(vec![
                change(8, Changed::Key(b)),
                change(9, Changed::Tenant("org_1".into()))
            ]),
            vec![Changed::Tenant("org_1".into())]
        );
    }
}
