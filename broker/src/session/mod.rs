//! An admitted MQTT session: the packet pump between the client and the
//! router link, with the ACL on every PUBLISH, SUBSCRIBE and delivered
//! message, telemetry handed to ingest, in-order acks towards the router
//! (and, with `ingest.ack = "durable"`, towards the client), keepalive,
//! kicks and the end of the session (will, DISCONNECT, presence).
//! `inbound` handles what the client sends, `outbound` what the router
//! delivers, `delivery` what the router forgets (a message's origin, the
//! subscription options); this file holds the session's state, its loop and
//! its end.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use gatehouse_auth::Identity;
use gatehouse_gate::RevokedSessionCut;
use prometheus::IntCounter;
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, LastWill, LastWillProperties, Packet, PingReq, Publish,
    PublishProperties, SubscribeReasonCode,
};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::admission::Conn;
use crate::afterlife::{DelayedWill, Lifetime};
use crate::flow::{Matches, Queue};
use crate::guard::GaugeGuard;
use crate::presence::{DisconnectReason, PresenceEvent};
use crate::quota::{Quota, TopicWindow};
use crate::registry::Control;
use crate::server::Shared;
use crate::telemetry::HeldAcks;

use crate::validate::Violation;
use crate::wire::{Codec, Version};

mod delivery;
mod inbound;
mod outbound;

pub(crate) use delivery::SubOptions;
pub(crate) use outbound::InFlight;

/// Longest a QoS 0 PUBLISH waits for room in a subscriber's queue before
/// it is dropped (counted and logged); QoS 1 and 2 wait unacknowledged.
const QOS0_MAX_WAIT: Duration = Duration::from_secs(5);

/// A PUBLISH that passed every check and waits for room in a connected
/// subscriber's queue before it goes to the router.
pub(crate) struct Waiting {
    publish: Publish,
    props: Option<PublishProperties>,
    qos: u8,
    pkid: u16,
    /// The queue that had no room.
    full: Arc<Queue>,
    /// When a QoS 0 message gives up.
    give_up: Option<Instant>,
    /// When the subscriber behind `full` is told it stalled
    /// (`mqtt.max_subscriber_stall`); `None` once told.
    stall_at: Option<Instant>,
}

