//! Admission of one connection: TLS handshake under a deadline, identity
//! and revocation, the CONNECT packet (client-id policy, will ACL, protocol
//! version), the router link and the CONNACK. What follows is
//! [`crate::session`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use gatehouse_acl::{Action, Subject};
use gatehouse_auth::{Identity, Kind};
use gatehouse_gate::{CertificateAccepted, ConnectRefusal, Handshake, Refused, Stage, Why};
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, Connect, ConnectReturnCode, LastWill, LastWillProperties, Packet,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use crate::afterlife::{Admitting, Lifetime};
use crate::quota::{Quota, TopicWindow};
use crate::registry::{Control, Registration};
use crate::server::Shared;
use crate::session::Session;
use crate::validate::{self, Violation};
use crate::websocket::Io;
use crate::wire::{self, Codec, ConnectPeek, Version};

/// Serves one accepted TCP connection until it closes; `websocket` for the
/// MQTT-over-WebSocket listener (the upgrade follows the certificate checks).
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
    websocket: bool,
) {
    // Two steps, the first boxed: the admission's state (handshake,
    // CONNECT, link: ~13 KiB of future) is freed once the session runs, so
    // the connection task holds only the session loop's.
    let Some((session, control, registration)) =
        Box::pin(accept(tcp, peer, shared, websocket)).await
    else {
        return;
    };
    session.run(control).await;
    drop(registration);
}

/// TLS handshake, certificate checks, CONNECT and CONNACK: the admitted
/// session, its control channel and its registration, or `None` (refused,
/// closed; already logged and counted).
async fn accept(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
    websocket: bool,
) -> Option<(Box<Session>, mpsc::Receiver<Control>, Registration)> {
    let _ = tcp.set_nodelay(true);
    let started = Instant::now();
    let deadline = started + shared.config.tls.handshake_timeout;
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.current());
    let io = match timeout_at(deadline, acceptor.accept(tcp)).await {
        Err(_) => {
            return refused(
                &shared,
                peer,
                Why::Certificate {
                    outcome: Handshake::Timeout,
                    detail: &"no TLS handshake in time",
                },
            );
        }
        Ok(Err(e)) => {
            let outcome = crate::tls::handshake_of_io_error(&e);
            return refused(
                &shared,
                peer,
                Why::Certificate {
                    outcome,
                    detail: &e,
                },
            );
        }
        Ok(Ok(io)) => io,
    };
    let Some(leaf) = io.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        return refused(
            &shared,
            peer,
            Why::Certificate {
                outcome: Handshake::NoCert,
                detail: &"no client certificate",
            },
        );
    };
    // The gate's order: certificate, revocation, (at CONNECT) client id.
    let policy = shared.policy.load_full();
    let identity = match policy.identify(leaf.as_ref(), time::OffsetDateTime::now_utc()) {
        Ok(id) => id,
        Err(e) => return refused(&shared, peer, Why::Admission(&e)),
    };
    // Register before checking, so a revocation published in between still
    // reaches this session.
    let (registration, control) = shared.registry.register(identity.serial);
    if let Err(e) = policy.check_revocation(&shared.revocation, &identity) {
        drop(registration);
        let detail = format!("{e} (CN {:?})", identity.cn);
        return refused(
            &shared,
            peer,
            Why::Certificate {
                outcome: e.handshake(),
                detail: &detail,
            },
        );
    }
    drop(policy);
    let io = if websocket {
        let upgrade = crate::websocket::accept(io, shared.config.mqtt.max_packet_size);
        let upgraded = match timeout_at(deadline, upgrade).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("no upgrade within tls.handshake_timeout".to_owned()),
        };
        match upgraded {
            Ok(ws) => Io::Ws(Box::new(ws)),
            Err(error) => {
                shared
                    .metrics
                    .protocol_errors
                    .with_label_values(&["websocket_upgrade"])
                    .inc();
                tracing::info!(%peer, cn = ?identity.cn, error, "WebSocket upgrade refused or failed (MQTT over WebSocket needs Sec-WebSocket-Protocol: mqtt)");
                return None;
            }
        }
    } else {
        Io::Tls(io)
    };
    shared.metrics.gate.emit(CertificateAccepted);
    shared
        .metrics
        .handshake_seconds
        .observe(started.elapsed().as_secs_f64());

    let mut conn = Conn {
        io,
        rbuf: BytesMut::with_capacity(RBUF_SIZE),
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
            tracing::info!(%peer, cn = ?identity.cn, reason, "connection closed before a valid CONNECT");
            conn.close().await;
            return None;
        }
    };
    let session = conn.admit(identity, connect).await?;
    Some((session, control, registration))
}

