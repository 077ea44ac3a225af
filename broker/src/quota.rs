//! Per-client limits on what one client can make the broker hold: new
//! topics per minute (the router never forgets a topic and matches each new
//! one against every subscription), subscriptions, retained messages, and
//! the bytes all sessions hold in packets not yet complete. One client must
//! not be able to slow down or starve the others.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::session::SubOptions;

/// The limits of `[mqtt]`, named as in `gatehouse_quota_exceeded_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quota {
    NewTopics,
    Subscriptions,
    Retained,
    PartialBytes,
    PersistentSessions,
    /// A subscriber held a publisher past `mqtt.max_subscriber_stall`.
    SubscriberStall,
}

impl Quota {
    pub(crate) const ALL: [Quota; 6] = [
        Quota::NewTopics,
        Quota::Subscriptions,
        Quota::Retained,
        Quota::PartialBytes,
        Quota::PersistentSessions,
        Quota::SubscriberStall,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Quota::NewTopics => "new_topics_per_minute",
            Quota::Subscriptions => "subscriptions_per_client",
            Quota::Retained => "retained_per_client",
            Quota::PartialBytes => "partial_bytes",
            Quota::PersistentSessions => "persistent_sessions",
            Quota::SubscriberStall => "subscriber_stall",
        }
    }

    /// The config key an operator raises.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Quota::NewTopics => "mqtt.max_new_topics_per_minute",
            Quota::Subscriptions => "mqtt.max_subscriptions_per_client",
            Quota::Retained => "mqtt.max_retained_per_client",
            Quota::PartialBytes => "mqtt.max_partial_bytes",
            Quota::PersistentSessions => {
                "mqtt.max_persistent_sessions_operational / mqtt.max_persistent_sessions_bootstrap"
            }
            Quota::SubscriberStall => "mqtt.max_subscriber_stall",
        }
    }
}

const WINDOW: Duration = Duration::from_secs(60);

/// Topics one session already published to this minute: the fast path
/// that keeps the per-client count in [`ClientBook`] off the hot path.
#[derive(Debug)]
pub(crate) struct TopicWindow {
    started: Instant,
    seen: HashSet<Bytes>,
}

impl TopicWindow {
    pub(crate) fn new() -> TopicWindow {
        TopicWindow {
            started: Instant::now(),
            seen: HashSet::new(),
        }
    }

    /// Whether a PUBLISH to `topic` is within the client's limit of new
    /// topics per minute (counted per client id, so reconnecting does not
    /// start the count afresh).
    pub(crate) fn admit(
        &mut self,
        topic: &Bytes,
        now: Instant,
        book: &ClientBook,
        client_id: &str,
    ) -> bool {
        if now.duration_since(self.started) >= WINDOW {
            self.started = now;
            self.seen.clear();
            self.seen.shrink_to(64);
        }
        if self.seen.contains(topic) {
            return true;
        }
        if !book.new_topic(client_id, now) {
            return false;
        }
        self.seen.insert(topic.clone());
        true
    }
}

/// What a client holds in the router beyond its connection: subscriptions
/// (kept across reconnects for persistent sessions) and retained messages.
#[derive(Debug, Default)]
struct Held {
    /// Filter -> the options it was subscribed with.
    subscriptions: HashMap<String, SubOptions>,
    retained: HashSet<Bytes>,
    /// Packet ids of QoS 2 PUBLISHes received (and routed) whose PUBREL has
    /// not come yet: a PUBLISH with one of them is a retransmission, not a
    /// new message [MQTT-4.3.3]. Kept with the session, like subscriptions.
    qos2_received: HashSet<u16>,
    /// Start of the current minute and the new topics counted in it.
    topics: Option<(Instant, usize)>,
}

impl Held {
    fn idle(&self, now: Instant) -> bool {
        self.subscriptions.is_empty()
            && self.retained.is_empty()
            && self.qos2_received.is_empty()
            && self
                .topics
                .is_none_or(|(start, _)| now.duration_since(start) >= WINDOW)
    }
}

/// What [`ClientBook::qos2_received`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Qos2In {
    /// A new message: route it.
    New,
    /// A retransmission of a message already routed: answer PUBREC only.
    Again,
    /// Past `mqtt.receive_maximum` open exchanges.
    TooMany,
}

/// Subscriptions, retained messages and open QoS 2 exchanges by client id.
#[derive(Debug)]
pub(crate) struct ClientBook {
    max_new_topics: usize,
    max_subscriptions: usize,
    max_retained: usize,
    clients: Mutex<Clients>,
}

#[derive(Debug)]
struct Clients {
    by_id: HashMap<String, Held>,
    last_sweep: Instant,
}