/// Drops are counted each; the log says so at most once a minute per
/// session, with how many since.
#[derive(Debug, Default)]
pub(crate) struct DropLog {
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// Most router notifications handled per wake-up before writing.
const NOTIFICATION_BATCH: usize = 256;

/// An admitted MQTT session.
pub(crate) struct Session {
    pub(crate) conn: Conn,
    pub(crate) codec: Codec,
    pub(crate) identity: Identity,
    pub(crate) client_id: String,
    /// 1.5 x the keepalive in force.
    pub(crate) keepalive: Duration,
    pub(crate) will: Option<LastWill>,
    /// The will's v5 properties, published with it [MQTT-3.1.3-10].
    pub(crate) will_props: Option<LastWillProperties>,
    pub(crate) link_tx: LinkTx,
    pub(crate) link_rx: LinkRx,
    /// Packets for the router, sent in one batch.
    pub(crate) to_router: Vec<Packet>,
    /// QoS 1 and 2 deliveries, in the order the router sent them, until
    /// the client acked them (PUBACK / PUBREC) or they were dropped. The
    /// router needs acks in order.
    pub(crate) outgoing_acks: VecDeque<InFlight>,
    /// The router's PUBRELs, in order; `true` once the client sent PUBCOMP
    /// (or the PUBREL was answered here).
    pub(crate) outgoing_comps: VecDeque<(u16, bool)>,
    /// QoS 2 deliveries whose PUBREL the session answers itself (dropped
    /// before the client, or ended by the client's PUBREC error code).
    pub(crate) release_locally: HashSet<u16>,
    /// The client's QoS 2 PUBLISHes handed to the router, whose PUBREC goes
    /// out when the router has taken them (not used with durable acks,
    /// where `held_acks` knows).
    pub(crate) qos2_routing: HashSet<u16>,
    /// `mqtt.receive_maximum`.
    pub(crate) receive_maximum: usize,
    /// The client's own Receive Maximum (v5; 3.1.1 has none).
    pub(crate) client_receive_max: usize,
    /// QoS 1/2 PUBLISHes written to the client and not yet acknowledged
    /// (PUBACK / PUBCOMP).
    pub(crate) unacked_out: usize,
    /// Encoded QoS 1/2 PUBLISHes held back by the client's Receive Maximum,
    /// in delivery order.
    pub(crate) held_out: VecDeque<Bytes>,
    /// Topic aliases this connection's client set (MQTT 5, at most
    /// `mqtt.topic_alias_maximum`; they end with the connection).
    pub(crate) topic_aliases: HashMap<u16, Bytes>,
    /// This session's subscriptions and their options (a copy of the
    /// client book's, read without its lock on every delivery).
    pub(crate) subscriptions: Vec<(String, SubOptions)>,
    /// SUBSCRIBEs partly refused by the ACL: the codes we decided, `None`
    /// where the router's code goes.
    pub(crate) pending_subacks: HashMap<u16, Vec<Option<SubscribeReasonCode>>>,
    /// With `ingest.ack = "durable"`: every QoS 1 PUBACK towards the client,
    /// in PUBLISH order, held until the router acked the message and ingest
    /// made it durable. Unused otherwise (PUBACKs go out as they come).
    pub(crate) held_acks: HeldAcks,
    /// PUBACKs withheld in this session because ingest lost the message.
    pub(crate) withheld: u64,
    pub(crate) violations: usize,
    pub(crate) client_max_packet: Option<usize>,
    pub(crate) deny_publish: IntCounter,
    pub(crate) deny_subscribe: IntCounter,
    pub(crate) deny_receive: IntCounter,
    /// Clean start and how long the session outlives the connection.
    pub(crate) lifetime: Lifetime,
    /// Distinct topics published to this minute (`mqtt.max_new_topics_per_minute`).
    pub(crate) topics: TopicWindow,
    /// Bytes of an incomplete packet this session holds in the shared budget.
    pub(crate) partial_held: usize,
    /// When the incomplete packet in the read buffer started arriving.
    pub(crate) partial_since: Option<Instant>,
    /// Quotas already reported in this session's log (once each).
    pub(crate) quota_logged: AtomicU8,
    /// What is routed to this session and not yet taken from the router
    /// (`flow`): publishers wait while it is full.
    pub(crate) flow_queue: Arc<Queue>,
    /// The subscriber queues of the topic this session last published to.
    pub(crate) flow_matches: Matches,
    /// A PUBLISH waiting for room in a subscriber's queue; the socket is
    /// not read meanwhile.
    pub(crate) waiting: Option<Waiting>,
    /// Messages this session dropped since it last said so in the log.
    pub(crate) drops: DropLog,
    /// The router has been told the session ended (will and DISCONNECT).
    pub(crate) router_released: bool,
    /// `finish` ran to its end (presence and client book updated).
    pub(crate) finished: bool,
}

impl Drop for Session {
    /// Runs when the session ends without `finish` (a panic unwound through
    /// its task): the router gets the will and a DISCONNECT so the slot is
    /// freed, presence hears of the end, and the shared budgets are released.
    fn drop(&mut self) {
        let shared = self.conn.shared.clone();
        if self.partial_held > 0 {
            shared.partial.resize(self.partial_held, 0);
            self.partial_held = 0;
            shared
                .metrics
                .partial_bytes
                .set(shared.partial.held() as i64);
        }
        if !self.router_released {
            self.router_released = true;
            self.to_router.clear();
            let will = self.take_will();
            self.queue_router_end(will);
            // LinkTx::send does not wait: one poll completes it.
            let _ = now_or_never(self.send_to_router());
        }
        if !self.finished {
            self.finished = true;
            self.release_client(&shared, None);
            shared
                .presence
                .on_disconnect(&self.presence(Some(DisconnectReason::InternalError)));
        }
    }
}

/// How a session ends.
struct End {
    reason: DisconnectReason,
    /// v5 DISCONNECT reason code (the spec's byte) to send first.
    send: Option<u8>,
    will: bool,
    /// The router already dropped the session.
    router_gone: bool,
}

impl End {
    fn new(reason: DisconnectReason, send: Option<u8>, will: bool) -> End {
        End {
            reason,
            send,
            will,
            router_gone: false,
        }
    }
}

/// What woke the session loop.
// A notification (248 bytes) stays inline: boxing it would allocate on every
// wake-up, and it moves into its handler at once.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Control(Option<Control>),
    /// Room in the queue a PUBLISH waits for; `true`: its QoS 0 wait ran out.
    Room(bool),
    Read(std::io::Result<usize>),
    Link(Option<Notification>),
    /// The router dropped this session's link (taken over).
    RouterGone,
    /// The PUBLISH waiting here waited `mqtt.max_subscriber_stall`.
    Stalled,
    /// A publisher waited that long for this session's queue.
    Cut,
    Durable,
    Keepalive,
    PacketDue,
}

