//! One connection from accept to close: TLS handshake under a deadline,
//! identity and revocation, CONNECT (client-id policy, will ACL), the router
//! link, then the packet pump with the ACL on every PUBLISH, SUBSCRIBE and
//! delivered message.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use gatehouse_acl::{Action, Decision, Subject};
use gatehouse_auth::{Identity, IdentityError};
use prometheus::IntCounter;
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, Connect, ConnectReturnCode, Disconnect, DisconnectReasonCode,
    LastWill, Packet, PingResp, PubAck, PubAckReason, Publish, QoS, SubAck, SubscribeReasonCode,
    UnsubAck, UnsubAckReason,
};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::server::TlsStream;

use crate::presence::{DisconnectReason, PresenceEvent};
use crate::registry::Control;
use crate::server::Shared;
use crate::tls::HandshakeResult;
use crate::wire::{self, Codec, ConnectPeek, Version};

/// Most router notifications handled per wake-up before writing.
const NOTIFICATION_BATCH: usize = 256;

type Io = TlsStream<TcpStream>;

/// Serves one accepted TCP connection until it closes.
pub(crate) async fn serve(tcp: TcpStream, peer: std::net::SocketAddr, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let started = Instant::now();
    let deadline = started + shared.config.tls.handshake_timeout;
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.current());
    let io = match timeout_at(deadline, acceptor.accept(tcp)).await {
        Err(_) => {
            return refused(
                &shared,
                peer,
                HandshakeResult::Timeout,
                "no TLS handshake in time",
            );
        }
        Ok(Err(e)) => {
            let result = HandshakeResult::of_io_error(&e);
            return refused(&shared, peer, result, &e.to_string());
        }
        Ok(Ok(io)) => io,
    };
    let Some(leaf) = io.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        return refused(
            &shared,
            peer,
            HandshakeResult::NoCert,
            "no client certificate",
        );
    };
    let identity = match shared.classifier.identify(leaf.as_ref()) {
        Ok(id) => id,
        Err(e @ (IdentityError::UnknownKind { .. } | IdentityError::AmbiguousKind { .. })) => {
            return refused(&shared, peer, HandshakeResult::UnknownKind, &e.to_string());
        }
        Err(e) => return refused(&shared, peer, HandshakeResult::BadChain, &e.to_string()),
    };
    // Register before checking, so a revocation published in between still
    // reaches this session.
    let (registration, control) = shared.registry.register(identity.serial);
    if let Err(e) = shared.revocation.check(&identity.serial) {
        drop(registration);
        return refused(
            &shared,
            peer,
            HandshakeResult::Revoked,
            &format!("{e} (CN {:?})", identity.cn),
        );
    }
    shared
        .metrics
        .handshakes
        .with_label_values(&[HandshakeResult::Ok.as_str()])
        .inc();
    shared
        .metrics
        .handshake_seconds
        .observe(started.elapsed().as_secs_f64());

    let mut conn = Conn {
        io,
        rbuf: BytesMut::with_capacity(4096),
        wbuf: BytesMut::with_capacity(4096),
        shared: shared.clone(),
        peer,
    };
    let connect = match conn.read_connect(deadline).await {
        Ok(c) => c,
        Err(reason) => {
            shared
                .metrics
                .protocol_errors
                .with_label_values(&[reason])
                .inc();
            tracing::info!(%peer, cn = %identity.cn, reason, "connection closed before a valid CONNECT");
            conn.close().await;
            return;
        }
    };
    let Some(session) = conn.admit(identity, connect).await else {
        return;
    };
    session.run(control).await;
    drop(registration);
}

fn refused(shared: &Shared, peer: std::net::SocketAddr, result: HandshakeResult, why: &str) {
    shared
        .metrics
        .handshakes
        .with_label_values(&[result.as_str()])
        .inc();
    if result == HandshakeResult::Failed {
        tracing::debug!(%peer, result = result.as_str(), why, "TLS handshake failed");
    } else {
        tracing::warn!(%peer, result = result.as_str(), why, "client refused at handshake");
    }
}

