//! What outlives a connection (MQTT 5 §3.1.2.11.2 Session Expiry Interval,
//! §3.1.3.2.2 Will Delay Interval): a persistent session until it expires,
//! and a will until its delay has passed.
//!
//! rumqttd's router keeps a session that was linked with
//! `clean_session = false` forever and one linked with `true` not at all;
//! it knows no expiry and no will delay. So:
//!
//! * the session's lifetime is decided at CONNECT (`Lifetime`): MQTT 5 by
//!   Session Expiry Interval (Clean Start only says whether an old session
//!   is discarded), 3.1.1 by clean session; both capped by
//!   `mqtt.max_session_expiry`;
//! * a session that must end is **purged**: a link under its client id with
//!   `clean_session = true`, then DISCONNECT (the router then keeps nothing
//!   of it), and the client book forgets it — at once for a session that
//!   resumed but may not outlive its connection, after its expiry otherwise;
//! * a delayed will waits here and goes to the router through the broker's
//!   own will link when its delay (or the session) ends;
//! * a new connection with the client id cancels both [MQTT-3.1.3-9].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_auth::Kind;
use rumqttd::Notification;
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet, Publish, PublishProperties};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::router::RouterHandle;
use crate::server::Shared;

/// How long a session lives, decided at CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetime {
    /// Discard a session the client id already has.
    pub(crate) clean_start: bool,
    /// How long the session outlives its connection (zero: it ends with it).
    pub(crate) expiry: Duration,
}

impl Lifetime {
    /// MQTT 5: Session Expiry Interval (absent: 0); 3.1.1: clean session
    /// ends with the connection, a persistent one lives `max`.
    pub(crate) fn new(v5: bool, clean: bool, asked: Option<u32>, max: Duration) -> Lifetime {
        let expiry = if v5 {
            Duration::from_secs(asked.unwrap_or(0).into())
        } else if clean {
            Duration::ZERO
        } else {
            max
        };
        Lifetime {
            clean_start: clean,
            expiry: expiry.min(max),
        }
    }

    /// The router link's `clean_session`: `false` whenever an old session
    /// must be resumed or this one kept.
    pub(crate) fn link_clean(&self) -> bool {
        self.clean_start && self.expiry.is_zero()
    }

    /// An old session must be purged before linking (Clean Start with an
    /// expiry: the router would otherwise resume it).
    pub(crate) fn purge_first(&self) -> bool {
        self.clean_start && !self.expiry.is_zero()
    }

    /// The router keeps this session after the connection ends.
    pub(crate) fn router_keeps(&self) -> bool {
        !self.link_clean()
    }
}

/// Undoes [`Afterlife::connected`] if dropped before [`Admitting::admitted`]
/// (an admission refused, failed or cancelled after it).
pub(crate) struct Admitting {
    shared: Arc<Shared>,
    client_id: String,
    armed: bool,
}

impl Admitting {
    /// `None` when `keep` asks for a kept session past its kind's limit.
    pub(crate) fn new(
        shared: &Arc<Shared>,
        client_id: &str,
        clean_start: bool,
        keep: Option<(Kind, usize)>,
    ) -> Option<Admitting> {
        if !shared.afterlife.connected(client_id, clean_start, keep) {
            return None;
        }
        Some(Admitting {
            shared: shared.clone(),
            client_id: client_id.to_owned(),
            armed: true,
        })
    }

    /// The connection became a session (whose end calls [`Afterlife::ended`]).
    pub(crate) fn admitted(mut self) {
        self.armed = false;
    }
}

impl Drop for Admitting {
    fn drop(&mut self) {
        if self.armed {
            self.shared
                .afterlife
                .abandoned(&self.shared, &self.client_id);
        }
    }
}

/// A will held back by its Will Delay Interval.
pub(crate) struct DelayedWill {
    pub(crate) delay: Duration,
    pub(crate) publish: Publish,
    pub(crate) properties: Option<PublishProperties>,
}

/// Per client id: connections admitted and not yet ended, and the timer
/// of its last session's afterlife.
#[derive(Debug, Default)]
struct Entry {
    live: usize,
    timer: Option<(u64, JoinHandle<()>)>,
    /// A will waiting for its delay.
    will: Option<(Publish, Option<PublishProperties>)>,
    /// Clean Start of the last connection admitted.
    clean_start: bool,
    /// The last admission stopped a pending expiry (a kept session).
    stopped_expiry: bool,
    /// The kind whose persistent-session limit this client id counts
    /// against (it holds, or is about to hold, a kept session).
    kept: Option<Kind>,
}

/// Entries and the persistent sessions counted per kind.
#[derive(Debug, Default)]
struct Book {
    by_id: HashMap<String, Entry>,
    kept: [usize; 2],
}