/// The end of a session whose router link is gone: the router dropped it
/// (a new session took the client id over).
fn router_gone() -> End {
    End {
        router_gone: true,
        ..End::new(DisconnectReason::TakenOver, Some(0x8E), true)
    }
}

/// Polls a future once: its value if ready now.
pub(crate) fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

impl Session {
    fn shared(&self) -> &Shared {
        &self.conn.shared
    }

    fn presence(&self, reason: Option<DisconnectReason>) -> PresenceEvent {
        PresenceEvent {
            gateway: self.identity.gateway_code().map(str::to_owned),
            cn: self.identity.cn.clone(),
            client_id: self.client_id.clone(),
            kind: self.identity.kind,
            serial: self.identity.serial,
            at: OffsetDateTime::now_utc(),
            reason,
        }
    }

    /// Runs the session to its end. Boxed: the connection task's future
    /// then holds a pointer, not a second copy of the session.
    pub(crate) async fn run(mut self: Box<Self>, mut control: mpsc::Receiver<Control>) {
        let shared = self.conn.shared.clone();
        // Released however the session ends, a panic included.
        let _active = GaugeGuard::new(shared.metrics.gate.sessions_active(self.identity.kind));
        shared
            .book
            .session_start(&self.client_id, self.lifetime.clean_start);
        if !self.lifetime.clean_start {
            self.subscriptions = shared.book.subscriptions(&self.client_id);
            for (filter, _) in &self.subscriptions {
                if delivery::shared_inner(filter).is_none() {
                    shared.flow.subscribe(filter, &self.flow_queue);
                }
            }
        }
        shared.presence.on_connect(&self.presence(None));
        let end = match self.start(&mut control).await {
            Ok(()) => self.pump(&mut control).await,
            Err(end) => end,
        };
        self.finish(end).await;
    }

    /// Sends the CONNACK, then handles whatever the client sent in the same
    /// reads as its CONNECT (MQTT lets a client send before the CONNACK).
    async fn start(&mut self, control: &mut mpsc::Receiver<Control>) -> Result<(), End> {
        if !self.lifetime.link_clean() {
            // A resumed session's PUBRELs wait in the router link's buffer
            // behind the CONNACK, with no wake-up of their own (rumqttd's
            // link builder took it): a PINGREQ makes the router answer, and
            // its wake-up brings them along [MQTT-4.4.0-1]. Its PINGRESP is
            // dropped.
            self.to_router.push(Packet::PingReq(PingReq));
            self.send_to_router().await?;
        }
        self.flush(control).await?;
        if !self.conn.rbuf.is_empty() {
            Box::pin(self.received()).await?;
            self.flush(control).await?;
        }
        if self.conn.wbuf.is_empty() {
            // The CONNACK is out: a session that stays idle holds no write
            // buffer (one that sends gets one at its first write)...
            self.conn.wbuf = BytesMut::new();
        }
        // ... and no read buffer (one is taken when bytes arrive).
        self.conn.release_rbuf();
        Ok(())
    }

