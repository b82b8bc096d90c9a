//! The group-committing recorder: finished requests queue here, and one task writes whatever has queued in one
//! store transaction, then tells each request its charge. A request answers only after its batch committed, so an
//! acknowledged charge survives a crash; under load many requests share one commit (one fsync).

use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tollgate_core::credits::Settlement;
use tollgate_core::money::Micros;
use tollgate_core::ports::{Store, StoreError};

/// The most settlements written in one transaction.
const MAX_BATCH: usize = 512;
/// Settlements waiting for the writer before senders wait too.
const QUEUE: usize = 8_192;

struct Job {
    settlement: Settlement,
    done: oneshot::Sender<Result<Micros, String>>,
}

/// Why a settlement was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The store failed the batch.
    #[error("recording failed: {0}")]
    Store(String),
    /// The recorder has stopped (the server is shutting down).
    #[error("the recorder has stopped")]
    Stopped,
}

impl From<RecordError> for StoreError {
    fn from(e: RecordError) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// A handle on the recorder task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("request_id", &self.settlement.request_id)
            .finish()
    }
}

impl Recorder {
    /// Starts the writer task on the current runtime; it ends when every handle is dropped.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(store, queue));
        Self { jobs }
    }

    /// Records a finished request and waits until it is durable; returns the amount charged.
    pub async fn settle(&self, settlement: Settlement) -> Result<Micros, RecordError> {
        let (done, committed) = oneshot::channel();
        self.jobs
            .send(Job { settlement, done })
            .await
            .map_err(|_| RecordError::Stopped)?;
        committed
            .await
            .map_err(|_| RecordError::Stopped)?
            .map_err(RecordError::Store)
    }
}

async fn write_batches(store: Arc<dyn Store>, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // `recv_many` waits for one job, then takes every job already queued: the group in group commit.
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (settlements, waiting): (Vec<Settlement>, Vec<_>) =
            batch.drain(..).map(|j| (j.settlement, j.done)).unzip();
        match store.settle(&settlements).await {
            Ok(charged) => {
                for (done, charged) in waiting.into_iter().zip(charged) {
                    let _ = done.send(Ok(charged));
                }
            }
            Err(error) => {
                tracing::error!(%error, requests = waiting.len(), "recording a batch of settlements failed");
                for done in waiting {
                    let _ = done.send(Err(error.to_string()));
                }
            }
        }
    }
}