/// A TLS connection before and during its session.
struct Conn {
    io: Io,
    rbuf: BytesMut,
    wbuf: BytesMut,
    shared: Arc<Shared>,
    peer: std::net::SocketAddr,
}

struct ConnectPacket {
    codec: Codec,
    connect: Connect,
    will: Option<LastWill>,
    props: Option<rumqttd::protocol::ConnectProperties>,
}

impl Conn {
    async fn read_more(&mut self, deadline: Instant) -> Result<(), &'static str> {
        match timeout_at(deadline, self.io.read_buf(&mut self.rbuf)).await {
            Err(_) => Err("connect_timeout"),
            Ok(Ok(0)) | Ok(Err(_)) => Err("closed_before_connect"),
            Ok(Ok(n)) => {
                self.shared.metrics.bytes_in.inc_by(n as u64);
                Ok(())
            }
        }
    }

    /// Reads the first packet, which must be a v3.1.1 or v5 CONNECT.
    async fn read_connect(&mut self, deadline: Instant) -> Result<ConnectPacket, &'static str> {
        let version = loop {
            match wire::peek_connect(&self.rbuf) {
                ConnectPeek::NeedMore => self.read_more(deadline).await?,
                ConnectPeek::Version(v) => break v,
                ConnectPeek::NotConnect => return Err("not_connect"),
                ConnectPeek::Malformed => return Err("malformed"),
                ConnectPeek::UnsupportedLevel(_) => {
                    let ack = ConnAck {
                        session_present: false,
                        code: ConnectReturnCode::RefusedProtocolVersion,
                    };
                    let _ =
                        Codec::new(Version::V4).write(Packet::ConnAck(ack, None), &mut self.wbuf);
                    let _ = self.flush().await;
                    return Err("unsupported_protocol");
                }
            }
        };
        let mut codec = Codec::new(version);
        let max = self.shared.config.mqtt.max_packet_size;
        loop {
            match codec.read(&mut self.rbuf, max) {
                Ok(Packet::Connect(connect, props, will, _will_props, _login)) => {
                    return Ok(ConnectPacket {
                        codec,
                        connect,
                        will,
                        props,
                    });
                }
                Ok(_) => return Err("not_connect"),
                Err(rumqttd::protocol::Error::InsufficientBytes(_)) => {
                    self.read_more(deadline).await?
                }
                Err(rumqttd::protocol::Error::PayloadSizeLimitExceeded(_)) => {
                    return Err("packet_too_large");
                }
                Err(_) => return Err("malformed"),
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let n = self.wbuf.len();
        self.io.write_all(&self.wbuf).await?;
        self.io.flush().await?;
        self.wbuf.clear();
        self.shared.metrics.bytes_out.inc_by(n as u64);
        Ok(())
    }

    /// Best-effort TLS close_notify, bounded in time.
    async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            let _ = self.flush().await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }

    async fn refuse_connect(
        &mut self,
        codec: &Codec,
        v5: ConnectReturnCode,
        v4: ConnectReturnCode,
        reason: &'static str,
    ) {
        self.shared
            .metrics
            .connect_refused
            .with_label_values(&[reason])
            .inc();
        let code = if codec.version() == Version::V5 {
            v5
        } else {
            v4
        };
        let _ = codec.write(
            Packet::ConnAck(
                ConnAck {
                    session_present: false,
                    code,
                },
                None,
            ),
            &mut self.wbuf,
        );
        self.close().await;
    }

    /// CONNECT checks, router link, CONNACK.
    async fn admit(mut self, identity: Identity, cp: ConnectPacket) -> Option<Session> {
        let ConnectPacket {
            codec,
            mut connect,
            will,
            props,
        } = cp;
        let shared = self.shared.clone();
        let v5 = codec.version() == Version::V5;
        let client_id = connect.client_id.clone();
        let bad_id = client_id.is_empty() || client_id.contains(['+', '#', '/', '$', '\0']);
        let policy = shared.policy.check(identity.kind, &identity.cn, &client_id);
        if bad_id || policy.is_err() {
            let why = match policy {
                Err(e) => e.to_string(),
                Ok(()) => format!("client id {client_id:?} is empty or holds one of + # / $"),
            };
            tracing::warn!(peer = %self.peer, cn = %identity.cn, kind = %identity.kind, client_id = %client_id, why, "CONNECT refused: client id");
            self.refuse_connect(
                &codec,
                ConnectReturnCode::ClientIdentifierNotValid,
                ConnectReturnCode::ClientIdentifierNotValid,
                "client_id",
            )
            .await;
            return None;
        }
        let subject = Subject::new(identity.kind, &identity.cn, &client_id);
        let mut will = will;
        if let Some(w) = will.as_mut() {
            let topic = String::from_utf8_lossy(&w.topic).into_owned();
            let decision = shared.acl.decide_bytes(&subject, Action::Publish, &w.topic);
            if !decision.is_allowed() {
                shared
                    .metrics
                    .acl_denials
                    .with_label_values(&[identity.kind.as_str(), "publish"])
                    .inc();
                tracing::warn!(client_id = %client_id, "CONNECT refused: will topic: {}", shared.acl.explain_decision(&subject, Action::Publish, &topic, decision));
                self.refuse_connect(
                    &codec,
                    ConnectReturnCode::NotAuthorized,
                    ConnectReturnCode::NotAuthorized,
                    "will_acl",
                )
                .await;
                return None;
            }
            if w.qos == QoS::ExactlyOnce {
                if v5 {
                    self.refuse_connect(
                        &codec,
                        ConnectReturnCode::QoSNotSupported,
                        ConnectReturnCode::QoSNotSupported,
                        "will_qos2",
                    )
                    .await;
                    return None;
                }
                w.qos = QoS::AtLeastOnce;
            }
        }
        if props
            .as_ref()
            .and_then(|p| p.authentication_method.as_ref())
            .is_some()
        {
            self.refuse_connect(
                &codec,
                ConnectReturnCode::BadAuthenticationMethod,
                ConnectReturnCode::NotAuthorized,
                "auth_method",
            )
            .await;
            return None;
        }
        let client_max_packet = props
            .as_ref()
            .and_then(|p| p.max_packet_size)
            .map(|m| m as usize);
        let max_keepalive = shared.config.mqtt.max_keepalive.as_secs() as u16;
        let asked = connect.keep_alive;
        if asked == 0 || asked > max_keepalive {
            connect.keep_alive = max_keepalive;
        }
        let clean = connect.clean_session;
        let router = shared.clone();
        let id = client_id.clone();
        let linked = tokio::task::spawn_blocking(move || router.router.link(&id, clean)).await;
        let (link_tx, link_rx, notification) = match linked {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::error!(client_id = %client_id, error = %e, "router refused the session");
                self.refuse_connect(
                    &codec,
                    ConnectReturnCode::ServerBusy,
                    ConnectReturnCode::ServiceUnavailable,
                    "router",
                )
                .await;
                return None;
            }
            Err(e) => {
                tracing::error!(client_id = %client_id, error = %e, "router link task failed");
                self.refuse_connect(
                    &codec,
                    ConnectReturnCode::ServerBusy,
                    ConnectReturnCode::ServiceUnavailable,
                    "router",
                )
                .await;
                return None;
            }
        };
        let session_present = match Option::<Packet>::from(notification) {
            Some(Packet::ConnAck(ack, _)) => ack.session_present,
            _ => false,
        };
        let props = v5.then(|| ConnAckProperties {
            max_qos: Some(1),
            retain_available: Some(1),
            max_packet_size: Some(shared.config.mqtt.max_packet_size as u32),
            wildcard_subscription_available: Some(1),
            shared_subscription_available: Some(0),
            subscription_identifiers_available: Some(1),
            server_keep_alive: (connect.keep_alive != asked).then_some(connect.keep_alive),
            ..Default::default()
        });
        let ack = ConnAck {
            session_present,
            code: ConnectReturnCode::Success,
        };
        let _ = codec.write(Packet::ConnAck(ack, props), &mut self.wbuf);
        let kind = identity.kind;
        let metrics = &shared.metrics;
        let session = Session {
            deny_publish: metrics
                .acl_denials
                .with_label_values(&[kind.as_str(), "publish"]),
            deny_subscribe: metrics
                .acl_denials
                .with_label_values(&[kind.as_str(), "subscribe"]),
            deny_receive: metrics
                .acl_denials
                .with_label_values(&[kind.as_str(), "receive"]),
            conn: self,
            codec,
            identity,
            client_id,
            keepalive: Duration::from_secs(u64::from(connect.keep_alive)).mul_f32(1.5),
            will,
            link_tx,
            link_rx,
            to_router: Vec::new(),
            outgoing_acks: VecDeque::new(),
            pending_subacks: HashMap::new(),
            violations: 0,
            client_max_packet,
        };
        Some(session)
    }
}

