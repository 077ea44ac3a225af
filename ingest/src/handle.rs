//! The submitting side: a cloneable handle the broker (or the Mosquitto
//! plugin, from its own threads) uses to hand records to ingest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gatehouse_config::{AckMode, WhenFull};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::ack::{Ack, AckError, Durability};
use crate::metrics::{DropReason, Metrics};
use crate::record::Record;
use crate::spool::Spool;

pub(crate) struct Msg {
    pub record: Record,
    pub ack: Option<Ack>,
}

/// What happened to a submitted record (also counted in metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// In the in-memory queue.
    Queued,
    /// The queue was full; written to the durable spool instead (`when_full = "spool"`).
    Spooled,
    /// Not stored; its ack (if any) reports the same reason.
    Dropped(DropReason),
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub tx: mpsc::Sender<Msg>,
    pub when_full: WhenFull,
    pub block_timeout: Duration,
    pub ack: AckMode,
    pub spool: Spool,
    pub metrics: Metrics,
    pub runtime: Handle,
    pub closed: AtomicBool,
}

/// Cheap to clone, `Send + Sync`; hand one to every connection or thread.
///
/// [`IngestHandle::submit`] never waits unboundedly, whatever thread calls it:
///
/// * `when_full = "drop_newest"` and `"spool"` never wait at all (the spool
///   path only copies the record into the spool's write buffer; the disk is
///   the spool thread's business);
/// * `when_full = "block"` waits for room at most `block_timeout`. From a
///   thread outside any tokio runtime (the Mosquitto plugin's threads) it
///   blocks that thread; from a multi-threaded runtime's worker it uses
///   `block_in_place`; from a current-thread runtime it cannot wait without
///   deadlocking, so the record is dropped (`would_block`) — async callers
///   should use [`IngestHandle::submit_async`] instead.
#[derive(Debug, Clone)]
pub struct IngestHandle {
    pub(crate) shared: Arc<Shared>,
}

impl IngestHandle {
    /// Submits a record from synchronous code. With `ack = "durable"` the ack
    /// fires once the record is committed or spooled; with `ack = "none"` as
    /// soon as it is accepted.
    pub fn submit(&self, record: Record, ack: Option<Ack>) -> Submitted {
        let s = &self.shared;
        let msg = match self.try_enqueue(record, ack) {
            Ok(outcome) => return outcome,
            Err(msg) => msg,
        };
        match s.when_full {
            WhenFull::DropNewest => self.drop_msg(msg, DropReason::QueueFull),
            WhenFull::Spool => self.spool_msg(msg),
            WhenFull::Block => self.block(msg),
        }
    }

    /// Submits a record from async code; with `when_full = "block"` it awaits
    /// room for at most `block_timeout`.
    pub async fn submit_async(&self, record: Record, ack: Option<Ack>) -> Submitted {
        let s = &self.shared;
        let msg = match self.try_enqueue(record, ack) {
            Ok(outcome) => return outcome,
            Err(msg) => msg,
        };
        match s.when_full {
            WhenFull::DropNewest => self.drop_msg(msg, DropReason::QueueFull),
            WhenFull::Spool => self.spool_msg(msg),
            WhenFull::Block => match tokio::time::timeout(s.block_timeout, s.tx.reserve()).await {
                Ok(Ok(permit)) => self.send_with(permit, msg),
                Ok(Err(_)) => self.drop_msg(msg, DropReason::Shutdown),
                Err(_) => self.drop_msg(msg, DropReason::BlockTimeout),
            },
        }
    }

    /// The configured acknowledgement mode (the broker holds PUBACKs only with `Durable`).
    pub fn ack_mode(&self) -> AckMode {
        self.shared.ack
    }

    /// `Ok` when queued (or dropped for a reason that needs no fallback); `Err(msg)` when the queue is full.
    fn try_enqueue(&self, record: Record, ack: Option<Ack>) -> Result<Submitted, Msg> {
        let s = &self.shared;
        s.metrics.submitted.inc();
        let msg = Msg { record, ack };
        if s.closed.load(Ordering::Acquire) {
            return Ok(self.drop_msg(msg, DropReason::Shutdown));
        }
        match s.tx.try_reserve() {
            Ok(permit) => Ok(self.send_with(permit, msg)),
            Err(TrySendError::Closed(())) => Ok(self.drop_msg(msg, DropReason::Shutdown)),
            Err(TrySendError::Full(())) => Err(msg),
        }
    }

    fn send_with(&self, permit: mpsc::Permit<'_, Msg>, mut msg: Msg) -> Submitted {
        if self.shared.ack == AckMode::None {
            if let Some(ack) = msg.ack.take() {
                ack.resolve(Ok(Durability::Queued));
            }
        }
        permit.send(msg);
        Submitted::Queued
    }

    fn drop_msg(&self, msg: Msg, reason: DropReason) -> Submitted {
        self.shared.metrics.dropped(reason, 1);
        if let Some(ack) = msg.ack {
            ack.resolve(Err(AckError::Dropped(reason)));
        }
        Submitted::Dropped(reason)
    }

    fn spool_msg(&self, mut msg: Msg) -> Submitted {
        let s = &self.shared;
        let ack = match s.ack {
            AckMode::Durable => msg.ack.take(),
            AckMode::None => None,
        };
        if s.spool.append_record(&msg.record, ack) {
            if let Some(ack) = msg.ack {
                ack.resolve(Ok(Durability::Queued));
            }
            Submitted::Spooled
        } else {
            // append_record counted the drop and resolved a durable ack.
            if let Some(ack) = msg.ack {
                ack.resolve(Err(AckError::Dropped(DropReason::SpoolFull)));
            }
            Submitted::Dropped(DropReason::SpoolFull)
        }
    }

    fn block(&self, msg: Msg) -> Submitted {
        let s = &self.shared;
        let wait = || {
            s.runtime.block_on(async {
                match tokio::time::timeout(s.block_timeout, s.tx.reserve()).await {
                    Ok(Ok(permit)) => Ok(permit),
                    Ok(Err(_)) => Err(DropReason::Shutdown),
                    Err(_) => Err(DropReason::BlockTimeout),
                }
            })
        };
        let permit = match Handle::try_current() {
            Err(_) => wait(),
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            Ok(_) => Err(DropReason::WouldBlock),
        };
        match permit {
            Ok(permit) => self.send_with(permit, msg),
            Err(reason) => self.drop_msg(msg, reason),
        }
    }
}
