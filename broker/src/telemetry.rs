//! The broker's side of telemetry ingest: which allowed PUBLISHes are handed
//! to `gatehouse-ingest` (`ingest.topic_filter`), and, with
//! `ingest.ack = "durable"`, the per-session queue that holds QoS 1 PUBACKs
//! until the message is durable while keeping them in the order the
//! PUBLISHes arrived (MQTT requires in-order QoS 1 acks).

use std::collections::VecDeque;
use std::future::Future;

use gatehouse_config::{AckMode, IngestSettings};
use gatehouse_gate::TelemetryTap;
use gatehouse_ingest::{AckError, AckWaiter, Durability, IngestHandle};
use prometheus::IntCounterVec;
use rumqttd::protocol::PubAckReason;

use crate::session::now_or_never;

/// What every session needs to hand telemetry to ingest.
#[derive(Debug)]
pub(crate) struct Telemetry {
    /// `None` with `[ingest] enabled = false`: nothing is ingested.
    pub(crate) handle: Option<IngestHandle>,
    pub(crate) tap: TelemetryTap,
    durable: bool,
    /// `gatehouse_puback_withheld_total{reason}`.
    pub(crate) withheld: IntCounterVec,
}

impl Telemetry {
    pub(crate) fn new(
        handle: Option<IngestHandle>,
        settings: &IngestSettings,
        withheld: IntCounterVec,
    ) -> Telemetry {
        Telemetry {
            durable: handle.is_some() && settings.ack == AckMode::Durable,
            handle,
            tap: TelemetryTap::new(settings),
            withheld,
        }
    }

    /// `ingest.ack = "durable"`: QoS 1 PUBACKs wait for the durable ack.
    pub(crate) fn durable(&self) -> bool {
        self.durable
    }
}

/// One QoS 1 PUBLISH of the client whose PUBACK has not been sent yet.
#[derive(Debug)]
struct Held<W> {
    pkid: u16,
    /// 1 (PUBACK) or 2 (PUBREC).
    qos: u8,
    /// Still waiting for the router's PUBACK (the message was routed).
    router: bool,
    /// Still waiting for ingest to make the record durable.
    durable: Option<W>,
    /// The PUBACK to send, or why none is sent.
    outcome: Result<PubAckReason, AckError>,
}

/// What to do about the acknowledgement at the head of the queue, for a
/// PUBLISH of (packet id, QoS): a PUBACK for QoS 1, a PUBREC for QoS 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// Send this acknowledgement.
    Send(u16, u8, PubAckReason),
    /// Ingest could not keep the message: no acknowledgement for it (the
    /// client publishes it again after reconnecting).
    Withhold(u16, u8, AckError),
}

/// QoS 1 PUBACKs towards the client, in PUBLISH order, each released once
/// the router acked it and (for ingested messages) ingest made it durable.
/// `W` is the durable-ack future ([`AckWaiter`] outside tests).
#[derive(Debug)]
pub(crate) struct HeldAcks<W = AckWaiter> {
    queue: VecDeque<Held<W>>,
}

impl<W> Default for HeldAcks<W> {
    fn default() -> Self {
        HeldAcks {
            queue: VecDeque::new(),
        }
    }
}

