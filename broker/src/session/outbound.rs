//! Outbound: router notifications to the client (receive ACL, the
//! client's Maximum Packet Size), and acknowledgements in the order the
//! router and the client need them.
//!
//! QoS 2 towards a subscriber is the router's exchange carried through: its
//! PUBLISH goes out, the client's PUBREC goes to the router in delivery
//! order, the router's PUBREL goes out, the client's PUBCOMP goes back in
//! order. A QoS 2 delivery that never reaches the client (receive ACL,
//! too large) is completed towards the router by the session itself.

use bytes::BytesMut;
use gatehouse_acl::{Action, Subject};
use rumqttd::Notification;
use rumqttd::protocol::{
    Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, Publish,
    SubscribeReasonCode,
};

use super::{End, Session, reason_byte};
use crate::presence::DisconnectReason;
use crate::telemetry::{Release, withheld_reason};
use crate::wire;

/// A delivery of the router's waiting for the client's acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InFlight {
    /// The router's packet id (the client sees the same).
    pub(crate) pkid: u16,
    /// 1: PUBACK expected; 2: PUBREC expected.
    pub(crate) qos: u8,
    /// The client acknowledged (or the message never went out).
    pub(crate) done: bool,
}

/// The MQTT 5 PUBREC reason for a PUBACK reason (the same code values).
pub(super) fn pubrec_reason(reason: PubAckReason) -> PubRecReason {
    match reason {
        PubAckReason::Success => PubRecReason::Success,
        PubAckReason::NoMatchingSubscribers => PubRecReason::NoMatchingSubscribers,
        PubAckReason::UnspecifiedError => PubRecReason::UnspecifiedError,
        PubAckReason::ImplementationSpecificError => PubRecReason::ImplementationSpecificError,
        PubAckReason::NotAuthorized => PubRecReason::NotAuthorized,
        PubAckReason::TopicNameInvalid => PubRecReason::TopicNameInvalid,
        PubAckReason::PacketIdentifierInUse => PubRecReason::PacketIdentifierInUse,
        PubAckReason::QuotaExceeded => PubRecReason::QuotaExceeded,
        PubAckReason::PayloadFormatInvalid => PubRecReason::PayloadFormatInvalid,
    }
}

impl Session {
    /// Answers a PUBLISH of the client: PUBACK for QoS 1, PUBREC for QoS 2.
    /// A QoS 2 PUBREC with an error code ends that exchange.
    pub(super) fn write_publish_ack(&mut self, pkid: u16, qos: u8, reason: PubAckReason) {
        if qos == 2 {
            if reason != PubAckReason::Success {
                self.conn.shared.book.qos2_released(&self.client_id, pkid);
            }
            let reason = pubrec_reason(reason);
            self.write(Packet::PubRec(PubRec { pkid, reason }, None));
        } else {
            self.write(Packet::PubAck(PubAck { pkid, reason }, None));
        }
    }

    /// Writes the held acknowledgements that are decided, in order; one
    /// whose message ingest could not keep is withheld (the client
    /// publishes it again after reconnecting), counted and logged.
    pub(super) fn release_held_acks(&mut self) {
        while let Some(release) = self.held_acks.pop() {
            match release {
                Release::Send(pkid, qos, reason) => self.write_publish_ack(pkid, qos, reason),
                Release::Withhold(pkid, qos, e) => {
                    if qos == 2 {
                        // Not kept: its retransmission is a new message.
                        self.conn.shared.book.qos2_released(&self.client_id, pkid);
                    }
                    self.withheld += 1;
                    self.shared()
                        .telemetry
                        .withheld
                        .with_label_values(&[withheld_reason(e)])
                        .inc();
                    if self.withheld == 1 {
                        tracing::warn!(client_id = ?self.client_id, pkid, error = %e, "telemetry not stored: PUBACK withheld, the client will publish it again after reconnecting (gatehouse_puback_withheld_total counts every case; see ingest.when_full / spool_max_bytes)");
                    } else {
                        tracing::debug!(client_id = ?self.client_id, pkid, error = %e, withheld = self.withheld, "telemetry not stored: PUBACK withheld");
                    }
                }
            }
        }
    }

    /// Hands the router every ack it can take in order (it refuses acks out
    /// of order): PUBACK or PUBREC for deliveries, PUBCOMP for releases.
    pub(super) fn release_acks(&mut self) {
        while let Some(&InFlight {
            pkid,
            qos,
            done: true,
        }) = self.outgoing_acks.front()
        {
            self.outgoing_acks.pop_front();
            self.to_router.push(if qos == 2 {
                Packet::PubRec(
                    PubRec {
                        pkid,
                        reason: PubRecReason::Success,
                    },
                    None,
                )
            } else {
                Packet::PubAck(
                    PubAck {
                        pkid,
                        reason: PubAckReason::Success,
                    },
                    None,
                )
            });
        }
        while let Some(&(pkid, true)) = self.outgoing_comps.front() {
            self.outgoing_comps.pop_front();
            self.to_router.push(Packet::PubComp(
                PubComp {
                    pkid,
                    reason: PubCompReason::Success,
                },
                None,
            ));
        }
    }