impl Book {
    /// Drops `client_id`'s entry and its count.
    fn remove(&mut self, client_id: &str) {
        if let Some(kind) = self.by_id.remove(client_id).and_then(|e| e.kept) {
            self.kept[kind.index()] -= 1;
        }
    }
}

/// Timers per client id.
#[derive(Debug)]
pub(crate) struct Afterlife {
    entries: Mutex<Book>,
    next: AtomicU64,
    wills: mpsc::UnboundedSender<(Publish, Option<PublishProperties>)>,
}

/// Client id of the broker's will link (NUL: no client can take it).
const WILL_CLIENT_ID: &str = "\0gatehouse-wills";

impl Afterlife {
    /// Opens the will link. Blocks until the router answers.
    pub(crate) fn start(router: &RouterHandle) -> Result<Afterlife, String> {
        let (mut tx, mut rx, _) = router.link(WILL_CLIENT_ID, true)?;
        let (wills, mut queue) = mpsc::unbounded_channel::<(Publish, Option<PublishProperties>)>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    will = queue.recv() => {
                        let Some((publish, props)) = will else { return };
                        if tx.send(Packet::Publish(publish, props)).await.is_err() {
                            return;
                        }
                    }
                    // Acks for QoS 1 wills; the router needs to hear that
                    // the link takes more.
                    n = rx.next() => match n {
                        Ok(Some(Notification::Unschedule)) => {
                            if rx.wake().await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }
        });
        Ok(Afterlife {
            entries: Mutex::new(Book::default()),
            next: AtomicU64::new(0),
            wills,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection with `client_id` is being admitted: its session's
    /// expiry stops, and nothing ends the session while the connection
    /// lasts. A will still waiting for its delay is dropped if the session
    /// is resumed [MQTT-3.1.3-9], and published now if Clean Start ends it.
    /// Pair with [`ended`] or [`abandoned`].
    ///
    /// [`ended`]: Afterlife::ended
    /// [`abandoned`]: Afterlife::abandoned
    ///
    /// `keep` names the kind and its limit when the new session is to
    /// outlive its connection; `false` (and nothing done) when that kind
    /// already has `limit` kept sessions.
    pub(crate) fn connected(
        &self,
        client_id: &str,
        clean_start: bool,
        keep: Option<(Kind, usize)>,
    ) -> bool {
        let mut book = self.lock();
        let counted = book.by_id.get(client_id).and_then(|e| e.kept);
        match keep {
            Some((kind, limit)) if counted != Some(kind) => {
                if book.kept[kind.index()] >= limit {
                    return false;
                }
                book.kept[kind.index()] += 1;
                if let Some(old) = counted {
                    book.kept[old.index()] -= 1;
                }
            }
            Some(_) => {}
            None => {
                if let Some(old) = counted {
                    book.kept[old.index()] -= 1;
                }
            }
        }
        let entry = book.by_id.entry(client_id.to_owned()).or_default();
        entry.kept = keep.map(|(kind, _)| kind);
        entry.live += 1;
        entry.clean_start = clean_start;
        entry.stopped_expiry = false;
        if let Some((_, timer)) = entry.timer.take() {
            timer.abort();
            entry.stopped_expiry = true;
        }
        if let Some(will) = entry.will.take().filter(|_| clean_start) {
            let _ = self.wills.send(will);
        }
        true
    }

    /// An admission after [`Afterlife::connected`] did not become a session.
    /// If it stopped the expiry of a kept session, that session gets one
    /// again (the longest allowed: its own is not known any more), so it is
    /// never kept forever.
    pub(crate) fn abandoned(&self, shared: &Arc<Shared>, client_id: &str) {
        let stopped = self
            .lock()
            .by_id
            .get(client_id)
            .is_some_and(|e| e.stopped_expiry);
        if stopped {
            let lifetime = Lifetime {
                clean_start: false,
                expiry: shared.config.mqtt.max_session_expiry,
            };
            self.ended(shared, client_id, lifetime, None);
            return;
        }
        let mut book = self.lock();
        if let Some(entry) = book.by_id.get_mut(client_id) {
            entry.live = entry.live.saturating_sub(1);
            if entry.live == 0 && entry.timer.is_none() {
                book.remove(client_id);
            }
        }
    }

    /// The will of `generation`'s session, if it is still waiting.
    fn due_will(
        &self,
        client_id: &str,
        generation: u64,
    ) -> Option<(Publish, Option<PublishProperties>)> {
        let mut book = self.lock();
        let entry = book.by_id.get_mut(client_id)?;
        if entry.timer.as_ref().is_some_and(|(g, _)| *g == generation) {
            entry.will.take()
        } else {
            None
        }
    }

    /// A session ended: publish its delayed will when due, and end it in the
    /// router when it may not outlive the connection or when it expires —
    /// unless another connection with the client id is live (a takeover).
    pub(crate) fn ended(
        &self,
        shared: &Arc<Shared>,
        client_id: &str,
        lifetime: Lifetime,
        will: Option<DelayedWill>,
    ) {
        let mut book = self.lock();
        let entry = book.by_id.entry(client_id.to_owned()).or_default();
        entry.live = entry.live.saturating_sub(1);
        if entry.live > 0 {
            // Taken over [MQTT-3.1.4-3]: the will goes now unless it has a
            // delay and the new connection resumes the session
            // [MQTT-3.1.3-9] (a Clean Start ends it).
            if let Some(w) = will.filter(|w| w.delay.is_zero() || entry.clean_start) {
                let _ = self.wills.send((w.publish, w.properties));
            }
            return;
        }
        if will.is_none() && !lifetime.router_keeps() {
            if entry.timer.is_none() {
                book.remove(client_id);
            }
            return;
        }
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let id = client_id.to_owned();
        let delay = will.as_ref().map(|w| w.delay.min(lifetime.expiry));
        entry.will = will.map(|w| (w.publish, w.properties));
        // Spawned under the lock: the timer's `take` waits for the entry.
        let timer = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
                if let Some(will) = shared.afterlife.due_will(&id, generation) {
                    let _ = shared.afterlife.wills.send(will);
                }
            }
            tokio::time::sleep_until(start + lifetime.expiry).await;
            if shared.afterlife.take(&id, generation) && lifetime.router_keeps() {
                purge(&shared, &id).await;
            }
        });
        if let Some((_, old)) = entry.timer.replace((generation, timer)) {
            old.abort();
        }
    }

    /// Removes the entry if no connection is live and its timer is still
    /// `generation`'s.
    fn take(&self, client_id: &str, generation: u64) -> bool {
        let mut book = self.lock();
        match book.by_id.get(client_id) {
            Some(e) if e.live == 0 && e.timer.as_ref().is_some_and(|(g, _)| *g == generation) => {
                book.remove(client_id);
                true
            }
            _ => false,
        }
    }
}

