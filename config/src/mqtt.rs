//! `[mqtt]`: protocol limits the embedded broker enforces on every session.

use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::load::Validator;

pub(crate) const MAX_PACKET_SIZE: usize = 1024 * 1024;
pub(crate) const MAX_KEEPALIVE: &str = "20m";
pub(crate) const ACL_VIOLATIONS_BEFORE_DISCONNECT: usize = 10;
pub(crate) const PACKET_TIMEOUT: &str = "10s";
pub(crate) const MAX_SUBSCRIBER_STALL: &str = "30s";
pub(crate) const MAX_PARTIAL_BYTES: usize = 64 * 1024 * 1024;
pub(crate) const MAX_NEW_TOPICS_PER_MINUTE: usize = 100;
pub(crate) const MAX_SUBSCRIPTIONS_PER_CLIENT: usize = 100;
pub(crate) const MAX_RETAINED_PER_CLIENT: usize = 32;
pub(crate) const RECEIVE_MAXIMUM: usize = 100;
pub(crate) const TOPIC_ALIAS_MAXIMUM: usize = 10;
pub(crate) const MAX_SESSION_EXPIRY: &str = "1d";
pub(crate) const MAX_PERSISTENT_SESSIONS_OPERATIONAL: usize = 10_000;
pub(crate) const MAX_PERSISTENT_SESSIONS_BOOTSTRAP: usize = 1_000;
pub(crate) const MAX_QUEUED_MESSAGES: usize = 1_000;
pub(crate) const MAX_QUEUED_BYTES: usize = 256 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMqtt {
    pub max_packet_size: Option<i64>,
    pub max_keepalive: Option<String>,
    pub acl_violations_before_disconnect: Option<i64>,
    pub packet_timeout: Option<String>,
    pub max_partial_bytes: Option<i64>,
    pub max_new_topics_per_minute: Option<i64>,
    pub max_subscriptions_per_client: Option<i64>,
    pub max_retained_per_client: Option<i64>,
    pub receive_maximum: Option<i64>,
    pub topic_alias_maximum: Option<i64>,
    pub max_session_expiry: Option<String>,
    pub max_persistent_sessions_operational: Option<i64>,
    pub max_persistent_sessions_bootstrap: Option<i64>,
    pub max_queued_messages: Option<i64>,
    pub max_queued_bytes: Option<i64>,
    pub max_subscriber_stall: Option<String>,
}

/// `[mqtt]`: per-session protocol limits of the embedded broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// Largest packet accepted from a client, in bytes (remaining length);
    /// a larger one closes that connection (MQTT 5: DISCONNECT 0x95).
    pub max_packet_size: usize,
    /// Largest keepalive a client may ask for; a keepalive of 0 (none) or a
    /// longer one is lowered to this (MQTT 5 tells the client with Server
    /// Keep Alive; MQTT 3.1.1 clients are simply held to it). A client
    /// silent for 1.5 x its keepalive is disconnected.
    pub max_keepalive: Duration,
    /// Denied PUBLISHes a session may send before it is disconnected.
    pub acl_violations_before_disconnect: usize,
    /// Longest a packet may take to arrive once its first byte is in; a
    /// client that drips a packet slower is disconnected. Keepalive counts
    /// whole packets only, so dripping bytes does not keep a session alive.
    pub packet_timeout: Duration,
    /// Bytes all sessions together may hold in packets not yet complete; a
    /// session whose partial packet would pass it is disconnected (MQTT 5:
    /// 0x97 Quota exceeded).
    pub max_partial_bytes: usize,
    /// Topics a client may publish to for the first time within one
    /// minute (every new topic costs the router a match against every
    /// subscription, and the router never forgets a topic).
    pub max_new_topics_per_minute: usize,
    /// Subscriptions one client may hold at once.
    pub max_subscriptions_per_client: usize,
    /// Topics on which one client may hold a retained message at once.
    pub max_retained_per_client: usize,
    /// QoS 1 and 2 PUBLISHes a client may have unacknowledged at once
    /// (MQTT 5 Receive Maximum, announced in the CONNACK): QoS 2 messages
    /// between PUBREC and PUBREL, and, with `ingest.ack = "durable"`, QoS 1
    /// messages whose PUBACK waits for the database. One more closes the
    /// connection (MQTT 5: DISCONNECT 0x93). 3.1.1 clients are held to the
    /// same bound.
    pub receive_maximum: usize,
    /// Topic aliases an MQTT 5 client may set per connection (announced as
    /// Topic Alias Maximum; 0 turns them off). Resolved before the ACL
    /// check, so rules always see the real topic. An alias above it is
    /// DISCONNECT 0x94.
    pub topic_alias_maximum: usize,
    /// Longest a session outlives its connection: an MQTT 5 client's
    /// Session Expiry Interval is capped to it (and told so in the CONNACK),
    /// and a 3.1.1 persistent session (clean session 0) lives this long
    /// after it disconnects. An expired session is removed from the router:
    /// its subscriptions and queued messages are gone.
    pub max_session_expiry: Duration,
    /// Client ids with a session kept beyond its connection, per
    /// certificate kind (router memory, bounded). Past it an MQTT 5 client
    /// gets Session Expiry 0 in the CONNACK (its session ends with the
    /// connection) and a 3.1.1 clean session 0 CONNECT is refused (return
    /// code 3, server unavailable). 0 disables persistent sessions.
    pub max_persistent_sessions_operational: usize,
    pub max_persistent_sessions_bootstrap: usize,
    /// Messages routed to a connected subscriber and not yet taken by its
    /// session (the router's log behind its cursor and its link buffer).
    /// A PUBLISH that would pass it waits: the publishing session stops
    /// reading its socket until the subscriber catches up, so TCP slows
    /// the device down. Publishers on topics the subscriber does not match
    /// are not affected. A QoS 0 message that waits longer than 5 s is
    /// dropped (counted in `gatehouse_messages_dropped_total`); QoS 1 and 2
    /// wait unacknowledged.
    pub max_queued_messages: usize,
    /// The same bound in bytes (topic + payload). The router keeps enough
    /// history per subscription filter that nothing within the bound can be
    /// overwritten before the subscriber reads it. One message larger than
    /// the bound still goes to an empty queue.
    pub max_queued_bytes: usize,
    /// Longest a PUBLISH waits for room in one subscriber's queue before
    /// that subscriber is disconnected (MQTT 5: DISCONNECT 0x97, counted in
    /// `gatehouse_quota_exceeded_total{quota="subscriber_stall"}`): a
    /// subscriber that stops reading holds its publishers this long at
    /// most, then they go on.
    pub max_subscriber_stall: Duration,
}

