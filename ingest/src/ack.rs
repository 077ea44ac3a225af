//! Acknowledgements: a token that travels with a record and fires once the
//! record is durable (or could not be kept).
//!
//! ```
//! # async fn demo(handle: gatehouse_ingest::IngestHandle, record: gatehouse_ingest::Record) {
//! let (ack, waiter) = gatehouse_ingest::Ack::new();
//! handle.submit(record, Some(ack));
//! match waiter.await {
//!     Ok(_durable) => { /* send the QoS 1 PUBACK */ }
//!     Err(_lost) => { /* no PUBACK: the device will publish again */ }
//! }
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::metrics::DropReason;

/// Where a record is when its ack fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Accepted into the in-memory queue (`ack = "none"`): not durable yet.
    Queued,
    /// Written and fsynced to the spool; it reaches the database later.
    Spooled,
    /// Committed to the telemetry table.
    Committed,
    /// Committed to the reject table (undecodable payload); redelivery would not help.
    Rejected,
}

/// Why an ack reports failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The record was dropped (queue full, spool full, I/O error, shutdown, ...).
    #[error("telemetry record dropped ({0}); it was not stored")]
    Dropped(DropReason),
    /// The ingest pipeline went away before deciding.
    #[error("ingest stopped before the record was stored")]
    Lost,
}

/// The sending half: hand it to [`crate::IngestHandle::submit`] with the record.
/// Dropping it unresolved makes the waiter report [`AckError::Lost`].
#[must_use = "an Ack must travel with its record, or its waiter reports Lost"]
#[derive(Debug)]
pub struct Ack {
    tx: oneshot::Sender<Result<Durability, AckError>>,
}

/// The receiving half: `.await` it (or [`AckWaiter::blocking_wait`] from a
/// thread outside any runtime).
#[must_use = "await the waiter to learn when the record is durable"]
#[derive(Debug)]
pub struct AckWaiter {
    rx: oneshot::Receiver<Result<Durability, AckError>>,
}

impl Ack {
    /// A new ack and its waiter.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> (Ack, AckWaiter) {
        let (tx, rx) = oneshot::channel();
        (Ack { tx }, AckWaiter { rx })
    }

    pub(crate) fn resolve(self, outcome: Result<Durability, AckError>) {
        // The waiter may be gone (the client disconnected): nothing to tell.
        let _ = self.tx.send(outcome);
    }
}

impl AckWaiter {
    /// Blocks the current (non-async) thread until the ack fires.
    pub fn blocking_wait(self) -> Result<Durability, AckError> {
        self.rx.blocking_recv().unwrap_or(Err(AckError::Lost))
    }
}

impl Future for AckWaiter {
    type Output = Result<Durability, AckError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(AckError::Lost)))
    }
}

/// Resolves every ack in `acks` with the same outcome.
pub(crate) fn resolve_all(acks: Vec<Ack>, outcome: Result<Durability, AckError>) {
    for ack in acks {
        ack.resolve(outcome);
    }
}
