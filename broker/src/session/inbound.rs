//! Inbound: frames from the client, validated, decoded, checked (ACL,
//! quotas) and handed to ingest and the router.

use gatehouse_acl::{Action, Decision, Subject};
use gatehouse_ingest::{Ack, AckWaiter};
use rumqttd::protocol::{
    DisconnectReasonCode, Packet, PingResp, PubAck, PubAckReason, Publish, QoS, SubAck,
    SubscribeReasonCode, UnsubAck, UnsubAckReason,
};
use std::sync::atomic::Ordering;
use tokio::time::Instant;

use super::{End, Session, reason_byte};
use crate::presence::DisconnectReason;
use crate::quota::Quota;
use crate::telemetry::Telemetry;
use crate::validate::{self, Violation};
use crate::wire::{self, Version};

impl Session {
    /// Validates, decodes and handles every complete packet in the read
    /// buffer; returns how many there were. No byte reaches rumqttd's
    /// decoder before [`validate`] has accepted its whole frame.
    pub(super) async fn incoming(&mut self) -> Result<usize, End> {
        let max = self.shared().config.mqtt.max_packet_size;
        let version = self.codec.version();
        let mut packets = 0;
        loop {
            let header = match validate::fixed_header(version, &self.conn.rbuf, max, false) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(v) => return Err(self.violation(v)),
            };
            if self.conn.rbuf.len() < header.frame_len {
                // Room for the rest of the frame in one allocation.
                self.conn
                    .rbuf
                    .reserve(header.frame_len - self.conn.rbuf.len());
                break;
            }
            if let Err(v) = validate::frame(version, &self.conn.rbuf[..header.frame_len]) {
                return Err(self.violation(v));
            }
            // The decoder sees exactly one validated frame, never the
            // bytes behind it.
            let mut frame = self.conn.rbuf.split_to(header.frame_len);
            packets += 1;
            if header.kind == validate::Kind::Disconnect {
                // rumqttd cannot decode a v5 DISCONNECT that carries only a
                // reason code (remaining length 1); the reason is all we need.
                // Only reason 0x00 discards the will [MQTT-3.1.2-10].
                let reason = frame.get(header.header_len).copied().unwrap_or(0);
                return Err(End::new(
                    DisconnectReason::ClientDisconnect,
                    None,
                    reason != 0x00,
                ));
            }
            let (qos, pkid) = wire::publish_qos_pkid(&frame).unwrap_or((0, 0));
            if header.kind == validate::Kind::Publish {
                // DUP says whether *this hop* is a retransmission; it is not
                // forwarded [MQTT-3.3.1-3]. rumqttd keeps the flag it decoded
                // and hands it to every subscriber, so clear it here.
                frame[0] &= !0x08;
            }
            let packet = match self.codec.read(&mut frame, max) {
                Ok(p) if frame.is_empty() => p,
                other => {
                    // The validator accepted what rumqttd refuses: close
                    // all the same, and say so (a validator gap to fix).
                    let error = match other {
                        Ok(_) => "frame not fully consumed".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(client_id = ?self.client_id, error, "packet refused by the decoder after validation; closing the connection");
                    return Err(self.violation(Violation {
                        label: "decoder_refused",
                        code: 0x81,
                    }));
                }
            };
            self.packet(packet, qos, pkid).await?;
        }
        self.release_held_acks();
        self.send_to_router().await?;
        Ok(packets)
    }

    /// Closes for a broken packet: counted by reason, logged, v5 DISCONNECT
    /// with the spec's reason code; the will is published.
    pub(super) fn violation(&self, v: Violation) -> End {
        self.shared()
            .metrics
            .protocol_errors
            .with_label_values(&[v.label])
            .inc();
        tracing::warn!(client_id = ?self.client_id, reason = v.label, code = format_args!("0x{:02X}", v.code), "protocol error; closing the connection");
        End::new(DisconnectReason::ProtocolError, Some(v.code), true)
    }

    fn protocol_error(&self, what: &'static str, code: DisconnectReasonCode) -> End {
        self.violation(Violation {
            label: what,
            code: reason_byte(code),
        })
    }