/// An admitted MQTT session.
struct Session {
    conn: Conn,
    codec: Codec,
    identity: Identity,
    client_id: String,
    /// 1.5 x the keepalive in force.
    keepalive: Duration,
    will: Option<LastWill>,
    link_tx: LinkTx,
    link_rx: LinkRx,
    /// Packets for the router, sent in one batch.
    to_router: Vec<Packet>,
    /// Router packet ids of QoS 1 deliveries, in the order the router sent
    /// them; `true` once the client acked (or the ACL dropped it). The
    /// router needs acks in order.
    outgoing_acks: VecDeque<(u16, bool)>,
    /// SUBSCRIBEs partly refused by the ACL: the codes we decided, `None`
    /// where the router's code goes.
    pending_subacks: HashMap<u16, Vec<Option<SubscribeReasonCode>>>,
    violations: usize,
    client_max_packet: Option<usize>,
    deny_publish: IntCounter,
    deny_subscribe: IntCounter,
    deny_receive: IntCounter,
}

/// How a session ends.
struct End {
    reason: DisconnectReason,
    /// v5 DISCONNECT reason code to send first.
    send: Option<DisconnectReasonCode>,
    will: bool,
    /// The router already dropped the session.
    router_gone: bool,
}

impl End {
    fn new(reason: DisconnectReason, send: Option<DisconnectReasonCode>, will: bool) -> End {
        End {
            reason,
            send,
            will,
            router_gone: false,
        }
    }
}

