//! Backpressure from connected subscribers to the sessions that publish to
//! them (`mqtt.max_queued_messages` / `mqtt.max_queued_bytes`).
//!
//! rumqttd acknowledges a PUBLISH once it is in the commit log of every
//! matching subscription filter, and keeps a bounded history per filter: a
//! subscriber that falls further behind than that history silently loses
//! the oldest messages ("cursor jump"), acknowledged or not. The router has
//! no way to slow a publisher down, so the front door does it:
//!
//! * every connected session that subscribes owns a [`Queue`]: what was
//!   routed to it and its session has not taken from the router yet, in
//!   messages and bytes (topic + payload, as the router sizes its log);
//! * a publishing session *reserves* one slot in the queue of every
//!   matching subscription (one per copy the router will deliver) before it
//!   hands the PUBLISH to the router. When a reservation does not fit, the
//!   publisher waits — and stops reading its socket — until that queue is
//!   down to three quarters, then tries again;
//! * the subscriber's session releases a slot for every live copy it reads
//!   from its router link.
//!
//! A queue therefore never holds more than its bound (one message larger
//! than the bound still goes into an empty queue), and the router keeps at
//! least that much history per filter ([`router_segments`]), so a message
//! the router acknowledged reaches every subscriber that was connected when
//! it was published. Retained messages sent for a SUBSCRIBE are not in the
//! log and are not counted; shared subscriptions (one member of a group
//! gets each message, the router picks which) and offline persistent
//! sessions are not under backpressure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::Notify;

/// Bytes live in the low bits of a queue's load, messages above them.
const BYTES_BITS: u32 = 40;
const BYTES_MASK: u64 = (1 << BYTES_BITS) - 1;
const ONE_MESSAGE: u64 = 1 << BYTES_BITS;

/// What one connected subscriber has waiting for it in the router.
#[derive(Debug)]
pub(crate) struct Queue {
    /// Whose queue (for the log line of a publisher that waits on it).
    pub(crate) client_id: String,
    /// Messages (high bits) and bytes (low [`BYTES_BITS`]), updated as one.
    load: AtomicU64,
    /// Publishers waiting for room.
    waiters: AtomicUsize,
    /// The session ended: reservations succeed without counting.
    closed: AtomicBool,
    notify: Notify,
    /// A publisher waited `mqtt.max_subscriber_stall` for room: the owner
    /// session ends (a permit is kept if it is not listening right now).
    stall: Notify,
}

fn split(load: u64) -> (u64, u64) {
    (load >> BYTES_BITS, load & BYTES_MASK)
}

impl Queue {
    /// Messages and bytes waiting now.
    pub(crate) fn load(&self) -> (u64, u64) {
        split(self.load.load(Ordering::Acquire))
    }

    /// Tells the owner session that a publisher has waited too long for
    /// room in this queue.
    pub(crate) fn stalled(&self) {
        self.stall.notify_one();
    }

    /// Publishers are waiting for room in this queue.
    pub(crate) fn waited_on(&self) -> bool {
        self.waiters.load(Ordering::Acquire) > 0
    }

    /// Resolves (in the owner session) once `stalled` was called.
    pub(crate) async fn cut(&self) {
        self.stall.notified().await;
    }
}

/// The subscriber queues a topic's messages go to, as a session found them
/// last (re-read when the subscriptions changed).
#[derive(Debug, Default)]
pub(crate) struct Matches {
    generation: u64,
    topic: Bytes,
    queues: Vec<Arc<Queue>>,
}

#[derive(Debug, Default)]
struct Index {
    /// Filters without wildcards, by filter.
    exact: HashMap<String, Vec<Arc<Queue>>>,
    /// Filters with `+` or `#`.
    wildcard: Vec<(String, Arc<Queue>)>,
}

/// Every connected subscriber's queue, by subscription filter.
#[derive(Debug)]
pub(crate) struct Flow {
    index: RwLock<Index>,
    /// Changes whenever a subscription is added or removed.
    generation: AtomicU64,
    max_messages: u64,
    max_bytes: u64,
}