    /// Counts a quota hit and logs it once per session and quota.
    fn over_quota(&self, quota: Quota) {
        self.shared()
            .metrics
            .quota_exceeded
            .with_label_values(&[quota.as_str()])
            .inc();
        let bit = 1u8 << (quota as u8);
        if self.quota_logged.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            tracing::warn!(client_id = ?self.client_id, quota = quota.as_str(), "client over its limit; refused (raise {} if this client is legitimate; every hit is counted in gatehouse_quota_exceeded_total)", quota.key());
        }
    }

    /// A quota hit that ends the session (MQTT 5: DISCONNECT 0x97).
    pub(super) fn over_quota_end(&mut self, quota: Quota) -> End {
        self.over_quota(quota);
        End::new(DisconnectReason::QuotaExceeded, Some(0x97), true)
    }

    /// A PUBLISH over a quota: MQTT 5 QoS 1 gets PUBACK 0x97 and the
    /// session goes on; anything else cannot be refused on its own (QoS 0
    /// has no answer, 3.1.1 PUBACK means success), so the session ends
    /// rather than lose the message silently.
    fn refuse_publish(&mut self, quota: Quota, qos: u8, pkid: u16) -> Result<(), End> {
        if qos == 1 && self.v5() {
            self.over_quota(quota);
            let reason = PubAckReason::QuotaExceeded;
            if self.shared().telemetry.durable() {
                self.held_acks.answered(pkid, reason);
            } else {
                self.write(Packet::PubAck(PubAck { pkid, reason }, None));
            }
            return Ok(());
        }
        Err(self.over_quota_end(quota))
    }

    async fn packet(&mut self, packet: Packet, qos: u8, pkid: u16) -> Result<(), End> {
        match packet {
            Packet::Publish(publish, props) => self.publish(publish, props, qos, pkid).await,
            Packet::Subscribe(mut subscribe, props) => {
                let shared = self.conn.shared.clone();
                let subject = Subject::new(self.identity.kind, &self.identity.cn, &self.client_id);
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                let mut allowed = Vec::with_capacity(subscribe.filters.len());
                for mut f in subscribe.filters.drain(..) {
                    let decision = shared.policy.load().decide(
                        &shared.revocation,
                        &subject,
                        &self.identity.serial,
                        Action::Subscribe,
                        f.path.as_bytes(),
                    );
                    if decision.is_allowed() && !shared.book.subscribe(&self.client_id, &f.path) {
                        self.over_quota(Quota::Subscriptions);
                        codes.push(Some(if self.v5() {
                            SubscribeReasonCode::QuotaExceeded
                        } else {
                            SubscribeReasonCode::Failure
                        }));
                    } else if decision.is_allowed() {
                        if f.qos == QoS::ExactlyOnce {
                            f.qos = QoS::AtLeastOnce;
                        }
                        codes.push(None);
                        allowed.push(f);
                    } else {
                        self.deny_subscribe.inc();
                        tracing::warn!(client_id = ?self.client_id, "{}", shared.policy.load().acl.explain_decision(&subject, Action::Subscribe, &f.path, decision));
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
                // answer here, once, and drop the router's acks. The book
                // holds this client's subscriptions as the router does, so
                // a v5 client learns which ones did not exist
                // [MQTT-3.11.3-2] (3.1.1's UNSUBACK carries no codes).
                let v5 = self.v5();
                let reasons = unsubscribe
                    .filters
                    .iter()
                    .map(|filter| {
                        let existed = self.conn.shared.book.unsubscribe(&self.client_id, filter);
                        if existed || !v5 {
                            UnsubAckReason::Success
                        } else {
                            UnsubAckReason::NoSubscriptionExisted
                        }
                    })
                    .collect();
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
                    tracing::debug!(client_id = ?self.client_id, pkid = ack.pkid, "PUBACK for no message in flight; ignored");
                }
                self.release_acks();
                Ok(())
            }
            Packet::PingReq(_) => {
                self.write(Packet::PingResp(PingResp));
                Ok(())
            }
            Packet::Disconnect(..) => {
                // Handled before decoding (see `incoming`).
                Err(End::new(DisconnectReason::ClientDisconnect, None, false))
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

    async fn publish(
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
        let decision: Decision = shared.policy.load().decide(
            &shared.revocation,
            &subject,
            &self.identity.serial,
            Action::Publish,
            &publish.topic,
        );
        if decision.is_allowed() {
            if !self.topics.admit(
                &publish.topic,
                Instant::now(),
                &shared.book,
                &self.client_id,
            ) {
                return self.refuse_publish(Quota::NewTopics, qos, pkid);
            }
            if publish.retain
                && !shared
                    .book
                    .retain(&self.client_id, &publish.topic, publish.payload.is_empty())
            {
                return self.refuse_publish(Quota::Retained, qos, pkid);
            }
            shared.metrics.messages_in.inc();
            let durable = self.ingest(&shared.telemetry, &publish, qos).await;
            if qos == 1 && shared.telemetry.durable() {
                self.held_acks.routed(pkid, durable);
            }
            self.to_router.push(Packet::Publish(publish, props));
            return Ok(());
        }
        self.deny_publish.inc();
        self.violations += 1;
        let topic = String::from_utf8_lossy(&publish.topic);
        tracing::warn!(
            client_id = ?self.client_id,
            violations = self.violations,
            "{}",
            shared.policy.load().acl.explain_decision(&subject, Action::Publish, &topic, decision)
        );
        if qos == 1 {
            let reason = if self.v5() {
                PubAckReason::NotAuthorized
            } else {
                PubAckReason::Success
            };
            if shared.telemetry.durable() {
                // Behind the PUBACKs still held for earlier PUBLISHes.
                self.held_acks.answered(pkid, reason);
            } else {
                self.write(Packet::PubAck(PubAck { pkid, reason }, None));
            }
        }
        if self.violations >= shared.config.mqtt.acl_violations_before_disconnect {
            tracing::warn!(client_id = ?self.client_id, violations = self.violations, "too many denied publishes; disconnecting (mqtt.acl_violations_before_disconnect)");
            return Err(End::new(DisconnectReason::AclViolations, Some(0x87), true));
        }
        Ok(())
    }

    /// Hands an allowed PUBLISH on the telemetry filter to ingest, as
    /// (receive time, CN, topic, payload). With `ingest.ack = "durable"` and
    /// QoS 1, returns the waiter that fires once the record is durable. Never
    /// waits longer than ingest's when-full policy allows.
    async fn ingest(&self, telemetry: &Telemetry, publish: &Publish, qos: u8) -> Option<AckWaiter> {
        let handle = telemetry.handle.as_ref()?;
        let record = telemetry
            .tap
            .take(&self.identity.cn, &publish.topic, &publish.payload[..])?;
        if qos == 1 && telemetry.durable() {
            let (ack, waiter) = Ack::new();
            handle.submit_async(record, Some(ack)).await;
            Some(waiter)
        } else {
            handle.submit_async(record, None).await;
            None
        }
    }
}