fn refused<T>(shared: &Shared, peer: std::net::SocketAddr, why: Why<'_>) -> Option<T> {
    shared.metrics.gate.emit(Refused {
        client_id: None,
        peer: Some(peer),
        stage: Stage::Handshake,
        why,
    });
    None
}

/// A TLS connection before and during its session.
pub(crate) struct Conn {
    pub(crate) io: Io,
    pub(crate) rbuf: BytesMut,
    pub(crate) wbuf: BytesMut,
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: std::net::SocketAddr,
}

/// Read buffer taken when bytes arrive on a connection that holds none.
const RBUF_SIZE: usize = 4096;

/// A read buffer grown past this by a large packet is given back once
/// empty (WebSocket connections, which keep theirs).
const RBUF_KEEP: usize = 64 * 1024;

struct ConnectPacket {
    codec: Codec,
    connect: Connect,
    will: Option<LastWill>,
    will_props: Option<LastWillProperties>,
    props: Option<rumqttd::protocol::ConnectProperties>,
}

impl Conn {
    /// Reads what the client sent. A TLS connection that holds no read
    /// buffer (given back by `release_rbuf`, or used up to its end) and has
    /// no decrypted bytes waiting in TLS waits for its socket to be
    /// readable before it takes one, so an idle session holds none.
    pub(crate) async fn read(&mut self) -> std::io::Result<usize> {
        if self.rbuf.capacity() == 0 {
            if let Io::Tls(s) = &self.io {
                // TLS hands out one record per read: what it holds already
                // was read from the socket, whose readiness says nothing
                // about it.
                if s.get_ref().1.wants_read() {
                    s.get_ref().0.readable().await?;
                }
            }
            self.rbuf.reserve(RBUF_SIZE);
        }
        self.io.read_buf(&mut self.rbuf).await
    }

    /// Gives back an empty read buffer of a TLS connection (`read` takes a
    /// new one when bytes arrive). A WebSocket's frames are buffered above
    /// its socket, so it keeps its buffer, given back only when a large
    /// packet grew it past `RBUF_KEEP`.
    pub(crate) fn release_rbuf(&mut self) {
        if !self.rbuf.is_empty() {
            return;
        }
        match self.io {
            Io::Tls(_) => self.rbuf = BytesMut::new(),
            Io::Ws(_) => {
                if self.rbuf.capacity() > RBUF_KEEP {
                    self.rbuf = BytesMut::with_capacity(RBUF_SIZE);
                }
            }
        }
    }

    async fn read_more(&mut self, deadline: Instant) -> Result<(), &'static str> {
        match timeout_at(deadline, self.read()).await {
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
        let frame_len = loop {
            match validate::fixed_header(version, &self.rbuf, max, true) {
                Ok(Some(h)) if self.rbuf.len() >= h.frame_len => break h.frame_len,
                Ok(_) => self.read_more(deadline).await?,
                Err(v) => return Err(self.refuse_invalid_connect(version, v).await),
            }
        };
        if let Err(v) = validate::frame(version, &self.rbuf[..frame_len]) {
            return Err(self.refuse_invalid_connect(version, v).await);
        }
        // Only the CONNECT frame: what follows it stays buffered for the
        // session (a client may send before the CONNACK).
        let mut frame = self.rbuf.split_to(frame_len);
        match codec.read(&mut frame, max) {
            Ok(Packet::Connect(connect, props, will, will_props, _login)) if frame.is_empty() => {
                Ok(ConnectPacket {
                    codec,
                    connect,
                    will,
                    will_props,
                    props,
                })
            }
            Ok(_) => Err("not_connect"),
            Err(_) => Err("malformed"),
        }
    }