impl<W> HeldAcks<W>
where
    W: Future<Output = Result<Durability, AckError>> + Unpin,
{
    /// A PUBLISH handed to the router (its PUBACK comes back from there);
    /// `durable` when it was also submitted to ingest with an ack.
    pub(crate) fn routed(&mut self, pkid: u16, qos: u8, durable: Option<W>) {
        self.queue.push_back(Held {
            pkid,
            qos,
            router: true,
            durable,
            outcome: Ok(PubAckReason::Success),
        });
    }

    /// A PUBLISH answered by the broker itself (refused by the ACL).
    pub(crate) fn answered(&mut self, pkid: u16, qos: u8, reason: PubAckReason) {
        self.queue.push_back(Held {
            pkid,
            qos,
            router: false,
            durable: None,
            outcome: Ok(reason),
        });
    }

    /// The router's PUBACK for `pkid`: false when no PUBLISH waits for it.
    pub(crate) fn router_acked(&mut self, pkid: u16, reason: PubAckReason) -> bool {
        match self.queue.iter_mut().find(|h| h.router && h.pkid == pkid) {
            Some(h) => {
                h.router = false;
                if h.outcome.is_ok() {
                    h.outcome = Ok(reason);
                }
                true
            }
            None => false,
        }
    }

    /// Whether the head waits for ingest (then [`HeldAcks::durable`] is worth awaiting).
    pub(crate) fn head_waits_for_ingest(&self) -> bool {
        self.queue.front().is_some_and(|h| h.durable.is_some())
    }

    /// Resolves when the head's durable ack fires (pending forever if the
    /// head does not wait for one). Cancel-safe.
    pub(crate) async fn durable(&mut self) {
        let Some(head) = self.queue.front_mut() else {
            return std::future::pending().await;
        };
        let Some(waiter) = head.durable.as_mut() else {
            return std::future::pending().await;
        };
        let result = waiter.await;
        head.durable = None;
        if let Err(e) = result {
            head.outcome = Err(e);
        }
    }

    /// The head, if its PUBACK can be decided now.
    pub(crate) fn pop(&mut self) -> Option<Release> {
        let head = self.queue.front_mut()?;
        if head.router {
            return None;
        }
        if let Some(waiter) = head.durable.as_mut() {
            let result = now_or_never(waiter)?;
            head.durable = None;
            if let Err(e) = result {
                head.outcome = Err(e);
            }
        }
        let head = self.queue.pop_front()?;
        Some(match head.outcome {
            Ok(reason) => Release::Send(head.pkid, head.qos, reason),
            Err(e) => Release::Withhold(head.pkid, head.qos, e),
        })
    }

    /// Whether the acknowledgement of `pkid` is still held.
    pub(crate) fn holds(&self, pkid: u16) -> bool {
        self.queue.iter().any(|h| h.pkid == pkid)
    }

    /// Acknowledgements not sent yet.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// Label of `gatehouse_puback_withheld_total` for an ack failure.
pub(crate) fn withheld_reason(e: AckError) -> &'static str {
    match e {
        AckError::Dropped(reason) => reason.as_str(),
        AckError::Lost => "lost",
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use gatehouse_ingest::{AckError, DropReason, Durability};
    use rumqttd::protocol::PubAckReason::{NotAuthorized, Success};
    use tokio::sync::oneshot;

    use super::{HeldAcks, Release};

    /// Stands in for `AckWaiter` (whose sending half only ingest can resolve).
    struct Waiter(oneshot::Receiver<Result<Durability, AckError>>);

    impl Future for Waiter {
        type Output = Result<Durability, AckError>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            Pin::new(&mut self.0)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(AckError::Lost)))
        }
    }

    type Ack = oneshot::Sender<Result<Durability, AckError>>;

    fn ack() -> (Ack, Waiter) {
        let (tx, rx) = oneshot::channel();
        (tx, Waiter(rx))
    }

    fn drain(q: &mut HeldAcks<Waiter>) -> Vec<Release> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn acks_leave_in_publish_order() {
        let mut q = HeldAcks::default();
        let (a1, w1) = ack();
        q.routed(1, 1, Some(w1));
        q.routed(2, 1, None);
        q.answered(3, 1, NotAuthorized);
        // The router acks 1 and 2; 1 still waits for ingest, so nothing leaves.
        assert!(q.router_acked(1, Success));
        assert!(q.router_acked(2, Success));
        assert!(q.head_waits_for_ingest());
        assert_eq!(drain(&mut q), vec![]);
        // Ingest made 1 durable: all three leave, in order.
        a1.send(Ok(Durability::Committed)).unwrap();
        assert_eq!(
            drain(&mut q),
            vec![
                Release::Send(1, 1, Success),
                Release::Send(2, 1, Success),
                Release::Send(3, 1, NotAuthorized)
            ]
        );
        assert_eq!(q.len(), 0);
        assert!(!q.router_acked(9, Success), "no PUBLISH waits for pkid 9");
    }

    #[test]
    fn a_failed_record_is_withheld_and_does_not_block_the_rest() {
        let mut q = HeldAcks::default();
        let (a1, w1) = ack();
        let (a2, w2) = ack();
        let (a3, w3) = ack();
        q.routed(1, 1, Some(w1));
        q.routed(2, 1, Some(w2));
        q.routed(3, 1, Some(w3));
        for p in 1..=3 {
            assert!(q.router_acked(p, Success));
        }
        a2.send(Ok(Durability::Spooled)).unwrap();
        // 2 is durable but 1 is not decided: nothing leaves yet.
        assert_eq!(drain(&mut q), vec![]);
        drop(a1); // the pipeline went away without deciding
        a3.send(Err(AckError::Dropped(DropReason::SpoolFull)))
            .unwrap();
        assert_eq!(
            drain(&mut q),
            vec![
                Release::Withhold(1, 1, AckError::Lost),
                Release::Send(2, 1, Success),
                Release::Withhold(3, 1, AckError::Dropped(DropReason::SpoolFull)),
            ]
        );
    }

    #[test]
    fn the_router_ack_is_also_awaited() {
        let mut q = HeldAcks::default();
        let (a1, w1) = ack();
        q.routed(7, 1, Some(w1));
        a1.send(Ok(Durability::Committed)).unwrap();
        assert_eq!(drain(&mut q), vec![], "the router has not acked 7 yet");
        assert!(q.router_acked(7, Success));
        assert_eq!(drain(&mut q), vec![Release::Send(7, 1, Success)]);
    }

    #[test]
    fn a_reused_packet_id_matches_the_oldest_waiting_publish() {
        let mut q: HeldAcks<Waiter> = HeldAcks::default();
        q.routed(5, 1, None);
        q.routed(5, 1, None);
        assert!(q.router_acked(5, Success));
        assert_eq!(drain(&mut q), vec![Release::Send(5, 1, Success)]);
        assert!(q.router_acked(5, Success));
        assert_eq!(drain(&mut q), vec![Release::Send(5, 1, Success)]);
        assert!(!q.router_acked(5, Success));
    }

    #[tokio::test]
    async fn awaiting_the_head_records_its_outcome() {
        let mut q = HeldAcks::default();
        let (a1, w1) = ack();
        q.routed(1, 1, Some(w1));
        assert!(q.router_acked(1, Success));
        a1.send(Err(AckError::Dropped(DropReason::BlockTimeout)))
            .unwrap();
        q.durable().await;
        assert!(!q.head_waits_for_ingest());
        assert_eq!(
            drain(&mut q),
            vec![Release::Withhold(
                1,
                1,
                AckError::Dropped(DropReason::BlockTimeout)
            )]
        );
    }
}
