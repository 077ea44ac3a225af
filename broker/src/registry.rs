//! Open sessions by certificate serial, so a revocation or a shutdown can
//! reach every session it concerns.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use gatehouse_auth::Serial;
use tokio::sync::mpsc;

/// What the broker asks of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Its certificate was revoked: DISCONNECT 0x87 and close.
    Revoked,
    /// The broker stops: DISCONNECT 0x8B and close.
    Shutdown,
}

type Senders = HashMap<u64, mpsc::Sender<Control>>;

#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<Serial, Senders>>,
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
        let mut map = self.registry.lock();
        if let Some(senders) = map.get_mut(&self.serial) {
            senders.remove(&self.id);
            if senders.is_empty() {
                map.remove(&self.serial);
            }
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Serial, Senders>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn register(
        self: &Arc<Self>,
        serial: Serial,
    ) -> (Registration, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(2);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(serial).or_default().insert(id, tx);
        (
            Registration {
                registry: self.clone(),
                serial,
                id,
            },
            rx,
        )
    }

    /// Signals every session of these serials; returns how many were told.
    pub(crate) fn signal<'a>(
        &self,
        serials: impl IntoIterator<Item = &'a Serial>,
        control: Control,
    ) -> usize {
        let map = self.lock();
        let mut n = 0;
        for serial in serials {
            if let Some(senders) = map.get(serial) {
                for tx in senders.values() {
                    // Full means it was already told something.
                    let _ = tx.try_send(control);
                    n += 1;
                }
            }
        }
        n
    }

    /// Serials with open sessions.
    pub(crate) fn serials(&self) -> Vec<Serial> {
        self.lock().keys().copied().collect()
    }

    pub(crate) fn signal_all(&self, control: Control) -> usize {
        let serials = self.serials();
        self.signal(serials.iter(), control)
    }
}
