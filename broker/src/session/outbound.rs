//! Outbound: router notifications to the client (receive ACL, the
//! client's Maximum Packet Size), and acknowledgements in the order the
//! router and the client need them.
//!
//! QoS 2 towards a subscriber is the router's exchange carried through: its
//! PUBLISH goes out, the client's PUBREC goes to the router in delivery
//! order, the router's PUBREL goes out, the client's PUBCOMP goes back in
//! order. A QoS 2 delivery that never reaches the client (receive ACL,
//! too large) is completed towards the router by the session itself.

use gatehouse_acl::{Action, Subject};
use rumqttd::Notification;
use rumqttd::protocol::{
    Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, Publish,
    PublishProperties, SubscribeReasonCode,
};

use super::delivery::{self, Verdict};
use super::{End, Session, reason_byte};
use crate::presence::DisconnectReason;
use crate::telemetry::{Release, withheld_reason};
use crate::wire;

/// A delivery of the router's waiting for the client's acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InFlight {
    /// The router's packet id (the client sees the same).
    pub(crate) pkid: u16,
    /// QoS the router sent it at: 1 is acked with PUBACK, 2 with PUBREC.
    pub(crate) router_qos: u8,
    /// QoS the client got it at (lower when the message was published at a
    /// lower QoS; 0 when it never reached the client).
    pub(crate) client_qos: u8,
    /// The client acknowledged (or the message never went out).
    pub(crate) done: bool,
    /// Written to the client (not held back by its Receive Maximum).
    pub(crate) sent: bool,
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
            router_qos,
            client_qos,
            done: true,
            ..
        }) = self.outgoing_acks.front()
        {
            self.outgoing_acks.pop_front();
            if router_qos == 2 {
                if client_qos != 2 {
                    // The client has no QoS 2 exchange to release.
                    self.release_locally.insert(pkid);
                }
                self.to_router.push(Packet::PubRec(
                    PubRec {
                        pkid,
                        reason: PubRecReason::Success,
                    },
                    None,
                ));
            } else {
                self.to_router.push(Packet::PubAck(
                    PubAck {
                        pkid,
                        reason: PubAckReason::Success,
                    },
                    None,
                ));
            }
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

    /// A delivery that did not reach the client, acked towards the router
    /// in its turn (for QoS 2 the router's PUBREL is answered here).
    fn complete_locally(&mut self, pkid: u16, router_qos: u8) {
        self.outgoing_acks.push_back(InFlight {
            pkid,
            router_qos,
            client_qos: 0,
            done: true,
            sent: false,
        });
    }

    /// A QoS 1/2 PUBLISH towards the client is no longer in flight (PUBACK,
    /// PUBCOMP, or a PUBREC with an error code): room under the client's
    /// Receive Maximum for the next held one [MQTT-3.3.4-9].
    fn delivery_finished(&mut self) {
        self.unacked_out = self.unacked_out.saturating_sub(1);
        while self.unacked_out < self.client_receive_max {
            let Some(frame) = self.held_out.pop_front() else {
                break;
            };
            self.conn.wbuf.extend_from_slice(&frame);
            self.unacked_out += 1;
            if let Some(entry) = self.outgoing_acks.iter_mut().find(|a| !a.sent && !a.done) {
                entry.sent = true;
            }
        }
    }

    /// The client acknowledged a delivery (`client_qos` 1: PUBACK, 2:
    /// PUBREC); `ended` for a PUBREC with an error code, after which no
    /// PUBREL goes out.
    pub(super) fn delivery_acked(&mut self, pkid: u16, client_qos: u8, ended: bool) {
        let found = self
            .outgoing_acks
            .iter_mut()
            .find(|a| a.pkid == pkid && a.client_qos == client_qos && a.sent && !a.done);
        match found {
            Some(entry) => {
                entry.done = true;
                if ended {
                    self.release_locally.insert(pkid);
                }
                // QoS 2 stays in flight until its PUBCOMP.
                if client_qos == 1 || ended {
                    self.delivery_finished();
                }
            }
            None => {
                tracing::debug!(client_id = ?self.client_id, pkid, client_qos, "acknowledgement for no message in flight; ignored");
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
            Some(entry) => {
                entry.1 = true;
                self.delivery_finished();
            }
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
                ..End::new(DisconnectReason::TakenOver, Some(0x8E), true)
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

    /// A message the router routes to this client: receive rule, the
    /// subscription's options and the message's own QoS and RETAIN
    /// (`delivery`), the client's Maximum Packet Size, then out.
    fn deliver(&mut self, mut publish: Publish, props: Option<PublishProperties>) {
        let shared = self.conn.shared.clone();
        if !publish.retain {
            // Taken from the router: room in this subscriber's queue. (A
            // retained message sent for a SUBSCRIBE was never counted.)
            shared.flow.release(
                &self.flow_queue,
                publish.topic.len() + publish.payload.len(),
            );
        }
        let subject = Subject::new(self.identity.kind, &self.identity.cn, &self.client_id);
        let decision = shared.policy.load().decide(
            &shared.revocation,
            &subject,
            &self.identity.serial,
            Action::Receive,
            &publish.topic,
        );
        let origin = delivery::unstamp(&mut publish.payload);
        let topic = publish.topic.clone();
        let replay = publish.retain;
        let start = self.conn.wbuf.len();
        self.write(Packet::Publish(publish, props));
        let Some((router_qos, pkid)) = wire::publish_qos_pkid(&self.conn.wbuf[start..]) else {
            return;
        };
        let verdict = if decision.is_allowed() {
            delivery::decide(
                &topic,
                router_qos,
                replay,
                origin.as_ref(),
                &self.client_id,
                &self.subscriptions,
            )
        } else {
            self.deny_receive.inc();
            self.count_drop("not_authorized", router_qos);
            let topic = String::from_utf8_lossy(&topic);
            let subject = Subject::new(self.identity.kind, &self.identity.cn, &self.client_id);
            tracing::warn!(client_id = ?self.client_id, "{}", shared.policy.load().acl.explain_decision(&subject, Action::Receive, &topic, decision));
            Verdict::Drop
        };
        let Verdict::Deliver { qos, retain } = verdict else {
            self.conn.wbuf.truncate(start);
            if router_qos > 0 {
                self.complete_locally(pkid, router_qos);
            }
            self.release_acks();
            return;
        };
        if (qos, retain) != (router_qos, replay) {
            wire::rewrite_publish(&mut self.conn.wbuf, start, qos, retain);
        }
        let too_big = self
            .client_max_packet
            .is_some_and(|max| self.conn.wbuf.len() - start > max);
        if too_big {
            self.conn.wbuf.truncate(start);
            let client_id = self.client_id.clone();
            self.dropped("packet_too_large", qos, &client_id);
        } else {
            shared.metrics.messages_out.inc();
        }
        if router_qos > 0 && (too_big || qos == 0) {
            self.complete_locally(pkid, router_qos);
        } else if router_qos > 0 {
            // The client's Receive Maximum [MQTT-3.3.4-9]: beyond it (or
            // behind one already held) the frame waits. At most the
            // router's in-flight window (100) is ever held.
            let sent = self.held_out.is_empty() && self.unacked_out < self.client_receive_max;
            if sent {
                self.unacked_out += 1;
            } else {
                let frame = self.conn.wbuf.split_off(start).freeze();
                self.held_out.push_back(frame);
            }
            self.outgoing_acks.push_back(InFlight {
                pkid,
                router_qos,
                client_qos: qos,
                done: false,
                sent,
            });
        }
        self.release_acks();
    }
}