    /// A delivery that will not reach the client (or whose exchange the
    /// client ended): acked towards the router in its turn, and for QoS 2
    /// the router's PUBREL is answered here.
    fn complete_locally(&mut self, pkid: u16, qos: u8) {
        self.outgoing_acks.push_back(InFlight {
            pkid,
            qos,
            done: true,
        });
        if qos == 2 {
            self.release_locally.insert(pkid);
        }
    }

    /// The client acknowledged a delivery (`qos` 1: PUBACK, 2: PUBREC);
    /// `ended` for a PUBREC with an error code, after which no PUBREL goes
    /// out.
    pub(super) fn delivery_acked(&mut self, pkid: u16, qos: u8, ended: bool) {
        let found = self
            .outgoing_acks
            .iter_mut()
            .find(|a| a.pkid == pkid && a.qos == qos && !a.done);
        match found {
            Some(entry) => {
                entry.done = true;
                if ended {
                    self.release_locally.insert(pkid);
                }
            }
            None => {
                tracing::debug!(client_id = ?self.client_id, pkid, qos, "acknowledgement for no message in flight; ignored");
            }
        }
        self.release_acks();
    }

    /// The client's PUBCOMP for a PUBREL it was sent.
    pub(super) fn release_completed(&mut self, pkid: u16) {
        match self
            .outgoing_comps
            .iter_mut()
            .find(|(p, done)| *p == pkid && !done)
        {
            Some(entry) => entry.1 = true,
            None => {
                tracing::debug!(client_id = ?self.client_id, pkid, "PUBCOMP for no PUBREL in flight; ignored");
            }
        }
        self.release_acks();
    }

    pub(super) async fn notification(&mut self, notification: Notification) -> Result<(), End> {
        if let Notification::Unschedule = notification {
            // As rumqttd's own remote link: tell the router we can take more.
            return self.link_rx.wake().await.map_err(|_| End {
                router_gone: true,
                ..End::new(DisconnectReason::TakenOver, Some(0x8E), false)
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
            Some(Packet::PubAck(ack, props)) => {
                // The router took a QoS 1 or 2 PUBLISH of this client (QoS 2
                // goes to the router as QoS 1: the exchange with the client
                // is the session's).
                if !(self.shared().telemetry.durable()
                    && self.held_acks.router_acked(ack.pkid, ack.reason))
                {
                    if self.qos2_routing.remove(&ack.pkid) {
                        self.write_publish_ack(ack.pkid, 2, ack.reason);
                    } else {
                        self.write(Packet::PubAck(ack, props));
                    }
                }
                self.release_held_acks();
            }
            Some(Packet::PubRel(rel, props)) => {
                // The router releases a QoS 2 delivery the client PUBRECed.
                if self.release_locally.remove(&rel.pkid) {
                    self.outgoing_comps.push_back((rel.pkid, true));
                    self.release_acks();
                } else {
                    self.outgoing_comps.push_back((rel.pkid, false));
                    self.write(Packet::PubRel(rel, props));
                }
            }
            Some(Packet::UnsubAck(..))
            | Some(Packet::PingResp(..))
            | Some(Packet::ConnAck(..))
            | None => {}
            Some(Packet::Disconnect(d, _)) => {
                // The router dropped the session itself.
                return Err(End {
                    router_gone: true,
                    ..End::new(
                        DisconnectReason::ProtocolError,
                        Some(reason_byte(d.reason_code)),
                        true,
                    )
                });
            }
            Some(other) => self.write(other),
        }
        Ok(())
    }

    /// A message the router routes to this client: receive rule, then out.
    fn deliver(&mut self, publish: Publish, props: Option<rumqttd::protocol::PublishProperties>) {
        let shared = self.conn.shared.clone();
        let subject = Subject::new(self.identity.kind, &self.identity.cn, &self.client_id);
        let decision = shared.policy.load().decide(
            &shared.revocation,
            &subject,
            &self.identity.serial,
            Action::Receive,
            &publish.topic,
        );
        let start = self.conn.wbuf.len();
        if decision.is_allowed() {
            self.write(Packet::Publish(publish, props));
            let frame = &self.conn.wbuf[start..];
            let too_big = self.client_max_packet.is_some_and(|max| frame.len() > max);
            if let Some((qos, pkid)) = wire::publish_qos_pkid(frame) {
                if too_big {
                    self.conn.wbuf.truncate(start);
                }
                if qos > 0 && too_big {
                    self.complete_locally(pkid, qos);
                } else if qos > 0 {
                    self.outgoing_acks.push_back(InFlight {
                        pkid,
                        qos,
                        done: false,
                    });
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
        tracing::warn!(client_id = ?self.client_id, "{}", shared.policy.load().acl.explain_decision(&subject, Action::Receive, &topic, decision));
        let mut scratch = BytesMut::new();
        if self
            .codec
            .write(Packet::Publish(publish, None), &mut scratch)
            .is_ok()
        {
            if let Some((qos, pkid)) = wire::publish_qos_pkid(&scratch) {
                if qos > 0 {
                    self.complete_locally(pkid, qos);
                }
            }
        }
        self.release_acks();
    }
}