    /// Handles the bytes just read; the keepalive restarts only when a
    /// whole packet came in.
    async fn received(&mut self) -> Result<usize, End> {
        let packets = match self.incoming().await {
            Ok(n) => n,
            Err(end) => {
                let _ = self.send_to_router().await;
                return Err(end);
            }
        };
        if self.waiting.is_none() {
            // While a PUBLISH waits, the buffer holds whole packets that
            // are not read yet, not a packet arriving slowly.
            self.account_partial(packets > 0)?;
        }
        Ok(packets)
    }

    /// Tracks the incomplete packet left in the read buffer: its start (for
    /// `mqtt.packet_timeout`) and its bytes in the shared budget
    /// (`mqtt.max_partial_bytes`).
    fn account_partial(&mut self, new_packet: bool) -> Result<(), End> {
        let held = self.conn.rbuf.len();
        if held == 0 {
            self.partial_since = None;
            self.conn.release_rbuf();
        } else if new_packet || self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
        if held != self.partial_held {
            let shared = self.conn.shared.clone();
            if !shared.partial.resize(self.partial_held, held) {
                return Err(self.over_quota_end(Quota::PartialBytes));
            }
            self.partial_held = held;
            shared
                .metrics
                .partial_bytes
                .set(shared.partial.held() as i64);
        }
        Ok(())
    }

    async fn pump(&mut self, control: &mut mpsc::Receiver<Control>) -> End {
        let mut last_rx = Instant::now();
        let packet_timeout = self.shared().config.mqtt.packet_timeout;
        loop {
            let keepalive_at = last_rx + self.keepalive;
            let packet_due = self.partial_since.map(|t| t + packet_timeout);
            // Only a session with a PUBLISH waiting pays for the clones.
            let waiting = self.waiting.as_ref().map(|w| {
                (
                    self.conn.shared.clone(),
                    w.full.clone(),
                    w.give_up,
                    w.stall_at,
                )
            });
            let room = async {
                let Some((shared, full, give_up, stall_at)) = &waiting else {
                    return std::future::pending().await;
                };
                tokio::select! {
                    _ = shared.flow.room(full) => Wake::Room(false),
                    _ = tokio::time::sleep_until(give_up.unwrap_or(Instant::now())), if give_up.is_some() => Wake::Room(true),
                    _ = tokio::time::sleep_until(stall_at.unwrap_or(Instant::now())), if stall_at.is_some() => Wake::Stalled,
                }
            };
            // The select only says what woke the session; the handling
            // comes after it, so the loop's future holds the select's
            // futures or a handler's, never both (an idle session sits in
            // this loop: its size is per session).
            let wake = tokio::select! {
                biased;
                c = control.recv() => Wake::Control(c),
                w = room, if waiting.is_some() => w,
                // Only while someone waits on this queue (listening costs a
                // lock per turn); a stalled subscriber sits in `flush`,
                // which always listens.
                _ = self.flow_queue.cut(), if self.flow_queue.waited_on() => Wake::Cut,
                r = self.conn.read(), if waiting.is_none() => Wake::Read(r),
                // Not the result itself: 816 bytes (rumqttd's `LinkError`
                // carries a whole router event).
                n = self.link_rx.next() => match n {
                    Ok(n) => Wake::Link(n),
                    Err(_) => Wake::RouterGone,
                },
                _ = self.held_acks.durable(), if self.held_acks.head_waits_for_ingest() => Wake::Durable,
                _ = tokio::time::sleep_until(keepalive_at), if waiting.is_none() => Wake::Keepalive,
                _ = tokio::time::sleep_until(packet_due.unwrap_or(keepalive_at)), if packet_due.is_some() && waiting.is_none() => Wake::PacketDue,
            };
            drop(waiting);
            match wake {
                Wake::Control(c) => {
                    if let Some(end) = control_end(c) {
                        return end;
                    }
                }
                Wake::Room(gave_up) => {
                    // Boxed, like `received` and the notifications below:
                    // the loop's future stays small.
                    if let Err(end) = Box::pin(self.room(gave_up)).await {
                        return end;
                    }
                    // The client was not read while it waited.
                    last_rx = Instant::now();
                }
                Wake::Read(Ok(0)) => return End::new(DisconnectReason::ConnectionLost, None, true),
                Wake::Read(Err(e)) => {
                    tracing::debug!(client_id = ?self.client_id, error = %e, "read failed");
                    return End::new(DisconnectReason::ConnectionLost, None, true);
                }
                Wake::Read(Ok(n)) => {
                    self.shared().metrics.bytes_in.inc_by(n as u64);
                    match Box::pin(self.received()).await {
                        Ok(0) => {}
                        Ok(_) => last_rx = Instant::now(),
                        Err(end) => return end,
                    }
                }
                Wake::Link(n) => {
                    if let Err(end) = Box::pin(self.notifications(n)).await {
                        return end;
                    }
                }
                Wake::RouterGone => return router_gone(),
                Wake::Stalled => {
                    if let Some(w) = self.waiting.as_mut() {
                        w.stall_at = None;
                        tracing::debug!(client_id = ?self.client_id, subscriber = ?w.full.client_id, "PUBLISH waited mqtt.max_subscriber_stall for room; the subscriber is disconnected");
                        w.full.stalled();
                    }
                }
                Wake::Cut => return self.stalled_end(),
                Wake::Durable => self.release_held_acks(),
                Wake::Keepalive => {
                    return End::new(DisconnectReason::KeepaliveTimeout, Some(0x8D), true);
                }
                Wake::PacketDue => {
                    let held = self.conn.rbuf.len();
                    tracing::warn!(client_id = ?self.client_id, held, timeout = ?packet_timeout, "packet not complete in time; closing the connection (mqtt.packet_timeout)");
                    return self.violation(Violation {
                        label: "packet_timeout",
                        code: 0x8D,
                    });
                }
            }
            if let Err(end) = self.flush(control).await {
                return end;
            }
        }
    }

