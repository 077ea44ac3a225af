//! Open sessions by certificate serial, so a revocation or a shutdown can
//! reach every session it concerns.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use gatehouse_auth::Serial;
use gatehouse_gate::{CrlEvent, SessionIndex};
use tokio::sync::mpsc;

/// What the broker asks of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Its certificate was revoked: DISCONNECT 0x87 and close.
    Revoked,
    /// The broker stops: DISCONNECT 0x8B and close.
    Shutdown,
}

/// One open session: its id and its control channel.
#[derive(Debug)]
struct Entry {
    id: u64,
    tx: mpsc::Sender<Control>,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: Mutex<SessionIndex<Entry>>,
    next: AtomicU64,
}

/// Removes the session from the registry when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    serial: Serial,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let id = self.id;
        self.registry.lock().remove(&self.serial, |e| e.id == id);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, SessionIndex<Entry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn register(
        self: &Arc<Self>,
        serial: Serial,
    ) -> (Registration, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(2);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(serial, Entry { id, tx });
        (
            Registration {
                registry: self.clone(),
                serial,
                id,
            },
            rx,
        )
    }

    /// Tells every session `event` concerns that its certificate was
    /// revoked; returns how many were told.
    pub(crate) fn revoke(&self, event: CrlEvent<'_>) -> usize {
        let index = self.lock();
        let cut = index.to_cut(event);
        for (_, e) in &cut {
            // Full means it was already told something.
            let _ = e.tx.try_send(Control::Revoked);
        }
        cut.len()
    }

    /// Tells every session `control`; returns how many were told.
    pub(crate) fn signal_all(&self, control: Control) -> usize {
        let index = self.lock();
        for e in index.all() {
            let _ = e.tx.try_send(control);
        }
        index.len()
    }
}