/// A reservation that did not fit: wait on this queue, then try again.
#[derive(Debug)]
pub(crate) struct Full(pub(crate) Arc<Queue>);

impl Flow {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Flow {
        Flow {
            index: RwLock::default(),
            generation: AtomicU64::new(1),
            max_messages: max_messages as u64,
            max_bytes: max_bytes.min(BYTES_MASK as usize) as u64,
        }
    }

    /// A new, empty queue for a session.
    pub(crate) fn queue(client_id: &str) -> Arc<Queue> {
        Arc::new(Queue {
            client_id: client_id.to_owned(),
            load: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            notify: Notify::new(),
            stall: Notify::new(),
        })
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// `queue` receives what is published on topics matching `filter`
    /// (a plain filter, not `$share/...`).
    pub(crate) fn subscribe(&self, filter: &str, queue: &Arc<Queue>) {
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        if filter.contains(['+', '#']) {
            index.wildcard.push((filter.to_owned(), queue.clone()));
        } else {
            index
                .exact
                .entry(filter.to_owned())
                .or_default()
                .push(queue.clone());
        }
        drop(index);
        self.changed();
    }

    /// `queue` no longer receives `filter`'s messages. What the router
    /// still holds for it there will not come: the queue starts over from
    /// empty (the other filters' messages in it are released as they
    /// arrive, never below zero).
    pub(crate) fn unsubscribe(&self, filter: &str, queue: &Arc<Queue>) {
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        if let Some(queues) = index.exact.get_mut(filter) {
            queues.retain(|q| !Arc::ptr_eq(q, queue));
            if queues.is_empty() {
                index.exact.remove(filter);
            }
        }
        index
            .wildcard
            .retain(|(f, q)| !(f == filter && Arc::ptr_eq(q, queue)));
        drop(index);
        self.changed();
        queue.load.store(0, Ordering::Release);
        queue.notify.notify_waiters();
    }

    /// The session ended: its queue leaves the index and every publisher
    /// waiting on it goes on.
    pub(crate) fn close(&self, queue: &Arc<Queue>) {
        queue.closed.store(true, Ordering::Release);
        queue.notify.notify_waiters();
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        let before = index.wildcard.len();
        index.wildcard.retain(|(_, q)| !Arc::ptr_eq(q, queue));
        let mut removed = before != index.wildcard.len();
        index.exact.retain(|_, queues| {
            let n = queues.len();
            queues.retain(|q| !Arc::ptr_eq(q, queue));
            removed |= n != queues.len();
            !queues.is_empty()
        });
        drop(index);
        if removed {
            self.changed();
        }
    }

    /// The queues a PUBLISH on `topic` goes to, one per matching
    /// subscription (the router delivers one copy per filter), from the
    /// session's `cache` while no subscription changed.
    pub(crate) fn matching<'c>(&self, cache: &'c mut Matches, topic: &Bytes) -> &'c [Arc<Queue>] {
        let generation = self.generation.load(Ordering::Acquire);
        if cache.generation != generation || cache.topic != *topic {
            cache.queues.clear();
            cache.generation = generation;
            cache.topic = topic.clone();
            if let Ok(topic) = std::str::from_utf8(topic) {
                let index = self.index.read().unwrap_or_else(|e| e.into_inner());
                if let Some(queues) = index.exact.get(topic) {
                    cache.queues.extend(queues.iter().cloned());
                }
                for (filter, queue) in &index.wildcard {
                    // The router's own matcher: the same copies it makes.
                    if rumqttd::protocol::matches(topic, filter) {
                        cache.queues.push(queue.clone());
                    }
                }
            }
        }
        &cache.queues
    }

    /// Takes one message of `bytes` in every queue of `queues`, or none
    /// (the first that is full is returned to wait on).
    pub(crate) fn reserve(&self, queues: &[Arc<Queue>], bytes: usize) -> Result<(), Full> {
        let bytes = (bytes as u64).min(BYTES_MASK);
        for (i, queue) in queues.iter().enumerate() {
            if !self.try_reserve(queue, bytes) {
                for taken in &queues[..i] {
                    self.release_quietly(taken, bytes);
                }
                return Err(Full(queue.clone()));
            }
        }
        Ok(())
    }

    fn try_reserve(&self, queue: &Queue, bytes: u64) -> bool {
        if queue.closed.load(Ordering::Acquire) {
            return true;
        }
        queue
            .load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |load| {
                let (messages, held) = split(load);
                let fits = messages == 0
                    || (messages < self.max_messages && held + bytes <= self.max_bytes);
                fits.then(|| load + ONE_MESSAGE + bytes)
            })
            .is_ok()
    }

    /// Subtracts one message of `bytes`, never below zero (an empty queue
    /// holds no bytes, whatever uncounted copies left behind); the new load.
    fn release_quietly(&self, queue: &Queue, bytes: u64) -> u64 {
        let step = |load: u64| {
            let (messages, held) = split(load);
            match messages.saturating_sub(1) {
                0 => 0,
                left => (left << BYTES_BITS) | held.saturating_sub(bytes),
            }
        };
        let before = queue
            .load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| Some(step(l)))
            .unwrap_or_else(|l| l);
        step(before)
    }

    /// The subscriber took a message of `bytes` from the router; publishers
    /// waiting on its queue go on once it is down to three quarters.
    pub(crate) fn release(&self, queue: &Queue, bytes: usize) {
        let load = self.release_quietly(queue, (bytes as u64).min(BYTES_MASK));
        if queue.waiters.load(Ordering::Acquire) > 0 && self.low(load) {
            queue.notify.notify_waiters();
        }
    }

    /// Down to three quarters of both bounds: room for waiting publishers
    /// (an empty queue is all zero: `release_quietly` leaves no bytes
    /// behind the last message).
    fn low(&self, load: u64) -> bool {
        let (messages, bytes) = split(load);
        messages <= self.max_messages * 3 / 4 && bytes <= self.max_bytes * 3 / 4
    }

    /// Resolves when `queue` has room again (or its session ended).
    pub(crate) async fn room(&self, queue: &Queue) {
        struct Waiting<'q>(&'q AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        queue.waiters.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&queue.waiters);
        loop {
            let notified = queue.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if queue.closed.load(Ordering::Acquire) || self.low(queue.load.load(Ordering::Acquire))
            {
                return;
            }
            notified.await;
        }
    }
}