    /// Handles the router's notifications: the one that woke the session
    /// and those already waiting behind it (up to `NOTIFICATION_BATCH`),
    /// then sends the acks they produced to the router.
    async fn notifications(&mut self, first: Option<Notification>) -> Result<(), End> {
        let mut next = Some(Ok(first));
        let mut handled = 0;
        while let Some(n) = next.take() {
            match n {
                Ok(Some(notification)) => self.notification(notification).await?,
                Ok(None) => {}
                Err(_) => return Err(router_gone()),
            }
            handled += 1;
            if handled < NOTIFICATION_BATCH {
                next = now_or_never(self.link_rx.next());
            }
        }
        self.send_to_router().await
    }

    /// The end of a subscriber that held a publisher past
    /// `mqtt.max_subscriber_stall`: counted as a quota, logged with what it
    /// had waiting, DISCONNECT 0x97 (MQTT 5), will published.
    fn stalled_end(&mut self) -> End {
        let (messages, bytes) = self.flow_queue.load();
        let stall = self.shared().config.mqtt.max_subscriber_stall;
        tracing::warn!(client_id = ?self.client_id, messages, bytes, ?stall, "subscriber did not take its messages while a publisher waited for room in its queue; disconnected so its publishers go on (mqtt.max_subscriber_stall; counted in gatehouse_quota_exceeded_total)");
        // Its own log line (above) instead of `over_quota`'s generic one.
        self.count_quota(Quota::SubscriberStall);
        End::new(DisconnectReason::QuotaExceeded, Some(0x97), true)
    }

    /// Writes what is buffered; a control signal (revocation, shutdown)
    /// interrupts a write stuck on a client that does not read.
    async fn flush(&mut self, control: &mut mpsc::Receiver<Control>) -> Result<(), End> {
        if self.conn.wbuf.is_empty() {
            return Ok(());
        }
        tokio::select! {
            // The write first: when it completes at once (the usual case)
            // nothing else is polled.
            biased;
            r = self.conn.flush() => r.map_err(|_| End::new(DisconnectReason::ConnectionLost, None, true)),
            _ = self.flow_queue.cut() => {
                // Mid-write: a DISCONNECT cannot follow a partial frame.
                self.conn.wbuf.clear();
                Err(End { send: None, ..self.stalled_end() })
            }
            c = control.recv() => {
                match control_end(c) {
                    Some(mut end) => {
                        // Mid-write: a DISCONNECT cannot follow a partial frame.
                        end.send = None;
                        self.conn.wbuf.clear();
                        Err(end)
                    }
                    None => Box::pin(self.conn.flush()).await.map_err(|_| End::new(DisconnectReason::ConnectionLost, None, true)),
                }
            }
        }
    }