    /// A CONNECT that breaks the protocol: MQTT 5 gets a CONNACK with the
    /// reason (0x81 malformed, 0x82 protocol error, 0x95 too large), 3.1.1
    /// only the close the spec asks for. Returns the metric label.
    async fn refuse_invalid_connect(&mut self, version: Version, v: Violation) -> &'static str {
        if version == Version::V5 {
            let code = match v.code {
                0x81 | 0x82 | 0x95 => v.code,
                _ => 0x82,
            };
            self.wbuf.extend_from_slice(&[0x20, 0x03, 0x00, code, 0x00]);
            let _ = self.flush().await;
        }
        v.label
    }

    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
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
    pub(crate) async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            let _ = self.flush().await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }

    /// Answers CONNACK `v5`/`v4` (by the client's version) and closes;
    /// the refusal is counted and logged once, by the gate's event.
    async fn refuse_connect(
        &mut self,
        codec: &Codec,
        client_id: &str,
        (v5, v4): (ConnectReturnCode, ConnectReturnCode),
        why: Why<'_>,
    ) {
        self.shared.metrics.gate.emit(Refused {
            client_id: Some(client_id),
            peer: Some(self.peer),
            stage: Stage::Connect,
            why,
        });
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
    async fn admit(mut self, identity: Identity, cp: ConnectPacket) -> Option<Box<Session>> {
        let ConnectPacket {
            codec,
            mut connect,
            will,
            will_props,
            props,
        } = cp;
        let shared = self.shared.clone();
        let v5 = codec.version() == Version::V5;
        // An operational client that sends no client id gets its CN (v5:
        // Assigned Client Identifier [MQTT-3.1.3-7]; 3.1.1 only with a
        // clean session [MQTT-3.1.3-8]). A bootstrap client must name its
        // MAC, so an empty id is refused below like any other wrong one.
        let assigned = connect.client_id.is_empty()
            && identity.kind == Kind::Operational
            && (v5 || connect.clean_session);
        if assigned {
            connect.client_id = identity.cn.clone();
        }
        let client_id = connect.client_id.clone();
        if let Err(e) = shared.policy.load().check_client_id(&identity, &client_id) {
            let code = ConnectReturnCode::ClientIdentifierNotValid;
            self.refuse_connect(&codec, &client_id, (code, code), Why::Admission(&e))
                .await;
            return None;
        }
        let subject = Subject::new(identity.kind, &identity.cn, &client_id);
        if let Some(w) = will.as_ref() {
            let topic = String::from_utf8_lossy(&w.topic).into_owned();
            let decision = shared.policy.load().decide(
                &shared.revocation,
                &subject,
                &identity.serial,
                Action::Publish,
                &w.topic,
            );
            if !decision.is_allowed() {
                shared
                    .metrics
                    .gate
                    .acl_denials(identity.kind, Action::Publish)
                    .inc();
                let explained = format!(
                    "will topic: {}",
                    shared.policy.load().acl.explain_decision(
                        &subject,
                        Action::Publish,
                        &topic,
                        decision
                    )
                );
                let code = ConnectReturnCode::NotAuthorized;
                self.refuse_connect(
                    &codec,
                    &client_id,
                    (code, code),
                    Why::Connect {
                        reason: ConnectRefusal::WillAcl,
                        detail: &explained,
                    },
                )
                .await;
                return None;
            }
        }
        if props
            .as_ref()
            .and_then(|p| p.authentication_method.as_ref())
            .is_some()
        {
            self.refuse_connect(
                &codec,
                &client_id,
                (
                    ConnectReturnCode::BadAuthenticationMethod,
                    ConnectReturnCode::NotAuthorized,
                ),
                Why::Connect {
                    reason: ConnectRefusal::AuthMethod,
                    detail: &"MQTT 5 enhanced authentication is not supported (the client certificate is the credential)",
                },
            )
            .await;
            return None;
        }
        let client_receive_max = props
            .as_ref()
            .and_then(|p| p.receive_maximum)
            .map_or(usize::MAX, usize::from);
        let client_max_packet = props
            .as_ref()
            .and_then(|p| p.max_packet_size)
            .map(|m| m as usize);
        let max_keepalive = shared.config.mqtt.max_keepalive.as_secs() as u16;
        let asked = connect.keep_alive;
        if asked == 0 || asked > max_keepalive {
            connect.keep_alive = max_keepalive;
        }
        let max_expiry = shared.config.mqtt.max_session_expiry;
        let asked_expiry = props.as_ref().and_then(|p| p.session_expiry_interval);
        let mut lifetime = Lifetime::new(v5, connect.clean_session, asked_expiry, max_expiry);
        // A delayed will or an expiry of this client id's old session does
        // not happen now [MQTT-3.1.3-9]. A session that is to be kept
        // counts against its kind's limit.
        let limit = match identity.kind {
            Kind::Operational => shared.config.mqtt.max_persistent_sessions_operational,
            Kind::Bootstrap => shared.config.mqtt.max_persistent_sessions_bootstrap,
        };
        let keep = (!lifetime.expiry.is_zero()).then_some((identity.kind, limit));
        let admitting = match Admitting::new(&shared, &client_id, lifetime.clean_start, keep) {
            Some(a) => a,
            None => {
                shared
                    .metrics
                    .quota_exceeded
                    .with_label_values(&[Quota::PersistentSessions.as_str()])
                    .inc();
                if !v5 {
                    let code = ConnectReturnCode::ServiceUnavailable;
                    self.refuse_connect(
                        &codec,
                        &client_id,
                        (code, code),
                        Why::Connect {
                            reason: ConnectRefusal::PersistentSessions,
                            detail: &format!(
                                "a persistent session (clean session 0) past the limit of {limit} for {} certificates (mqtt.max_persistent_sessions_{})",
                                identity.kind.as_str(),
                                identity.kind.as_str()
                            ),
                        },
                    )
                    .await;
                    return None;
                }
                // MQTT 5: the session ends with the connection, and the
                // CONNACK says so (Session Expiry 0).
                tracing::warn!(
                    client_id,
                    kind = identity.kind.as_str(),
                    limit,
                    "persistent session refused: its kind is at mqtt.max_persistent_sessions_{}; the session ends with the connection (CONNACK Session Expiry 0)",
                    identity.kind.as_str()
                );
                lifetime.expiry = Duration::ZERO;
                Admitting::new(&shared, &client_id, lifetime.clean_start, None)?
            }
        };
        if lifetime.purge_first() {
            // Clean Start with an expiry: the router would resume the old
            // session if linked to keep this one.
            crate::afterlife::purge(&shared, &client_id).await;
        }
        let router = shared.clone();
        let id = client_id.clone();
        let clean = lifetime.link_clean();
        let linked = tokio::task::spawn_blocking(move || router.router.link(&id, clean)).await;
        let failure = match linked {
            Ok(Ok(l)) => Ok(l),
            Ok(Err(e)) => Err(format!("router refused the session: {e}")),
            Err(e) => Err(format!("router link task failed: {e}")),
        };
        shared.health.router_refusing(failure.is_err());
        let (link_tx, link_rx, notification) = match failure {
            Ok(l) => l,
            Err(why) => {
                self.refuse_connect(
                    &codec,
                    &client_id,
                    (
                        ConnectReturnCode::ServerBusy,
                        ConnectReturnCode::ServiceUnavailable,
                    ),
                    Why::Connect {
                        reason: ConnectRefusal::Router,
                        detail: &why,
                    },
                )
                .await;
                return None;
            }
        };
        admitting.admitted();
        let session_present = match Option::<Packet>::from(notification) {
            Some(Packet::ConnAck(ack, _)) => ack.session_present,
            _ => false,
        };
        let props = v5.then(|| ConnAckProperties {
            // Maximum QoS absent: QoS 2 is supported.
            receive_max: Some(shared.config.mqtt.receive_maximum as u16),
            topic_alias_max: Some(shared.config.mqtt.topic_alias_maximum as u16),
            retain_available: Some(1),
            max_packet_size: Some(shared.config.mqtt.max_packet_size as u32),
            wildcard_subscription_available: Some(1),
            shared_subscription_available: Some(u8::from(
                shared.policy.load().acl.shared_subscriptions(identity.kind),
            )),
            subscription_identifiers_available: Some(1),
            server_keep_alive: (connect.keep_alive != asked).then_some(connect.keep_alive),
            // Capped by mqtt.max_session_expiry: the client is told.
            session_expiry_interval: asked_expiry
                .filter(|&a| u64::from(a) > lifetime.expiry.as_secs())
                .map(|_| lifetime.expiry.as_secs() as u32),
            assigned_client_identifier: assigned.then(|| client_id.clone()),
            ..Default::default()
        });
        let ack = ConnAck {
            session_present,
            code: ConnectReturnCode::Success,
        };
        let _ = codec.write(Packet::ConnAck(ack, props), &mut self.wbuf);
        let kind = identity.kind;
        let metrics = &shared.metrics;
        let flow_queue = crate::flow::Flow::queue(&client_id);
        let session = Box::new(Session {
            deny_publish: metrics.gate.acl_denials(kind, Action::Publish),
            deny_subscribe: metrics.gate.acl_denials(kind, Action::Subscribe),
            deny_receive: metrics.gate.acl_denials(kind, Action::Receive),
            conn: self,
            codec,
            identity,
            client_id,
            keepalive: Duration::from_secs(u64::from(connect.keep_alive)).mul_f32(1.5),
            will,
            will_props,
            link_tx,
            link_rx,
            to_router: Vec::new(),
            outgoing_acks: VecDeque::new(),
            outgoing_comps: VecDeque::new(),
            release_locally: HashSet::new(),
            qos2_routing: HashSet::new(),
            receive_maximum: shared.config.mqtt.receive_maximum,
            client_receive_max,
            unacked_out: 0,
            held_out: VecDeque::new(),
            topic_aliases: HashMap::new(),
            subscriptions: Vec::new(),
            pending_subacks: HashMap::new(),
            held_acks: Default::default(),
            withheld: 0,
            violations: 0,
            client_max_packet,
            lifetime,
            topics: TopicWindow::new(),
            partial_held: 0,
            partial_since: None,
            quota_logged: Default::default(),
            flow_queue,
            flow_matches: Default::default(),
            waiting: None,
            drops: Default::default(),
            router_released: false,
            finished: false,
        });
        Some(session)
    }
}
