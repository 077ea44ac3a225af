//! Outbound: router notifications to the client (receive ACL, the
//! client's Maximum Packet Size), and acknowledgements in the order the
//! router and the client need them.

use bytes::BytesMut;
use gatehouse_acl::{Action, Subject};
use rumqttd::Notification;
use rumqttd::protocol::{Packet, PubAck, PubAckReason, Publish, SubscribeReasonCode};

use super::{End, Session, reason_byte};
use crate::presence::DisconnectReason;
use crate::telemetry::{Release, withheld_reason};
use crate::wire;

impl Session {
    /// Writes the held PUBACKs that are decided, in order; one whose message
    /// ingest could not keep is withheld (the client publishes it again
    /// after reconnecting), counted and logged.
    pub(super) fn release_held_acks(&mut self) {
        while let Some(release) = self.held_acks.pop() {
            match release {
                Release::Send(pkid, reason) => {
                    self.write(Packet::PubAck(PubAck { pkid, reason }, None));
                }
                Release::Withhold(pkid, e) => {
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

    /// Hands the router every ack it can take in order.
    pub(super) fn release_acks(&mut self) {
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
                // The router took a QoS 1 PUBLISH of this client.
                if !(self.shared().telemetry.durable()
                    && self.held_acks.router_acked(ack.pkid, ack.reason))
                {
                    self.write(Packet::PubAck(ack, props));
                }
                self.release_held_acks();
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
        tracing::warn!(client_id = ?self.client_id, "{}", shared.policy.load().acl.explain_decision(&subject, Action::Receive, &topic, decision));
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
}