    async fn send_to_router(&mut self) -> Result<(), End> {
        let Some(last) = self.to_router.pop() else {
            return Ok(());
        };
        {
            let mut buffer = self.link_tx.buffer();
            buffer.extend(self.to_router.drain(..));
        }
        self.link_tx.send(last).await.map(|_| ()).map_err(|_| End {
            router_gone: true,
            ..End::new(DisconnectReason::TakenOver, Some(0x8E), true)
        })
    }

    /// Counts a message not delivered (`gatehouse_messages_dropped_total`).
    fn count_drop(&self, reason: &'static str, qos: u8) {
        const QOS: [&str; 3] = ["0", "1", "2"];
        self.shared()
            .metrics
            .messages_dropped
            .with_label_values(&[reason, QOS[usize::from(qos.min(2))]])
            .inc();
    }

    /// Counts a dropped message and says so in the log at most once a
    /// minute per session, with how many went since the last line.
    fn dropped(&mut self, reason: &'static str, qos: u8, subscriber: &str) {
        self.count_drop(reason, qos);
        self.drops.unlogged += 1;
        let now = Instant::now();
        if self
            .drops
            .logged_at
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
        {
            return;
        }
        let what = match reason {
            "subscriber_full" => {
                "QoS 0 message dropped: a subscriber's queue stayed full for 5 s (it reads slower than this topic is published; raise mqtt.max_queued_messages / max_queued_bytes if its bursts are legitimate)"
            }
            "packet_too_large" => {
                "message not delivered: larger than the Maximum Packet Size this client asked for"
            }
            _ => "message dropped",
        };
        tracing::warn!(client_id = ?self.client_id, subscriber, reason, qos, dropped = self.drops.unlogged, "{what}; counted in gatehouse_messages_dropped_total (logged at most once a minute per session)");
        self.drops.unlogged = 0;
        self.drops.logged_at = Some(now);
    }

    fn write(&mut self, packet: Packet) {
        if let Err(e) = self.codec.write(packet, &mut self.conn.wbuf) {
            tracing::error!(client_id = ?self.client_id, error = ?e, "cannot encode packet");
        }
    }

    fn v5(&self) -> bool {
        self.codec.version() == Version::V5
    }

    /// The will, stamped for the router, with the time it waits: its Will
    /// Delay Interval, but never longer than the session lives.
    fn take_will(&mut self) -> Option<DelayedWill> {
        let will = self.will.take()?;
        let props = self.will_props.take();
        let delay = props
            .as_ref()
            .and_then(|p| p.delay_interval)
            .map_or(Duration::ZERO, |d| Duration::from_secs(d.into()))
            .min(self.lifetime.expiry);
        Some(DelayedWill {
            delay,
            publish: will_publish(&will, &self.client_id),
            properties: props.map(will_properties),
        })
    }

    /// The client's state outside the router once the session is over:
    /// the book (a session that does not outlive its connection takes its
    /// subscriptions along) and the afterlife (delayed will, expiry).
    fn release_client(&mut self, shared: &Arc<Shared>, will: Option<DelayedWill>) {
        shared.flow.close(&self.flow_queue);
        if let Some(w) = self.waiting.take() {
            self.abandon(w);
        }
        shared
            .book
            .session_end(&self.client_id, self.lifetime.expiry.is_zero());
        shared
            .afterlife
            .ended(shared, &self.client_id, self.lifetime, will);
    }