/// Polls a future once: its value if ready now.
fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
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

    async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        let kind = self.identity.kind.as_str();
        let shared = self.conn.shared.clone();
        let active = shared.metrics.sessions_active.with_label_values(&[kind]);
        active.inc();
        shared.presence.on_connect(&self.presence(None));
        let end = match self.flush(&mut control).await {
            Ok(()) => self.pump(&mut control).await,
            Err(end) => end,
        };
        self.finish(end).await;
        active.dec();
    }

    async fn pump(&mut self, control: &mut mpsc::Receiver<Control>) -> End {
        let mut last_rx = Instant::now();
        loop {
            let keepalive_at = last_rx + self.keepalive;
            tokio::select! {
                biased;
                c = control.recv() => {
                    if let Some(end) = control_end(c) {
                        return end;
                    }
                }
                r = self.conn.io.read_buf(&mut self.conn.rbuf) => {
                    match r {
                        Ok(0) => return End::new(DisconnectReason::ConnectionLost, None, true),
                        Err(e) => {
                            tracing::debug!(client_id = %self.client_id, error = %e, "read failed");
                            return End::new(DisconnectReason::ConnectionLost, None, true);
                        }
                        Ok(n) => {
                            self.shared().metrics.bytes_in.inc_by(n as u64);
                            last_rx = Instant::now();
                            if let Err(end) = self.incoming().await {
                                let _ = self.send_to_router().await;
                                return end;
                            }
                        }
                    }
                }
                n = self.link_rx.next() => {
                    let mut next = Some(n);
                    let mut handled = 0;
                    while let Some(n) = next.take() {
                        match n {
                            Ok(Some(notification)) => {
                                if let Err(end) = self.notification(notification).await {
                                    return end;
                                }
                            }
                            Ok(None) => {}
                            Err(_) => {
                                return End { router_gone: true, ..End::new(DisconnectReason::TakenOver, Some(DisconnectReasonCode::SessionTakenOver), false) };
                            }
                        }
                        handled += 1;
                        if handled < NOTIFICATION_BATCH {
                            next = now_or_never(self.link_rx.next());
                        }
                    }
                    if let Err(end) = self.send_to_router().await {
                        return end;
                    }
                }
                _ = tokio::time::sleep_until(keepalive_at) => {
                    return End::new(DisconnectReason::KeepaliveTimeout, Some(DisconnectReasonCode::KeepAliveTimeout), true);
                }
            }
            if let Err(end) = self.flush(control).await {
                return end;
            }
        }
    }

    /// Writes what is buffered; a control signal (revocation, shutdown)
    /// interrupts a write stuck on a client that does not read.
    async fn flush(&mut self, control: &mut mpsc::Receiver<Control>) -> Result<(), End> {
        if self.conn.wbuf.is_empty() {
            return Ok(());
        }
        tokio::select! {
            r = self.conn.flush() => r.map_err(|_| End::new(DisconnectReason::ConnectionLost, None, true)),
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
            ..End::new(
                DisconnectReason::TakenOver,
                Some(DisconnectReasonCode::SessionTakenOver),
                false,
            )
        })
    }

    fn write(&mut self, packet: Packet) {
        if let Err(e) = self.codec.write(packet, &mut self.conn.wbuf) {
            tracing::error!(client_id = %self.client_id, error = ?e, "cannot encode packet");
        }
    }

    fn v5(&self) -> bool {
        self.codec.version() == Version::V5
    }

    /// Decodes and handles every complete packet in the read buffer.
    async fn incoming(&mut self) -> Result<(), End> {
        let max = self.shared().config.mqtt.max_packet_size;
        loop {
            let (qos, pkid) = match wire::frame_len(&self.conn.rbuf) {
                Some(len) => wire::publish_qos_pkid(&self.conn.rbuf[..len]).unwrap_or((0, 0)),
                None => (0, 0),
            };
            let packet = match self.codec.read(&mut self.conn.rbuf, max) {
                Ok(p) => p,
                Err(rumqttd::protocol::Error::InsufficientBytes(_)) => break,
                Err(rumqttd::protocol::Error::PayloadSizeLimitExceeded(size)) => {
                    self.shared()
                        .metrics
                        .protocol_errors
                        .with_label_values(&["packet_too_large"])
                        .inc();
                    tracing::warn!(client_id = %self.client_id, size, max, "packet too large; closing the connection (mqtt.max_packet_size)");
                    return Err(End::new(
                        DisconnectReason::ProtocolError,
                        Some(DisconnectReasonCode::PacketTooLarge),
                        true,
                    ));
                }
                Err(e) => {
                    self.shared()
                        .metrics
                        .protocol_errors
                        .with_label_values(&["malformed"])
                        .inc();
                    tracing::warn!(client_id = %self.client_id, error = %e, "malformed packet; closing the connection");
                    return Err(End::new(
                        DisconnectReason::ProtocolError,
                        Some(DisconnectReasonCode::MalformedPacket),
                        true,
                    ));
                }
            };
            self.packet(packet, qos, pkid)?;
        }
        self.send_to_router().await
    }

    fn protocol_error(&self, what: &'static str, code: DisconnectReasonCode) -> End {
        self.shared()
            .metrics
            .protocol_errors
            .with_label_values(&[what])
            .inc();
        tracing::warn!(client_id = %self.client_id, what, "protocol error; closing the connection");
        End::new(DisconnectReason::ProtocolError, Some(code), true)
    }

    fn packet(&mut self, packet: Packet, qos: u8, pkid: u16) -> Result<(), End> {
        match packet {
            Packet::Publish(publish, props) => self.publish(publish, props, qos, pkid),
            Packet::Subscribe(mut subscribe, props) => {
                let shared = self.conn.shared.clone();
                let subject = Subject::new(self.identity.kind, &self.identity.cn, &self.client_id);
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                let mut allowed = Vec::with_capacity(subscribe.filters.len());
                for mut f in subscribe.filters.drain(..) {
                    let decision = shared.acl.decide(&subject, Action::Subscribe, &f.path);
                    if decision.is_allowed() {
                        if f.qos == QoS::ExactlyOnce {
                            f.qos = QoS::AtLeastOnce;
                        }
                        codes.push(None);
                        allowed.push(f);
                    } else {
                        self.deny_subscribe.inc();
                        tracing::warn!(client_id = %self.client_id, "{}", shared.acl.explain_decision(&subject, Action::Subscribe, &f.path, decision));
                        codes.push(Some(if self.codec.version() == Version::V5 {
                            SubscribeReasonCode::NotAuthorized
                        } else {
                            SubscribeReasonCode::Failure
                        }));
                    }
                }
                if allowed.is_empty() {
                    let return_codes = codes.into_iter().flatten().collect();
                    self.write(Packet::SubAck(
                        SubAck {
                            pkid: subscribe.pkid,
                            return_codes,
                        },
                        None,
                    ));
                } else {
                    if codes.iter().any(Option::is_some) {
                        self.pending_subacks.insert(subscribe.pkid, codes);
                    }
                    subscribe.filters = allowed;
                    self.to_router.push(Packet::Subscribe(subscribe, props));
                }
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe, props) => {
                // rumqttd acks only filters that existed, one UNSUBACK each:
                // answer here, once, and drop the router's acks.
                let reasons = vec![UnsubAckReason::Success; unsubscribe.filters.len()];
                self.write(Packet::UnsubAck(
                    UnsubAck {
                        pkid: unsubscribe.pkid,
                        reasons,
                    },
                    None,
                ));
                self.to_router.push(Packet::Unsubscribe(unsubscribe, props));
                Ok(())
            }
            Packet::PubAck(ack, _) => {
                if let Some(entry) = self
                    .outgoing_acks
                    .iter_mut()
                    .find(|(p, done)| *p == ack.pkid && !done)
                {
                    entry.1 = true;
                } else {
                    tracing::debug!(client_id = %self.client_id, pkid = ack.pkid, "PUBACK for no message in flight; ignored");
                }
                self.release_acks();
                Ok(())
            }
            Packet::PingReq(_) => {
                self.write(Packet::PingResp(PingResp));
                Ok(())
            }
            Packet::Disconnect(d, _) => {
                let will = d.reason_code == DisconnectReasonCode::DisconnectWithWillMessage;
                Err(End::new(DisconnectReason::ClientDisconnect, None, will))
            }
            Packet::PubRec(..) | Packet::PubRel(..) | Packet::PubComp(..) => {
                Err(self
                    .protocol_error("qos2_not_supported", DisconnectReasonCode::QoSNotSupported))
            }
            Packet::Connect(..) => {
                Err(self.protocol_error("second_connect", DisconnectReasonCode::ProtocolError))
            }
            _ => Err(self.protocol_error("unexpected_packet", DisconnectReasonCode::ProtocolError)),
        }
    }

    fn publish(
        &mut self,
        publish: Publish,
        props: Option<rumqttd::protocol::PublishProperties>,
        qos: u8,
        pkid: u16,
    ) -> Result<(), End> {
        if qos == 2 {
            return Err(
                self.protocol_error("qos2_not_supported", DisconnectReasonCode::QoSNotSupported)
            );
        }
        if props.as_ref().is_some_and(|p| p.topic_alias.is_some()) {
            return Err(self.protocol_error("topic_alias", DisconnectReasonCode::TopicAliasInvalid));
        }
        let shared = self.conn.shared.clone();
        let subject = Subject::new(self.identity.kind, &self.identity.cn, &self.client_id);
        let decision: Decision = shared
            .acl
            .decide_bytes(&subject, Action::Publish, &publish.topic);
        if decision.is_allowed() {
            shared.metrics.messages_in.inc();
            self.to_router.push(Packet::Publish(publish, props));
            return Ok(());
        }
        self.deny_publish.inc();
        self.violations += 1;
        let topic = String::from_utf8_lossy(&publish.topic);
        tracing::warn!(
            client_id = %self.client_id,
            violations = self.violations,
            "{}",
            shared.acl.explain_decision(&subject, Action::Publish, &topic, decision)
        );
        if qos == 1 {
            let reason = if self.v5() {
                PubAckReason::NotAuthorized
            } else {
                PubAckReason::Success
            };
            self.write(Packet::PubAck(PubAck { pkid, reason }, None));
        }
        if self.violations >= shared.config.mqtt.acl_violations_before_disconnect {
            tracing::warn!(client_id = %self.client_id, violations = self.violations, "too many denied publishes; disconnecting (mqtt.acl_violations_before_disconnect)");
            return Err(End::new(
                DisconnectReason::AclViolations,
                Some(DisconnectReasonCode::NotAuthorized),
                true,
            ));
        }
        Ok(())
    }

    /// Hands the router every ack it can take in order.
    fn release_acks(&mut self) {
        while let Some(&(pkid, true)) = self.outgoing_acks.front() {
            self.outgoing_acks.pop_front();
            self.to_router.push(Packet::PubAck(
                PubAck {
                    pkid,
                    reason: PubAckReason::Success,
                },
                None,
            ));
        }
    }

    async fn notification(&mut self, notification: Notification) -> Result<(), End> {
        if let Notification::Unschedule = notification {
            // As rumqttd's own remote link: tell the router we can take more.
            return self.link_rx.wake().await.map_err(|_| End {
                router_gone: true,
                ..End::new(
                    DisconnectReason::TakenOver,
                    Some(DisconnectReasonCode::SessionTakenOver),
                    false,
                )
            });
        }
        match Option::<Packet>::from(notification) {
            Some(Packet::Publish(publish, props)) => self.deliver(publish, props),
            Some(Packet::SubAck(mut ack, props)) => {
                if let Some(codes) = self.pending_subacks.remove(&ack.pkid) {
                    let mut router_codes = ack.return_codes.into_iter();
                    ack.return_codes = codes
                        .into_iter()
                        .map(|c| {
                            c.or_else(|| router_codes.next())
                                .unwrap_or(SubscribeReasonCode::Failure)
                        })
                        .collect();
                }
                self.write(Packet::SubAck(ack, props));
            }
            Some(Packet::UnsubAck(..))
            | Some(Packet::PingResp(..))
            | Some(Packet::ConnAck(..))
            | None => {}
            Some(Packet::Disconnect(d, props)) => {
                return Err(End {
                    router_gone: true,
                    ..End::new(DisconnectReason::ProtocolError, Some(d.reason_code), true)
                })
                .inspect_err(|_| drop(props));
            }
            Some(other) => self.write(other),
        }
        Ok(())
    }

    /// A message the router routes to this client: receive rule, then out.
    fn deliver(&mut self, publish: Publish, props: Option<rumqttd::protocol::PublishProperties>) {
        let shared = self.conn.shared.clone();
        let subject = Subject::new(self.identity.kind, &self.identity.cn, &self.client_id);
        let decision = shared
            .acl
            .decide_bytes(&subject, Action::Receive, &publish.topic);
        let start = self.conn.wbuf.len();
        if decision.is_allowed() {
            self.write(Packet::Publish(publish, props));
            let frame = &self.conn.wbuf[start..];
            let too_big = self.client_max_packet.is_some_and(|max| frame.len() > max);
            if let Some((qos, pkid)) = wire::publish_qos_pkid(frame) {
                if too_big {
                    self.conn.wbuf.truncate(start);
                }
                if qos > 0 {
                    self.outgoing_acks.push_back((pkid, too_big));
                }
                if !too_big {
                    shared.metrics.messages_out.inc();
                }
            }
            self.release_acks();
            return;
        }
        self.deny_receive.inc();
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        tracing::warn!(client_id = %self.client_id, "{}", shared.acl.explain_decision(&subject, Action::Receive, &topic, decision));
        let mut scratch = BytesMut::new();
        if self
            .codec
            .write(Packet::Publish(publish, None), &mut scratch)
            .is_ok()
        {
            if let Some((qos, pkid)) = wire::publish_qos_pkid(&scratch) {
                if qos > 0 {
                    self.outgoing_acks.push_back((pkid, true));
                }
            }
        }
        self.release_acks();
    }

    async fn finish(mut self, end: End) {
        let shared = self.conn.shared.clone();
        if let (Some(code), true) = (end.send, self.v5()) {
            // Encoded here: rumqttd's v5 DISCONNECT writer emits a bare
            // `E0 00` (normal disconnection) for any reason code.
            self.conn
                .wbuf
                .extend_from_slice(&[0xE0, 0x02, reason_byte(code), 0x00]);
        }
        if !end.router_gone {
            if end.will {
                if let Some(will) = self.will.take() {
                    self.to_router
                        .push(Packet::Publish(will_publish(&will), None));
                }
            }
            self.to_router.push(Packet::Disconnect(
                Disconnect {
                    reason_code: DisconnectReasonCode::NormalDisconnection,
                },
                None,
            ));
            let _ = self.send_to_router().await;
        }
        self.conn.close().await;
        if end.reason == DisconnectReason::Revoked {
            shared.metrics.revocation_kicks.inc();
            tracing::warn!(client_id = %self.client_id, cn = %self.identity.cn, serial = %self.identity.serial, "certificate revoked: session disconnected");
        }
        shared
            .presence
            .on_disconnect(&self.presence(Some(end.reason)));
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
        Control::Revoked => Some(End::new(
            DisconnectReason::Revoked,
            Some(DisconnectReasonCode::NotAuthorized),
            false,
        )),
        Control::Shutdown => Some(End::new(
            DisconnectReason::Shutdown,
            Some(DisconnectReasonCode::ServerShuttingDown),
            false,
        )),
    }
}

/// The will as a PUBLISH (rumqttd keeps QoS fields crate-private, so it is
/// built from rumqttd's own serialised form).
fn will_publish(will: &LastWill) -> Publish {
    let mut b = BytesMut::with_capacity(5 + will.topic.len() + will.message.len());
    b.put_u8(0x30 | ((will.qos as u8) << 1) | u8::from(will.retain));
    b.put_u16(if will.qos == QoS::AtMostOnce { 0 } else { 1 });
    b.put_u16(will.topic.len() as u16);
    b.extend_from_slice(&will.topic);
    b.extend_from_slice(&will.message);
    Publish::deserialize(Bytes::from(b))
}
