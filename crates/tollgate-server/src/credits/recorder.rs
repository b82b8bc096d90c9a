//! The group-committing recorder: finished requests queue here, and one task writes whatever has queued in one
//! store transaction, then tells each request its charge (which its hold then takes off the node's lease). A
//! request answers only after its batch committed, so an acknowledged charge survives a crash; under load many
//! requests share one commit (one fsync). Each settlement's `request.completed` audit event is written with it; a
//! refused request's event ([`Recorder::record`]) rides in the next batch, and nobody waits for it.
//!
//! A settlement is work the upstream already did, so the recorder never drops one while the store may recover:
//! - a batch the store cannot take *now* (locked, full, read-only, unreachable) is retried, with backoff, until it
//!   commits; meanwhile [`Recorder::is_writable`] is false, so new paid requests are refused instead of served
//!   free;
//! - a batch that fails for good is split, each settlement retried alone, so one bad settlement fails alone;
//! - on shutdown, [`Recorder::close`] stops new settlements, and writes every queued one before it returns (bounded
//!   by a deadline, after which what is left is logged by request id).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;
use tollgate_core::audit::AuditEvent;
use tollgate_core::credits::Settlement;
use tollgate_core::money::Micros;
use tollgate_core::ports::{SettledBatch, Store, StoreError};

/// The most settlements written in one transaction.
const MAX_BATCH: usize = 512;
/// Settlements waiting for the writer before senders wait too.
const QUEUE: usize = 8_192;
/// The first wait before retrying a store that could not be written.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// The longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Where a request waits for its charge.
type Waiter = oneshot::Sender<Result<Micros, RecordError>>;

enum Job {
    /// A finished request, and where it waits for its charge.
    Settle {
        /// What it settles.
        settlement: Settlement,
        /// Told the charge once committed.
        done: Waiter,
    },
    /// A refused request's audit event: nobody waits for it.
    Event(AuditEvent),
}

/// Why a settlement was not recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// The store refused this settlement for good (it failed on its own, outside any batch).
    #[error("recording failed: {0}")]
    Failed(String),
    /// The recorder has stopped (the server is shutting down).
    #[error("the recorder has stopped")]
    Stopped,
}

impl From<RecordError> for StoreError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Failed(detail) => StoreError::Backend(detail),
            RecordError::Stopped => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// A handle on the recorder task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    jobs: mpsc::Sender<Job>,
    /// False from a failed write until the next commit; shared with the writer task.
    writable: Arc<AtomicBool>,
    /// Set to the deadline by [`Recorder::close`].
    closing: Arc<watch::Sender<Option<Instant>>>,
    /// The writer task.
    task: TaskTracker,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Settle { settlement, .. } => f
                .debug_struct("Settle")
                .field("request_id", &settlement.request_id)
                .finish(),
            Self::Event(event) => f
                .debug_struct("Event")
                .field("request_id", &event.origin.request_id)
                .finish(),
        }
    }
}

impl Recorder {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Arc<dyn Store>, node_id: String) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let writable = Arc::new(AtomicBool::new(true));
        let (closing, deadline) = watch::channel(None);
        let task = TaskTracker::new();
        let writer = Writer {
            store,
            node_id,
            writable: Arc::clone(&writable),
            queue,
            deadline,
            pending: VecDeque::new(),
        };
        task.spawn(writer.run());
        task.close();
        Self {
            jobs,
            writable,
            closing: Arc::new(closing),
            task,
        }
    }

    /// Records a finished request and waits until it is durable; returns the amount charged. While the store
    /// cannot be written this waits: the settlement is retried until it commits or the recorder is closed.
    pub async fn settle(&self, settlement: Settlement) -> Result<Micros, RecordError> {
        let (done, committed) = oneshot::channel();
        self.jobs
            .send(Job::Settle { settlement, done })
            .await
            .map_err(|_| RecordError::Stopped)?;
        committed.await.map_err(|_| RecordError::Stopped)?
    }

    /// Queues a refused request's audit event for the next batch and returns at once (waiting only while the
    /// queue is full); it is retried as settlements are. Once the recorder has stopped, the event is logged as lost.
    pub async fn record(&self, event: AuditEvent) {
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(Job::Event(event)).await {
            lost(&job);
        }
    }

    /// [`Recorder::record`] from code that cannot wait (a drop): when the queue is full the event is logged as lost.
    pub fn record_now(&self, event: AuditEvent) {
        match self.jobs.try_send(Job::Event(event)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Job::Event(e))) => {
                tracing::error!(request_id = e.origin.request_id.as_deref(), tenant_id = %e.tenant_id,
                    status = e.status, "the recorder's queue is full: this audit event was not recorded");
            }
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                lost(&job)
            }
        }
    }

    /// Whether the last write succeeded: when false, the store cannot be written for now and new paid requests
    /// must be refused.
    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// Stops taking settlements and writes every one already queued, retrying for at most `timeout`; returns once
    /// the writer has finished.
    pub async fn close(&self, timeout: Duration) {
        self.closing.send_replace(Some(Instant::now() + timeout));
        self.task.wait().await;
    }
}