/// Ends a session in the router (a clean link under its client id, then
/// DISCONNECT) and in the client book.
pub(crate) async fn purge(shared: &Arc<Shared>, client_id: &str) {
    shared.book.session_start(client_id, true);
    let router = shared.clone();
    let id = client_id.to_owned();
    let linked = tokio::task::spawn_blocking(move || router.router.link(&id, true)).await;
    match linked {
        Ok(Ok((mut tx, _rx, _))) => {
            let _ = tx
                .send(Packet::Disconnect(
                    Disconnect {
                        reason_code: DisconnectReasonCode::NormalDisconnection,
                    },
                    None,
                ))
                .await;
            tracing::debug!(client_id, "session ended in the router");
        }
        Ok(Err(e)) => {
            tracing::warn!(client_id, error = %e, "could not end an expired session in the router; it is kept until the client id connects with a clean start");
        }
        Err(e) => {
            tracing::warn!(client_id, error = %e, "could not end an expired session in the router");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(3600);

    #[test]
    fn v5_lifetime_follows_session_expiry_not_clean_start() {
        // [MQTT-3.1.2-23]: Clean Start 1 with an expiry keeps the session
        // after the connection (the old one is discarded first).
        let l = Lifetime::new(true, true, Some(300), MAX);
        assert_eq!(l.expiry, Duration::from_secs(300));
        assert!(l.purge_first() && l.router_keeps());
        // Clean Start 0 without an expiry resumes, then ends with the
        // connection.
        let l = Lifetime::new(true, false, None, MAX);
        assert_eq!(l.expiry, Duration::ZERO);
        assert!(!l.purge_first() && l.router_keeps() && !l.link_clean());
        // Clean Start 1, no expiry: nothing kept anywhere.
        let l = Lifetime::new(true, true, None, MAX);
        assert!(l.link_clean() && !l.router_keeps());
        // Capped by max_session_expiry (0xFFFFFFFF means "never").
        assert_eq!(Lifetime::new(true, false, Some(u32::MAX), MAX).expiry, MAX);
    }

    #[test]
    fn v311_persistent_sessions_live_max_session_expiry() {
        let l = Lifetime::new(false, false, None, MAX);
        assert_eq!(l.expiry, MAX);
        assert!(!l.link_clean() && !l.purge_first());
        let l = Lifetime::new(false, true, None, MAX);
        assert!(l.link_clean() && l.expiry.is_zero());
    }
}