/// Segments of `segment_bytes` the router must keep per filter so that a
/// subscriber `max_bytes` behind (or one message of up to `max_packet`
/// behind, in an otherwise empty queue) never has its unread messages
/// dropped: a closed segment holds at least `segment_bytes`, so that much
/// unread data spans at most `max_bytes / segment_bytes + 1` closed segments;
/// one more is the segment being written.
pub(crate) fn router_segments(max_bytes: usize, segment_bytes: usize) -> usize {
    max_bytes / segment_bytes + 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_full_queue_refuses_and_a_refusal_takes_nothing_anywhere() {
        let flow = Flow::new(2, 1000);
        let a = Flow::queue("a");
        let b = Flow::queue("b");
        flow.subscribe("t/#", &a);
        flow.subscribe("t/x", &b);
        let mut cache = Matches::default();
        let queues = flow.matching(&mut cache, &topic("t/x")).to_vec();
        assert_eq!(queues.len(), 2);
        flow.reserve(&queues, 10).expect("first");
        // b alone fills up.
        flow.reserve(std::slice::from_ref(&b), 10)
            .expect("second in b");
        let Err(Full(full)) = flow.reserve(&queues, 10) else {
            panic!("b is full")
        };
        assert!(Arc::ptr_eq(&full, &b));
        assert_eq!(a.load(), (1, 10), "a's slot was given back");
        assert_eq!(b.load(), (2, 20));
        flow.release(&b, 10);
        flow.reserve(&queues, 10).expect("room again");
    }

    #[test]
    fn bytes_bound_and_one_large_message_into_an_empty_queue() {
        let flow = Flow::new(100, 100);
        let q = Flow::queue("q");
        flow.reserve(std::slice::from_ref(&q), 500)
            .expect("an empty queue takes one message larger than the bound");
        assert!(flow.reserve(std::slice::from_ref(&q), 1).is_err());
        flow.release(&q, 500);
        flow.reserve(std::slice::from_ref(&q), 60).expect("60");
        assert!(
            flow.reserve(std::slice::from_ref(&q), 41).is_err(),
            "101 > 100"
        );
        flow.reserve(std::slice::from_ref(&q), 40).expect("100");
    }

    /// A copy that was never counted (a will, a SUBSCRIBE racing a PUBLISH)
    /// is released all the same: the queue must not end up empty of
    /// messages but full of bytes, with a waiting publisher never woken.
    #[tokio::test]
    async fn an_uncounted_release_leaves_no_bytes_in_an_empty_queue() {
        let flow = Arc::new(Flow::new(10, 100));
        let q = Flow::queue("q");
        flow.reserve(std::slice::from_ref(&q), 90).expect("90");
        flow.release(&q, 5);
        assert_eq!(q.load(), (0, 0));
        flow.reserve(std::slice::from_ref(&q), 90)
            .expect("90 again");
        flow.reserve(std::slice::from_ref(&q), 5).expect("95");
        assert!(flow.reserve(std::slice::from_ref(&q), 10).is_err());
        flow.release(&q, 5);
        flow.release(&q, 5);
        tokio::time::timeout(std::time::Duration::from_secs(1), flow.room(&q))
            .await
            .expect("an empty queue has room");
    }

    #[test]
    fn matching_follows_subscriptions_and_the_routers_matcher() {
        let flow = Flow::new(10, 1000);
        let q = Flow::queue("q");
        let mut cache = Matches::default();
        assert!(flow.matching(&mut cache, &topic("a/b")).is_empty());
        flow.subscribe("a/+", &q);
        assert_eq!(
            flow.matching(&mut cache, &topic("a/b")).len(),
            1,
            "cache refreshed"
        );
        assert!(flow.matching(&mut cache, &topic("a/b/c")).is_empty());
        assert!(flow.matching(&mut cache, &topic("b/b")).is_empty());
        flow.subscribe("a/b", &q);
        assert_eq!(
            flow.matching(&mut cache, &topic("a/b")).len(),
            2,
            "two copies"
        );
        flow.unsubscribe("a/+", &q);
        assert_eq!(flow.matching(&mut cache, &topic("a/b")).len(), 1);
        flow.close(&q);
        assert!(flow.matching(&mut cache, &topic("a/b")).is_empty());
    }

    #[tokio::test]
    async fn a_waiting_publisher_goes_on_at_three_quarters_or_when_the_subscriber_leaves() {
        let flow = Arc::new(Flow::new(8, 1 << 20));
        let q = Flow::queue("q");
        let wait = |flow: &Arc<Flow>, q: &Arc<Queue>| {
            let (flow, q) = (flow.clone(), q.clone());
            tokio::spawn(async move { flow.room(&q).await })
        };
        for _ in 0..8 {
            flow.reserve(std::slice::from_ref(&q), 1).expect("fits");
        }
        let first = wait(&flow, &q);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        flow.release(&q, 1);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!first.is_finished(), "7 of 8 is above three quarters");
        flow.release(&q, 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), first)
            .await
            .expect("6 of 8 lets the waiter go")
            .expect("task");
        flow.reserve(std::slice::from_ref(&q), 1).expect("7");
        flow.reserve(std::slice::from_ref(&q), 1).expect("8");
        let second = wait(&flow, &q);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!second.is_finished());
        flow.close(&q);
        tokio::time::timeout(std::time::Duration::from_secs(1), second)
            .await
            .expect("a closed queue lets waiters go")
            .expect("task");
    }
}