    /// Queues the end of the session for the router: `will` if given, and
    /// a DISCONNECT, which frees the router's slot.
    fn queue_router_end(&mut self, will: Option<DelayedWill>) {
        if let Some(w) = will {
            self.to_router
                .push(Packet::Publish(w.publish, w.properties));
        }
        self.to_router.push(Packet::Disconnect(
            Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            },
            None,
        ));
    }

    async fn finish(&mut self, end: End) {
        let shared = self.conn.shared.clone();
        if let (Some(code), true) = (end.send, self.v5()) {
            // Encoded here: rumqttd's v5 DISCONNECT writer emits a bare
            // `E0 00` (normal disconnection) for any reason code.
            self.conn.wbuf.extend_from_slice(&[0xE0, 0x02, code, 0x00]);
        }
        // A will without delay goes with the DISCONNECT through this
        // session's link; one with a delay, or of a session the router
        // already dropped (taken over), goes through `afterlife`.
        let will = if end.will { self.take_will() } else { None };
        let (now, later) = match will {
            Some(w) if w.delay.is_zero() && !end.router_gone => (Some(w), None),
            w => (None, w),
        };
        if !end.router_gone {
            self.queue_router_end(now);
            let _ = self.send_to_router().await;
        }
        self.router_released = true;
        if end.reason == DisconnectReason::Revoked {
            shared.metrics.gate.emit(RevokedSessionCut {
                client_id: &self.client_id,
                serial: &self.identity.serial,
                already_gone: false,
            });
        }
        self.conn.close().await;
        self.release_client(&shared, later);
        shared
            .presence
            .on_disconnect(&self.presence(Some(end.reason)));
        self.finished = true;
    }
}

/// MQTT 5 value of a DISCONNECT reason code (rumqttd's enum is not
/// numbered by the spec).
fn reason_byte(code: DisconnectReasonCode) -> u8 {
    use DisconnectReasonCode as R;
    match code {
        R::NormalDisconnection => 0x00,
        R::MalformedPacket => 0x81,
        R::ProtocolError => 0x82,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::ServerBusy => 0x89,
        R::ServerShuttingDown => 0x8B,
        R::KeepAliveTimeout => 0x8D,
        R::SessionTakenOver => 0x8E,
        R::TopicFilterInvalid => 0x8F,
        R::TopicNameInvalid => 0x90,
        R::ReceiveMaximumExceeded => 0x93,
        R::TopicAliasInvalid => 0x94,
        R::PacketTooLarge => 0x95,
        R::MessageRateTooHigh => 0x96,
        R::QuotaExceeded => 0x97,
        R::AdministrativeAction => 0x98,
        R::PayloadFormatInvalid => 0x99,
        R::RetainNotSupported => 0x9A,
        R::QoSNotSupported => 0x9B,
        R::SharedSubscriptionNotSupported => 0x9E,
        R::SubscriptionIdentifiersNotSupported => 0xA1,
        R::WildcardSubscriptionsNotSupported => 0xA2,
        _ => 0x80,
    }
}

fn control_end(c: Option<Control>) -> Option<End> {
    match c? {
        Control::Revoked => Some(End::new(DisconnectReason::Revoked, Some(0x87), false)),
        Control::Shutdown => Some(End::new(DisconnectReason::Shutdown, Some(0x8B), false)),
    }
}

/// The will as a PUBLISH (rumqttd keeps QoS fields crate-private, so it is
/// built from rumqttd's own serialised form).
/// The will's properties as the PUBLISH's (all but the Will Delay
/// Interval, which is the broker's to apply).
fn will_properties(p: LastWillProperties) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        ..Default::default()
    }
}

/// The will as the PUBLISH the router gets, its payload stamped with its
/// origin (`delivery`). A QoS 2 will goes to the router as QoS 1, as the
/// session's own QoS 2 PUBLISHes do (the router would otherwise hold it for
/// a PUBREL).
fn will_publish(will: &LastWill, client_id: &str) -> Publish {
    let mut b = BytesMut::with_capacity(5 + will.topic.len());
    let qos = (will.qos as u8).min(1);
    b.put_u8(0x30 | (qos << 1) | u8::from(will.retain));
    b.put_u16(if qos == 0 { 0 } else { 1 });
    b.put_u16(will.topic.len() as u16);
    b.extend_from_slice(&will.topic);
    let mut publish = Publish::deserialize(b.freeze());
    publish.payload = delivery::stamp(&will.message, will.qos as u8, will.retain, client_id);
    publish
}
