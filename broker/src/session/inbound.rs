//! Inbound: frames from the client, validated, decoded, checked (ACL,
//! quotas) and handed to ingest and the router.

use gatehouse_acl::{Action, Decision, Subject};
use gatehouse_ingest::{Ack, AckWaiter};
use rumqttd::protocol::{
    DisconnectReasonCode, Packet, PingResp, PubAckReason, PubComp, PubCompReason, PubRecReason,
    Publish, PublishProperties, RetainForwardRule, SubAck, SubscribeReasonCode, UnsubAck,
    UnsubAckReason, Unsubscribe,
};
use std::borrow::Cow;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::time::Instant;

use super::delivery;
use super::{End, QOS0_MAX_WAIT, Session, SubOptions, Waiting, reason_byte};
use crate::flow::Full;
use crate::presence::DisconnectReason;
use crate::quota::{Qos2In, Quota};
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
        // A PUBLISH waiting for room holds back the packets behind it.
        while self.waiting.is_none() {
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
                if qos == 2 {
                    // The exactly-once exchange with the client is the
                    // session's (see `publish`); the router takes the
                    // message once, as QoS 1, and delivers it at each
                    // subscription's QoS.
                    frame[0] = (frame[0] & !0x06) | 0x02;
                }
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

    /// More QoS 1/2 PUBLISHes unacknowledged than `mqtt.receive_maximum`
    /// [MQTT-3.3.4-7]: DISCONNECT 0x93.
    fn receive_maximum_exceeded(&self) -> End {
        tracing::warn!(client_id = ?self.client_id, receive_maximum = self.receive_maximum, "client sent more unacknowledged QoS 1/2 messages than the Receive Maximum it was given (mqtt.receive_maximum)");
        self.protocol_error(
            "receive_maximum_exceeded",
            DisconnectReasonCode::ReceiveMaximumExceeded,
        )
    }

    fn protocol_error(&self, what: &'static str, code: DisconnectReasonCode) -> End {
        self.violation(Violation {
            label: what,
            code: reason_byte(code),
        })
    }

    /// Counts a quota hit and logs it once per session and quota.
    fn over_quota(&self, quota: Quota) {
        self.count_quota(quota);
        let bit = 1u8 << (quota as u8);
        if self.quota_logged.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            tracing::warn!(client_id = ?self.client_id, quota = quota.as_str(), "client over its limit; refused (raise {} if this client is legitimate; every hit is counted in gatehouse_quota_exceeded_total)", quota.key());
        }
    }

    /// Counts a quota hit in `gatehouse_quota_exceeded_total`.
    pub(super) fn count_quota(&self, quota: Quota) {
        self.shared()
            .metrics
            .quota_exceeded
            .with_label_values(&[quota.as_str()])
            .inc();
    }

    /// A quota hit that ends the session (MQTT 5: DISCONNECT 0x97).
    pub(super) fn over_quota_end(&mut self, quota: Quota) -> End {
        self.over_quota(quota);
        End::new(DisconnectReason::QuotaExceeded, Some(0x97), true)
    }

    /// A PUBLISH over a quota: MQTT 5 QoS 1 and 2 get PUBACK / PUBREC 0x97
    /// and the session goes on; anything else cannot be refused on its own
    /// (QoS 0 has no answer, 3.1.1 acks mean success), so the session ends
    /// rather than lose the message silently.
    fn refuse_publish(&mut self, quota: Quota, qos: u8, pkid: u16) -> Result<(), End> {
        if qos > 0 && self.v5() {
            self.over_quota(quota);
            self.answer_publish(pkid, qos, PubAckReason::QuotaExceeded);
            return Ok(());
        }
        if qos == 2 {
            // Not kept: its retransmission after reconnecting is new.
            self.conn.shared.book.qos2_released(&self.client_id, pkid);
        }
        Err(self.over_quota_end(quota))
    }

    /// Answers a QoS 1 or 2 PUBLISH the broker decided on itself, behind
    /// the acknowledgements still held for earlier PUBLISHes (durable mode).
    fn answer_publish(&mut self, pkid: u16, qos: u8, reason: PubAckReason) {
        if self.shared().telemetry.durable() {
            self.held_acks.answered(pkid, qos, reason);
        } else {
            self.write_publish_ack(pkid, qos, reason);
        }
    }

    async fn packet(&mut self, packet: Packet, qos: u8, pkid: u16) -> Result<(), End> {
        match packet {
            Packet::Publish(publish, props) => self.publish(publish, props, qos, pkid).await,
            Packet::Subscribe(mut subscribe, props) => {
                let shared = self.conn.shared.clone();
                let subject = Subject::new(self.identity.kind, &self.identity.cn, &self.client_id);
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                let mut allowed = Vec::with_capacity(subscribe.filters.len());
                let mut replaced = Vec::new();
                for mut f in subscribe.filters.drain(..) {
                    // A shared subscription is checked on its inner filter
                    // (the validator made sure it has one), if this kind may
                    // share at all.
                    let inner = delivery::shared_inner(&f.path);
                    if inner.is_some()
                        && !shared
                            .policy
                            .load()
                            .acl
                            .shared_subscriptions(self.identity.kind)
                    {
                        codes.push(Some(SubscribeReasonCode::SharedSubscriptionsNotSupported));
                        continue;
                    }
                    let decision = shared.policy.load().decide(
                        &shared.revocation,
                        &subject,
                        &self.identity.serial,
                        Action::Subscribe,
                        inner.unwrap_or(&f.path).as_bytes(),
                    );
                    let existing = self.subscriptions.iter().position(|(p, _)| *p == f.path);
                    let options = SubOptions {
                        qos: f.qos as u8,
                        no_local: f.nolocal,
                        retain_as_published: f.preserve_retain,
                        skip_retained: match f.retain_forward_rule {
                            RetainForwardRule::OnEverySubscribe => false,
                            RetainForwardRule::OnNewSubscribe => existing.is_some(),
                            RetainForwardRule::Never => true,
                        },
                    };
                    if decision.is_allowed()
                        && !shared.book.subscribe(&self.client_id, &f.path, options)
                    {
                        self.over_quota(Quota::Subscriptions);
                        codes.push(Some(if self.v5() {
                            SubscribeReasonCode::QuotaExceeded
                        } else {
                            SubscribeReasonCode::Failure
                        }));
                    } else if decision.is_allowed() {
                        match existing {
                            Some(i) => {
                                // rumqttd keeps an existing subscription's
                                // QoS and sends retained messages only for a
                                // new one: it is replaced in the router
                                // [MQTT-3.8.4-3] and its retained messages
                                // sent again (Retain Handling 0) [MQTT-3.8.4-4].
                                let before =
                                    std::mem::replace(&mut self.subscriptions[i].1, options);
                                if before.qos != options.qos
                                    || f.retain_forward_rule == RetainForwardRule::OnEverySubscribe
                                {
                                    replaced.push(delivery::router_filter(&f.path).into_owned());
                                }
                            }
                            None => {
                                if inner.is_none() {
                                    shared.flow.subscribe(&f.path, &self.flow_queue);
                                }
                                self.subscriptions.push((f.path.clone(), options));
                            }
                        }
                        codes.push(None);
                        f.path = delivery::router_filter(&f.path).into_owned();
                        allowed.push(f);
                    } else {
                        self.deny_subscribe.inc();
                        tracing::warn!(client_id = ?self.client_id, "{}", shared.policy.load().acl.explain_decision(&subject, Action::Subscribe, inner.unwrap_or(&f.path), decision));
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
                    if !replaced.is_empty() {
                        // Its UNSUBACK is dropped with the router's others.
                        self.to_router.push(Packet::Unsubscribe(
                            Unsubscribe {
                                pkid: subscribe.pkid,
                                filters: replaced,
                            },
                            None,
                        ));
                    }
                    self.to_router.push(Packet::Subscribe(subscribe, props));
                }
                Ok(())
            }
            Packet::Unsubscribe(mut unsubscribe, props) => {
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
                        let before = self.subscriptions.len();
                        self.subscriptions.retain(|(p, _)| p != filter);
                        if before != self.subscriptions.len()
                            && delivery::shared_inner(filter).is_none()
                        {
                            self.conn.shared.flow.unsubscribe(filter, &self.flow_queue);
                        }
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
                for filter in &mut unsubscribe.filters {
                    if let Cow::Owned(routed) = delivery::router_filter(filter) {
                        *filter = routed;
                    }
                }
                self.to_router.push(Packet::Unsubscribe(unsubscribe, props));
                Ok(())
            }
            Packet::PubAck(ack, _) => {
                self.delivery_acked(ack.pkid, 1, false);
                Ok(())
            }
            Packet::PubRec(rec, _) => {
                // An error code ends the exchange: no PUBREL follows.
                let ended = rec.reason != PubRecReason::Success
                    && rec.reason != PubRecReason::NoMatchingSubscribers;
                self.delivery_acked(rec.pkid, 2, ended);
                Ok(())
            }
            Packet::PubComp(comp, _) => {
                self.release_completed(comp.pkid);
                Ok(())
            }
            Packet::PubRel(rel, _) => {
                // The message went on when it arrived; the packet id is
                // free again [MQTT-4.3.3-11]. A PUBREL for an exchange
                // that is not open is still completed (v5 says 0x92).
                let open = self
                    .conn
                    .shared
                    .book
                    .qos2_released(&self.client_id, rel.pkid);
                let reason = if open || !self.v5() {
                    PubCompReason::Success
                } else {
                    PubCompReason::PacketIdentifierNotFound
                };
                self.write(Packet::PubComp(
                    PubComp {
                        pkid: rel.pkid,
                        reason,
                    },
                    None,
                ));
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
            Packet::Connect(..) => {
                Err(self.protocol_error("second_connect", DisconnectReasonCode::ProtocolError))
            }
            _ => Err(self.protocol_error("unexpected_packet", DisconnectReasonCode::ProtocolError)),
        }
    }

    async fn publish(
        &mut self,
        mut publish: Publish,
        mut props: Option<PublishProperties>,
        qos: u8,
        pkid: u16,
    ) -> Result<(), End> {
        let shared = self.conn.shared.clone();
        if let Some(alias) = props.as_mut().and_then(|p| p.topic_alias.take()) {
            // Resolved here, so the ACL, ingest and the router see the real
            // topic (the router link takes no aliases). Above the maximum we
            // announced: 0x94 [MQTT-3.3.2-9].
            if usize::from(alias) > shared.config.mqtt.topic_alias_maximum {
                return Err(self.protocol_error(
                    "topic_alias_invalid",
                    DisconnectReasonCode::TopicAliasInvalid,
                ));
            }
            if publish.topic.is_empty() {
                match self.topic_aliases.get(&alias) {
                    Some(topic) => publish.topic = topic.clone(),
                    // An empty topic with an alias this connection never
                    // set is a protocol error (3.3.2.3.4).
                    None => {
                        return Err(self.protocol_error(
                            "topic_alias_unknown",
                            DisconnectReasonCode::ProtocolError,
                        ));
                    }
                }
            } else {
                // A copy: the frame's slice would pin the whole frame (up
                // to max_packet_size) for as long as the alias lives.
                self.topic_aliases
                    .insert(alias, Bytes::copy_from_slice(&publish.topic));
            }
        }
        if shared.telemetry.durable() && qos > 0 && self.held_acks.len() >= self.receive_maximum {
            return Err(self.receive_maximum_exceeded());
        }
        if qos == 2 {
            match shared
                .book
                .qos2_received(&self.client_id, pkid, self.receive_maximum)
            {
                Qos2In::New => {}
                Qos2In::Again => {
                    // Sent again before our PUBREC reached the client: it
                    // went on the first time, so only the PUBREC goes out
                    // [MQTT-4.3.3-10] (Method A).
                    if !(self.qos2_routing.contains(&pkid) || self.held_acks.holds(pkid)) {
                        self.answer_publish(pkid, 2, PubAckReason::Success);
                    }
                    // Otherwise the first PUBREC is still to come.
                    return Ok(());
                }
                Qos2In::TooMany => return Err(self.receive_maximum_exceeded()),
            }
        }
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
            self.route(publish, props, qos, pkid, None).await;
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
        if qos > 0 {
            let reason = if self.v5() {
                PubAckReason::NotAuthorized
            } else {
                PubAckReason::Success
            };
            self.answer_publish(pkid, qos, reason);
        }
        if self.violations >= shared.config.mqtt.acl_violations_before_disconnect {
            tracing::warn!(client_id = ?self.client_id, violations = self.violations, "too many denied publishes; disconnecting (mqtt.acl_violations_before_disconnect)");
            return Err(End::new(DisconnectReason::AclViolations, Some(0x87), true));
        }
        Ok(())
    }

    /// Hands an allowed PUBLISH on once every connected subscriber it goes
    /// to has room for it (`flow`); otherwise it waits in `waiting` and the
    /// socket is not read until there is room (or, QoS 0, `give_up`).
    async fn route(
        &mut self,
        publish: Publish,
        props: Option<PublishProperties>,
        qos: u8,
        pkid: u16,
        give_up: Option<Instant>,
    ) {
        let shared = self.conn.shared.clone();
        let size = flow_size(&publish.topic, publish.payload.len(), &self.client_id);
        let queues = shared.flow.matching(&mut self.flow_matches, &publish.topic);
        if let Err(Full(full)) = shared.flow.reserve(queues, size) {
            shared.metrics.publish_waits.inc();
            tracing::debug!(client_id = ?self.client_id, subscriber = ?full.client_id, queued = ?full.load(), "PUBLISH waits for room in a subscriber's queue; not reading this client meanwhile");
            let give_up = give_up.or_else(|| (qos == 0).then(|| Instant::now() + QOS0_MAX_WAIT));
            self.waiting = Some(Waiting {
                publish,
                props,
                qos,
                pkid,
                full,
                give_up,
                stall_at: Some(Instant::now() + shared.config.mqtt.max_subscriber_stall),
            });
            return;
        }
        self.forward(publish, props, qos, pkid).await;
    }

    /// To ingest and the router, with the acknowledgement arranged.
    async fn forward(
        &mut self,
        mut publish: Publish,
        props: Option<PublishProperties>,
        qos: u8,
        pkid: u16,
    ) {
        let shared = self.conn.shared.clone();
        let durable = self.ingest(&shared.telemetry, &publish, qos).await;
        if qos > 0 && shared.telemetry.durable() {
            self.held_acks.routed(pkid, qos, durable);
        } else if qos == 2 {
            self.qos2_routing.insert(pkid);
        }
        publish.payload = delivery::stamp(&publish.payload, qos, publish.retain, &self.client_id);
        self.to_router.push(Packet::Publish(publish, props));
    }

    /// The queue a PUBLISH waited on has room (or a QoS 0 one gave up):
    /// route it, then read on.
    pub(super) async fn room(&mut self, gave_up: bool) -> Result<(), End> {
        if let Some(w) = self.waiting.take() {
            if gave_up {
                self.abandon(w);
            } else {
                self.route(w.publish, w.props, w.qos, w.pkid, w.give_up)
                    .await;
            }
        }
        // The time it waited is not the client's: a packet arriving behind
        // it is timed (`mqtt.packet_timeout`) from now.
        self.partial_since = None;
        // The packets that arrived behind it (this also sends to the router).
        self.received().await.map(|_| ())
    }

    /// A waiting PUBLISH that will not go on (its QoS 0 wait ran out, or
    /// the session ended). QoS 1 and 2 were never acknowledged: the client
    /// sends them again.
    pub(super) fn abandon(&mut self, w: Waiting) {
        match w.qos {
            0 => self.dropped("subscriber_full", 0, &w.full.client_id),
            // Its retransmission is a new message, not a duplicate.
            2 => {
                self.conn.shared.book.qos2_released(&self.client_id, w.pkid);
            }
            _ => {}
        }
    }

    /// Hands an allowed PUBLISH on the telemetry filter to ingest, as
    /// (receive time, CN, topic, payload). With `ingest.ack = "durable"` and
    /// QoS 1 or 2, returns the waiter that fires once the record is durable. Never
    /// waits longer than ingest's when-full policy allows.
    async fn ingest(&self, telemetry: &Telemetry, publish: &Publish, qos: u8) -> Option<AckWaiter> {
        let handle = telemetry.handle.as_ref()?;
        let record = telemetry
            .tap
            .take(&self.identity.cn, &publish.topic, &publish.payload[..])?;
        if qos > 0 && telemetry.durable() {
            let (ack, waiter) = Ack::new();
            handle.submit_async(record, Some(ack)).await;
            Some(waiter)
        } else {
            handle.submit_async(record, None).await;
            None
        }
    }
}

/// What a routed message weighs in a subscriber's queue: topic and the
/// payload as the router stores it (with its origin header, `delivery`).
pub(super) fn flow_size(topic: &[u8], payload_len: usize, client_id: &str) -> usize {
    topic.len() + payload_len + delivery::stamp_len(client_id)
}