impl Validator<'_> {
    pub(crate) fn mqtt(&self, raw: RawMqtt) -> Result<MqttSettings, ConfigError> {
        let max_keepalive =
            self.duration("mqtt.max_keepalive", raw.max_keepalive, MAX_KEEPALIVE)?;
        if max_keepalive > Duration::from_secs(u16::MAX.into()) {
            return Err(self.invalid(
                "mqtt.max_keepalive",
                "MQTT keepalive is at most 65535 s (18h12m15s)",
            ));
        }
        if max_keepalive.subsec_nanos() != 0 {
            return Err(self.invalid(
                "mqtt.max_keepalive",
                "MQTT keepalive is counted in whole seconds",
            ));
        }
        Ok(MqttSettings {
            max_packet_size: self.positive(
                "mqtt.max_packet_size",
                raw.max_packet_size,
                MAX_PACKET_SIZE,
                268_435_455,
            )?,
            max_keepalive,
            acl_violations_before_disconnect: self.positive(
                "mqtt.acl_violations_before_disconnect",
                raw.acl_violations_before_disconnect,
                ACL_VIOLATIONS_BEFORE_DISCONNECT,
                1_000_000,
            )?,
            packet_timeout: self.duration(
                "mqtt.packet_timeout",
                raw.packet_timeout,
                PACKET_TIMEOUT,
            )?,
            max_partial_bytes: self.positive(
                "mqtt.max_partial_bytes",
                raw.max_partial_bytes,
                MAX_PARTIAL_BYTES,
                1 << 40,
            )?,
            max_new_topics_per_minute: self.positive(
                "mqtt.max_new_topics_per_minute",
                raw.max_new_topics_per_minute,
                MAX_NEW_TOPICS_PER_MINUTE,
                10_000_000,
            )?,
            max_subscriptions_per_client: self.positive(
                "mqtt.max_subscriptions_per_client",
                raw.max_subscriptions_per_client,
                MAX_SUBSCRIPTIONS_PER_CLIENT,
                1_000_000,
            )?,
            max_retained_per_client: self.positive(
                "mqtt.max_retained_per_client",
                raw.max_retained_per_client,
                MAX_RETAINED_PER_CLIENT,
                1_000_000,
            )?,
            receive_maximum: self.positive(
                "mqtt.receive_maximum",
                raw.receive_maximum,
                RECEIVE_MAXIMUM,
                65_535,
            )?,
            max_persistent_sessions_operational: match raw.max_persistent_sessions_operational {
                Some(0) => 0,
                other => self.positive(
                    "mqtt.max_persistent_sessions_operational",
                    other,
                    MAX_PERSISTENT_SESSIONS_OPERATIONAL,
                    10_000_000,
                )?,
            },
            max_persistent_sessions_bootstrap: match raw.max_persistent_sessions_bootstrap {
                Some(0) => 0,
                other => self.positive(
                    "mqtt.max_persistent_sessions_bootstrap",
                    other,
                    MAX_PERSISTENT_SESSIONS_BOOTSTRAP,
                    10_000_000,
                )?,
            },
            max_queued_messages: self.positive(
                "mqtt.max_queued_messages",
                raw.max_queued_messages,
                MAX_QUEUED_MESSAGES,
                1_000_000,
            )?,
            max_queued_bytes: self.positive(
                "mqtt.max_queued_bytes",
                raw.max_queued_bytes,
                MAX_QUEUED_BYTES,
                1 << 30,
            )?,
            max_subscriber_stall: self.duration(
                "mqtt.max_subscriber_stall",
                raw.max_subscriber_stall,
                MAX_SUBSCRIBER_STALL,
            )?,
            max_session_expiry: self.duration(
                "mqtt.max_session_expiry",
                raw.max_session_expiry,
                MAX_SESSION_EXPIRY,
            )?,
            topic_alias_maximum: match raw.topic_alias_maximum {
                Some(0) => 0,
                other => self.positive(
                    "mqtt.topic_alias_maximum",
                    other,
                    TOPIC_ALIAS_MAXIMUM,
                    65_535,
                )?,
            },
        })
    }
}
