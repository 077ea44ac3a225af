//! Presence on the provisioning store: [`StorePresence`] keeps each
//! gateway's `is_online` / `last_seen` in the registry that the provisioning
//! sidecar owns (admin API `GET /api/gateways`).

use std::collections::HashMap;

use gatehouse_provisioning::Store;
use tokio::sync::mpsc;

use crate::presence::{PresenceEvent, PresenceSink};

/// A [`PresenceSink`] writing to the provisioning store. Events go through
/// an unbounded channel to one writer task, in order, so sessions never wait
/// on the database. Only operational certificates (gateways) are recorded;
/// a gateway stays online while any of its sessions is open (a takeover's
/// late disconnect does not mark it offline).
#[derive(Debug)]
pub struct StorePresence {
    events: mpsc::UnboundedSender<PresenceEvent>,
}

impl StorePresence {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(store: Store) -> StorePresence {
        let (events, mut rx) = mpsc::unbounded_channel::<PresenceEvent>();
        tokio::spawn(async move {
            let mut open: HashMap<String, usize> = HashMap::new();
            while let Some(e) = rx.recv().await {
                let Some(code) = e.gateway.clone() else {
                    continue;
                };
                let online = if e.reason.is_none() {
                    *open.entry(code.clone()).or_default() += 1;
                    true
                } else {
                    let n = open.entry(code.clone()).or_default();
                    *n = n.saturating_sub(1);
                    let still = *n > 0;
                    if !still {
                        open.remove(&code);
                    }
                    still
                };
                let done = if online {
                    store.mark_online(&code, e.at).await
                } else {
                    store.mark_offline(&code, e.at).await
                };
                match done {
                    Ok(true) => {}
                    Ok(false) => tracing::debug!(
                        gateway = %code,
                        "presence: gateway not in the registry (certificate not issued by the provisioning sidecar)"
                    ),
                    Err(e) => tracing::warn!(
                        gateway = %code,
                        error = %e,
                        "presence: cannot update is_online/last_seen in the provisioning store"
                    ),
                }
            }
        });
        StorePresence { events }
    }
}

impl PresenceSink for StorePresence {
    fn on_connect(&self, event: &PresenceEvent) {
        crate::presence::LogPresence.on_connect(event);
        let _ = self.events.send(event.clone());
    }

    fn on_disconnect(&self, event: &PresenceEvent) {
        crate::presence::LogPresence.on_disconnect(event);
        let _ = self.events.send(event.clone());
    }
}