/// The writer task's state.
struct Writer {
    store: Arc<dyn Store>,
    /// Whose leases the charges come off.
    node_id: String,
    writable: Arc<AtomicBool>,
    queue: mpsc::Receiver<Job>,
    deadline: watch::Receiver<Option<Instant>>,
    /// Taken from the queue, not yet written (oldest first).
    pending: VecDeque<Job>,
}

impl Writer {
    async fn run(mut self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if !self.fill().await {
                return;
            }
            let take = self.pending.len().min(MAX_BATCH);
            let batch: Vec<Job> = self.pending.drain(..take).collect();
            match self.write(batch).await {
                Ok(()) => {
                    self.writable.store(true, Ordering::Release);
                    backoff = FIRST_BACKOFF;
                }
                Err(error) => {
                    if self.writable.swap(false, Ordering::AcqRel) {
                        tracing::error!(%error, pending = self.pending.len(),
                            "the store cannot record charges; retrying, and refusing new paid requests meanwhile");
                    }
                    if !self.pause(backoff).await {
                        self.give_up();
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Waits for work when there is none, then takes whatever else is queued. False when the recorder is closed
    /// and nothing is left.
    async fn fill(&mut self) -> bool {
        if self.pending.is_empty() {
            let mut got = Vec::new();
            loop {
                tokio::select! {
                    n = self.queue.recv_many(&mut got, MAX_BATCH) => {
                        if n == 0 {
                            return false;
                        }
                        break;
                    }
                    // Closing: refuse new settlements; what is queued still arrives through `recv_many`.
                    Ok(()) = self.deadline.changed() => self.queue.close(),
                }
            }
            self.pending.extend(got);
        }
        while self.pending.len() < MAX_BATCH {
            match self.queue.try_recv() {
                Ok(job) => self.pending.push_back(job),
                Err(_) => break,
            }
        }
        true
    }

    /// Writes `batch`; what could not be written for now goes back to the front of `pending` (error returned).
    /// A batch that fails for good is retried one job at a time, so only a bad one fails.
    async fn write(&mut self, batch: Vec<Job>) -> Result<(), StoreError> {
        let mut settlements = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        for job in batch {
            match job {
                Job::Settle { settlement, done } => {
                    settlements.push(settlement);
                    waiting.push(done);
                }
                Job::Event(event) => events.push(event),
            }
        }
        let error = match self
            .store
            .settle(&self.node_id, &settlements, &events)
            .await
        {
            Ok(settled) => {
                self.commit(waiting, settled);
                return Ok(());
            }
            Err(error) => error,
        };
        let batch: Vec<Job> = settlements
            .into_iter()
            .zip(waiting)
            .map(|(settlement, done)| Job::Settle { settlement, done })
            .chain(events.into_iter().map(Job::Event))
            .collect();
        if error.is_transient() {
            self.requeue(batch);
            return Err(error);
        }
        if batch.len() > 1 {
            tracing::warn!(%error, requests = batch.len(), "a batch of settlements failed; writing each alone");
        }
        let mut jobs = batch.into_iter();
        while let Some(job) = jobs.next() {
            if let Err((job, error)) = self.write_alone(job).await {
                // The store became unavailable: this job and the rest wait, in order.
                self.requeue(std::iter::once(job).chain(jobs).collect());
                return Err(error);
            }
        }
        Ok(())
    }

    /// Writes one job; one the store refuses for good fails alone (logged), one it cannot take now comes back with
    /// the error.
    async fn write_alone(&mut self, job: Job) -> Result<(), (Job, StoreError)> {
        let written = match &job {
            Job::Settle { settlement, .. } => {
                self.store
                    .settle(&self.node_id, std::slice::from_ref(settlement), &[])
                    .await
            }
            Job::Event(event) => {
                self.store
                    .settle(&self.node_id, &[], std::slice::from_ref(event))
                    .await
            }
        };
        match (written, job) {
            (Ok(settled), Job::Settle { done, .. }) => {
                self.commit(vec![done], settled);
                Ok(())
            }
            (Ok(_), Job::Event(_)) => Ok(()),
            (Err(error), job) if error.is_transient() => Err((job, error)),
            (
                Err(error),
                Job::Settle {
                    settlement: s,
                    done,
                },
            ) => {
                tracing::error!(%error, request_id = %s.request_id, tenant_id = %s.tenant_id,
                    cost_cents = %s.cost, "a settlement failed on its own: not recorded");
                let _ = done.send(Err(RecordError::Failed(error.to_string())));
                Ok(())
            }
            (Err(error), Job::Event(e)) => {
                tracing::error!(%error, request_id = e.origin.request_id.as_deref(), tenant_id = %e.tenant_id,
                    status = e.status, "a refused request's audit event failed on its own: not recorded");
                Ok(())
            }
        }
    }

    /// Tells each request of a committed batch its charge.
    fn commit(&self, waiting: Vec<Waiter>, settled: SettledBatch) {
        for (done, charged) in waiting.into_iter().zip(settled.charged) {
            let _ = done.send(Ok(charged));
        }
    }

    /// Puts a batch back at the front of `pending`, in order.
    fn requeue(&mut self, batch: Vec<Job>) {
        for job in batch.into_iter().rev() {
            self.pending.push_front(job);
        }
    }

    /// Waits `backoff` before the next attempt; false once the close deadline has passed.
    async fn pause(&mut self, backoff: Duration) -> bool {
        let deadline = *self.deadline.borrow();
        match deadline {
            Some(deadline) if Instant::now() >= deadline => false,
            Some(deadline) => {
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                true
            }
            None => {
                tokio::time::sleep(backoff).await;
                true
            }
        }
    }

    /// The close deadline passed with the store still unwritable: name every settlement that is lost.
    fn give_up(&mut self) {
        self.queue.close();
        while let Ok(job) = self.queue.try_recv() {
            self.pending.push_back(job);
        }
        for job in self.pending.drain(..) {
            lost(&job);
            if let Job::Settle { done, .. } = job {
                let _ = done.send(Err(RecordError::Stopped));
            }
        }
    }
}

/// Logs a job that will never be written.
fn lost(job: &Job) {
    match job {
        Job::Settle { settlement: s, .. } => {
            tracing::error!(request_id = %s.request_id, tenant_id = %s.tenant_id, cost_cents = %s.cost,
                prompt_tokens = s.prompt_tokens, completion_tokens = s.completion_tokens,
                "shutting down with the store unwritable: this settlement was not recorded");
        }
        Job::Event(e) => {
            tracing::error!(request_id = e.origin.request_id.as_deref(), tenant_id = %e.tenant_id,
                status = e.status, "the recorder has stopped: this refused request's audit event was not recorded");
        }
    }
}

#[cfg(test)]
#[expect(clippy::disallowed_methods, reason = "test tasks are awaited")]
mod tests {
    use super::*;
    use crate::test_support::{audit, store_and_tenant};
    use sqlx::Connection;
    use sqlx::sqlite::SqliteConnection;
    use tollgate_core::audit::EventType;
    use tollgate_core::tenant::NewTenant;

    fn settlement(t: &NewTenant, request_id: &str, cost: i64) -> Settlement {
        Settlement {
            request_id: request_id.to_owned(),
            tenant_id: t.tenant.id.clone(),
            project_id: t.project.id.clone(),
            key_id: t.admin_key.id.clone(),
            key_last4: "abcd".to_owned(),
            model: "fast".to_owned(),
            prompt_tokens: 1,
            completion_tokens: 1,
            cost: Micros(cost),
            at: 10,
            status: 200,
            latency_ms: 1,
            origin: Default::default(),
            spend_period: None,
            idempotency: None,
        }
    }

    /// One settlement the store refuses for good fails alone; the others of its batch are recorded.
    #[tokio::test]
    async fn a_bad_settlement_fails_alone_and_the_rest_of_its_batch_commits() {
        let (_dir, url, store, t) = store_and_tenant().await;
        store.create_tenant(&t, &[]).await.unwrap();
        store
            .grant(
                &t.tenant.id,
                Micros(1_000),
                None,
                2,
                &audit(EventType::CreditsGranted, &t.tenant.id),
            )
            .await
            .unwrap();
        let mut other = SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TRIGGER bad_row BEFORE INSERT ON usage_records WHEN NEW.request_id = 'req_bad' \
             BEGIN SELECT RAISE(ABORT, 'a bad row'); END",
        )
        .execute(&mut other)
        .await
        .unwrap();
        // Hold the write lock so the three queue up and are written as one batch once it is released.
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        let recorder = Recorder::start(Arc::clone(&store), "node_test".to_owned());
        let jobs = ["req_a", "req_bad", "req_b"].map(|id| {
            let recorder = recorder.clone();
            let s = settlement(&t, id, 100);
            tokio::spawn(async move { recorder.settle(s).await })
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
        let mut results = Vec::new();
        for job in jobs {
            results.push(job.await.unwrap());
        }
        assert_eq!(results[0].as_ref().ok(), Some(&Micros(100)));
        assert!(
            matches!(results[1], Err(RecordError::Failed(_))),
            "{results:?}"
        );
        assert_eq!(results[2].as_ref().ok(), Some(&Micros(100)));
        let balance = store.balance(&t.tenant.id).await.unwrap();
        assert_eq!(balance.balance, Micros(800), "two charges, not three");
        assert!(recorder.is_writable(), "a bad row is not an outage");
        recorder.close(Duration::from_secs(1)).await;
        let after = recorder.settle(settlement(&t, "req_late", 1)).await;
        assert!(matches!(after, Err(RecordError::Stopped)), "{after:?}");
    }
}