impl ClientBook {
    pub(crate) fn new(
        max_new_topics: usize,
        max_subscriptions: usize,
        max_retained: usize,
    ) -> ClientBook {
        ClientBook {
            max_new_topics,
            max_subscriptions,
            max_retained,
            clients: Mutex::new(Clients {
                by_id: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clients> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session starts; with a clean session the router forgets the
    /// client's subscriptions, so do we, and the QoS 2 exchanges in flight.
    pub(crate) fn session_start(&self, client_id: &str, clean: bool) {
        if clean {
            let now = Instant::now();
            let mut clients = self.lock();
            if let Some(held) = clients.by_id.get_mut(client_id) {
                held.subscriptions.clear();
                held.qos2_received.clear();
                if held.idle(now) {
                    clients.by_id.remove(client_id);
                }
            }
        }
    }

    /// A session ends; a clean session's subscriptions end with it. At most
    /// once a minute, entries that hold nothing any more are dropped.
    pub(crate) fn session_end(&self, client_id: &str, clean: bool) {
        self.session_start(client_id, clean);
        let now = Instant::now();
        let mut clients = self.lock();
        if now.duration_since(clients.last_sweep) >= WINDOW {
            clients.last_sweep = now;
            clients.by_id.retain(|_, held| !held.idle(now));
        }
    }

    /// Counts a topic new to this client's session; `false` past
    /// `mqtt.max_new_topics_per_minute` for this client id.
    pub(crate) fn new_topic(&self, client_id: &str, now: Instant) -> bool {
        let mut clients = self.lock();
        let held = clients.by_id.entry(client_id.to_owned()).or_default();
        match &mut held.topics {
            Some((start, count)) if now.duration_since(*start) < WINDOW => {
                if *count >= self.max_new_topics {
                    return false;
                }
                *count += 1;
            }
            window => *window = Some((now, 1)),
        }
        true
    }

    /// Whether the client may hold `filter` (already holding it is fine);
    /// records it with its options when allowed.
    pub(crate) fn subscribe(&self, client_id: &str, filter: &str, options: SubOptions) -> bool {
        let mut clients = self.lock();
        let held = clients.by_id.entry(client_id.to_owned()).or_default();
        if let Some(o) = held.subscriptions.get_mut(filter) {
            *o = options;
            return true;
        }
        if held.subscriptions.len() >= self.max_subscriptions {
            return false;
        }
        held.subscriptions.insert(filter.to_owned(), options);
        true
    }

    /// The client's subscriptions and their options (what a resumed
    /// session delivers by).
    pub(crate) fn subscriptions(&self, client_id: &str) -> Vec<(String, SubOptions)> {
        self.lock()
            .by_id
            .get(client_id)
            .map_or_else(Vec::new, |held| {
                held.subscriptions
                    .iter()
                    .map(|(f, o)| (f.clone(), *o))
                    .collect()
            })
    }

    /// Drops `filter` from the client's subscriptions; `false` when it held
    /// no such subscription.
    pub(crate) fn unsubscribe(&self, client_id: &str, filter: &str) -> bool {
        let now = Instant::now();
        let mut clients = self.lock();
        let Some(held) = clients.by_id.get_mut(client_id) else {
            return false;
        };
        let existed = held.subscriptions.remove(filter).is_some();
        if held.idle(now) {
            clients.by_id.remove(client_id);
        }
        existed
    }

    /// A QoS 2 PUBLISH with `pkid` arrived.
    pub(crate) fn qos2_received(&self, client_id: &str, pkid: u16, max: usize) -> Qos2In {
        let mut clients = self.lock();
        let held = clients.by_id.entry(client_id.to_owned()).or_default();
        if held.qos2_received.contains(&pkid) {
            Qos2In::Again
        } else if held.qos2_received.len() >= max {
            Qos2In::TooMany
        } else {
            held.qos2_received.insert(pkid);
            Qos2In::New
        }
    }

    /// The exchange for `pkid` ends (PUBREL, or the message was not kept);
    /// `false` when none was open.
    pub(crate) fn qos2_released(&self, client_id: &str, pkid: u16) -> bool {
        let now = Instant::now();
        let mut clients = self.lock();
        let Some(held) = clients.by_id.get_mut(client_id) else {
            return false;
        };
        let open = held.qos2_received.remove(&pkid);
        if held.idle(now) {
            clients.by_id.remove(client_id);
        }
        open
    }

    /// A retained PUBLISH: an empty payload clears the topic's retained
    /// message (always allowed); a new retained topic must fit the limit.
    pub(crate) fn retain(&self, client_id: &str, topic: &Bytes, clears: bool) -> bool {
        let now = Instant::now();
        let mut clients = self.lock();
        if clears {
            if let Some(held) = clients.by_id.get_mut(client_id) {
                held.retained.remove(topic);
                if held.idle(now) {
                    clients.by_id.remove(client_id);
                }
            }
            return true;
        }
        let held = clients.by_id.entry(client_id.to_owned()).or_default();
        if held.retained.contains(topic) {
            return true;
        }
        if held.retained.len() >= self.max_retained {
            return false;
        }
        held.retained.insert(topic.clone());
        true
    }
}

/// Bytes held in incomplete packets over all sessions.
#[derive(Debug)]
pub(crate) struct PartialBudget {
    max: usize,
    held: AtomicUsize,
}

impl PartialBudget {
    pub(crate) fn new(max: usize) -> PartialBudget {
        PartialBudget {
            max,
            held: AtomicUsize::new(0),
        }
    }

    /// Moves a session's share from `old` to `new` bytes; `false` (and the
    /// share stays `old`) when growing would pass the budget.
    pub(crate) fn resize(&self, old: usize, new: usize) -> bool {
        if new <= old {
            self.held.fetch_sub(old - new, Ordering::Relaxed);
            return true;
        }
        let grow = new - old;
        let mut cur = self.held.load(Ordering::Relaxed);
        loop {
            if cur + grow > self.max {
                return false;
            }
            match self.held.compare_exchange_weak(
                cur,
                cur + grow,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_topics_are_counted_per_client_per_minute() {
        let book = ClientBook::new(2, 10, 10);
        let mut w = TopicWindow::new();
        let t0 = Instant::now();
        let (a, b, c) = (Bytes::from("a"), Bytes::from("b"), Bytes::from("c"));
        assert!(w.admit(&a, t0, &book, "x"));
        assert!(w.admit(&a, t0, &book, "x"));
        assert!(w.admit(&b, t0, &book, "x"));
        assert!(
            !w.admit(&c, t0, &book, "x"),
            "third distinct topic in the minute"
        );
        assert!(w.admit(&a, t0, &book, "x"), "known topics stay allowed");
        assert!(TopicWindow::new().admit(&c, t0, &book, "y"), "per client");
        let mut reconnected = TopicWindow::new();
        assert!(
            !reconnected.admit(&c, t0, &book, "x"),
            "a new session of the same client id does not start afresh"
        );
        assert!(w.admit(&c, t0 + WINDOW, &book, "x"), "a new minute does");
    }

    #[test]
    fn book_keeps_qos2_exchanges_with_the_session() {
        let book = ClientBook::new(10, 10, 10);
        assert_eq!(book.qos2_received("c", 1, 2), Qos2In::New);
        assert_eq!(book.qos2_received("c", 1, 2), Qos2In::Again);
        assert_eq!(book.qos2_received("c", 2, 2), Qos2In::New);
        assert_eq!(book.qos2_received("c", 3, 2), Qos2In::TooMany);
        assert_eq!(book.qos2_received("d", 3, 2), Qos2In::New, "per client");
        book.session_end("c", false);
        book.session_start("c", false);
        assert_eq!(
            book.qos2_received("c", 1, 2),
            Qos2In::Again,
            "a persistent session keeps its open exchanges"
        );
        assert!(book.qos2_released("c", 1));
        assert!(!book.qos2_released("c", 1), "released once");
        assert_eq!(book.qos2_received("c", 1, 2), Qos2In::New, "a new message");
        book.session_start("c", true);
        assert!(!book.qos2_released("c", 2), "a clean start forgets them");
    }

    #[test]
    fn book_limits_subscriptions_and_retained() {
        let book = ClientBook::new(10, 2, 1);
        assert!(book.subscribe("c", "a/#", SubOptions::default()));
        assert!(book.subscribe("c", "b/#", SubOptions::default()));
        assert!(
            book.subscribe("c", "a/#", SubOptions::default()),
            "re-subscribing is not a new one"
        );
        assert!(!book.subscribe("c", "c/#", SubOptions::default()));
        assert!(
            book.subscribe("other", "c/#", SubOptions::default()),
            "limits are per client"
        );
        assert!(book.unsubscribe("c", "a/#"), "it existed");
        assert!(!book.unsubscribe("c", "a/#"), "not twice");
        assert!(!book.unsubscribe("nobody", "a/#"));
        assert!(book.subscribe("c", "c/#", SubOptions::default()));
        book.session_end("c", false);
        assert!(
            !book.subscribe("c", "d/#", SubOptions::default()),
            "a persistent session keeps them"
        );
        book.session_start("c", true);
        assert!(
            book.subscribe("c", "d/#", SubOptions::default()),
            "a clean session forgets them"
        );

        let (x, y) = (Bytes::from("x"), Bytes::from("y"));
        assert!(book.retain("c", &x, false));
        assert!(!book.retain("c", &y, false));
        assert!(book.retain("c", &x, true), "clearing is always allowed");
        assert!(book.retain("c", &y, false));
    }

    #[test]
    fn partial_budget_is_shared() {
        let b = PartialBudget::new(100);
        assert!(b.resize(0, 60));
        assert!(!b.resize(0, 50), "would pass the budget");
        assert!(b.resize(60, 10));
        assert!(b.resize(0, 50));
        assert_eq!(b.held(), 60);
        assert!(b.resize(50, 0));
        assert!(b.resize(10, 0));
        assert_eq!(b.held(), 0);
    }
}
