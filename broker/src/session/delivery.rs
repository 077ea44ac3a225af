//! What rumqttd's router forgets about a message and its subscriptions, and
//! delivery needs (MQTT-3.8.3 subscription options, MQTT-3.8.4-8 QoS):
//!
//! * the router delivers at the *subscription's* QoS whatever the message's
//!   QoS was, clears RETAIN on every live message and keeps neither the
//!   publisher nor No Local / Retain As Published / Retain Handling;
//! * so every PUBLISH a session hands the router carries its [`Origin`] (QoS
//!   as published, RETAIN, publishing client id) in a small header in front
//!   of its payload — through the commit log and the retained store, shared
//!   by every copy without a per-delivery allocation — and the session cuts
//!   it off ([`unstamp`], a zero-copy slice) before the message goes out.
//!   Every way into the router is stamped (client PUBLISHes and wills; the
//!   router takes no other input), so every delivery has one;
//! * each session keeps its subscriptions' [`SubOptions`] (in the client
//!   book too, so a persistent session keeps them), and [`decide`] applies
//!   them to each delivery.

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::{BufMut, Bytes, BytesMut};
use gatehouse_acl::topic_matches_filter;

/// High bits of the header's first byte (the low bits hold QoS and RETAIN).
const MARK: u8 = 0b1010_0000;

/// Where a routed message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// QoS as published (2 also when the router took it as QoS 1).
    pub(crate) qos: u8,
    /// RETAIN as published.
    pub(crate) retain: bool,
    /// The publishing client id (a slice of the stamped payload).
    pub(crate) client_id: Bytes,
}

/// Bytes [`stamp`] puts in front of a payload published by `client_id`.
pub(crate) fn stamp_len(client_id: &str) -> usize {
    3 + client_id.len().min(usize::from(u16::MAX))
}

/// The payload of a PUBLISH about to be routed, with its origin in front.
pub(crate) fn stamp(payload: &[u8], qos: u8, retain: bool, client_id: &str) -> Bytes {
    let id = &client_id.as_bytes()[..client_id.len().min(usize::from(u16::MAX))];
    let mut b = BytesMut::with_capacity(3 + id.len() + payload.len());
    b.put_u8(MARK | (qos.min(2) << 1) | u8::from(retain));
    b.put_u16(id.len() as u16);
    b.extend_from_slice(id);
    b.extend_from_slice(payload);
    b.freeze()
}

/// Cuts the origin off a delivered payload, leaving the payload as
/// published; `None` (payload untouched) if it carries none.
pub(crate) fn unstamp(payload: &mut Bytes) -> Option<Origin> {
    let (&first, rest) = payload.split_first()?;
    if first & 0b1111_1000 != MARK || rest.len() < 2 {
        return None;
    }
    let id_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let end = 3 + id_len;
    if payload.len() < end {
        return None;
    }
    let origin = Origin {
        qos: (first >> 1) & 0b11,
        retain: first & 1 == 1,
        client_id: payload.slice(3..end),
    };
    *payload = payload.slice(end..);
    Some(origin)
}

/// The filter inside a shared subscription (`$share/{group}/{filter}`).
pub(crate) fn shared_inner(filter: &str) -> Option<&str> {
    filter
        .strip_prefix("$share/")?
        .split_once('/')
        .map(|(_, f)| f)
}

/// The filter as handed to the router. rumqttd keys a shared group by its
/// name alone, so `$share/g/a` and `$share/g/b` (or two clients' groups of
/// the same name on different filters) would share one cursor and one
/// rotation: the group name it gets also carries a hash of the filter,
/// after a NUL no client can send.
pub(crate) fn router_filter(filter: &str) -> Cow<'_, str> {
    let Some((group, inner)) = filter
        .strip_prefix("$share/")
        .and_then(|s| s.split_once('/'))
    else {
        return Cow::Borrowed(filter);
    };
    let mut h = DefaultHasher::new();
    inner.hash(&mut h);
    Cow::Owned(format!("$share/{group}\0{:016x}/{inner}", h.finish()))
}

/// One subscription's options, as the client asked for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubOptions {
    /// Maximum QoS granted.
    pub(crate) qos: u8,
    /// No Local: never deliver the session's own messages [MQTT-3.8.3-3].
    pub(crate) no_local: bool,
    /// Retain As Published [MQTT-3.3.1-12/13].
    pub(crate) retain_as_published: bool,
    /// Retained messages sent for this SUBSCRIBE are not wanted (Retain
    /// Handling 2, or 1 on an existing subscription) [MQTT-3.3.1-10/11].
    pub(crate) skip_retained: bool,
}

impl SubOptions {
    /// None of the v5 options is set.
    fn is_plain(&self) -> bool {
        !(self.no_local || self.retain_as_published || self.skip_retained)
    }
}

impl Default for SubOptions {
    /// What a subscription the session does not know gets (none of the
    /// v5 options).
    fn default() -> Self {
        SubOptions {
            qos: 2,
            no_local: false,
            retain_as_published: false,
            skip_retained: false,
        }
    }
}

/// What to do with one message the router delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not for this client (No Local, unwanted retained message).
    Drop,
    /// Out at this QoS with this RETAIN flag.
    Deliver { qos: u8, retain: bool },
}

/// Applies the message's origin and the matching subscription's options
/// to a delivery the router made at `router_qos`. `replay` is the RETAIN
/// flag the router set: only retained messages sent because of a SUBSCRIBE
/// have it (the router clears it on live messages).
///
/// The router sends one copy per matching subscription, each at that
/// subscription's QoS but without naming it: the subscription whose granted
/// QoS equals `router_qos` is taken as the one this copy is for.
pub(crate) fn decide(
    topic: &[u8],
    router_qos: u8,
    replay: bool,
    origin: Option<&Origin>,
    own_client_id: &str,
    subscriptions: &[(String, SubOptions)],
) -> Verdict {
    // Subscriptions without v5 options (all of 3.1.1's) need no matching.
    let options = if subscriptions.iter().all(|(_, o)| o.is_plain()) {
        SubOptions::default()
    } else {
        let topic = std::str::from_utf8(topic).unwrap_or_default();
        let mut matching = subscriptions
            .iter()
            .filter(|(filter, _)| {
                topic_matches_filter(topic, shared_inner(filter).unwrap_or(filter))
            })
            .map(|(_, o)| *o);
        let first = matching.clone().next();
        matching
            .find(|o| o.qos == router_qos)
            .or(first)
            .unwrap_or_default()
    };
    if replay && options.skip_retained {
        return Verdict::Drop;
    }
    if options.no_local && origin.is_some_and(|o| o.client_id == own_client_id.as_bytes()) {
        return Verdict::Drop;
    }
    let qos = origin.map_or(router_qos, |o| o.qos.min(router_qos));
    let retain = replay || (options.retain_as_published && origin.is_some_and(|o| o.retain));
    Verdict::Deliver { qos, retain }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(qos: u8, retain: bool, client_id: &str) -> Origin {
        Origin {
            qos,
            retain,
            client_id: Bytes::copy_from_slice(client_id.as_bytes()),
        }
    }

    #[test]
    fn origin_round_trips_and_leaves_the_payload_as_published() {
        for (qos, retain, id, payload) in [
            (2, true, "GW0001-EEFF", &b"{\"t\":1}"[..]),
            (0, false, "", b""),
            (1, false, "x", &[MARK, 0, 0][..]),
        ] {
            let mut stamped = stamp(payload, qos, retain, id);
            assert_eq!(unstamp(&mut stamped), Some(origin(qos, retain, id)));
            assert_eq!(&stamped[..], payload, "payload as published");
        }
    }

    #[test]
    fn a_payload_without_an_origin_is_left_alone() {
        for raw in [
            &b""[..],
            b"{}",
            &[MARK],
            &[MARK, 0],
            &[MARK | 1, 0, 5, b'a'],
        ] {
            let mut p = Bytes::copy_from_slice(raw);
            assert_eq!(unstamp(&mut p), None, "{raw:?}");
            assert_eq!(&p[..], raw);
        }
    }

    fn sub(filter: &str, qos: u8) -> (String, SubOptions) {
        (
            filter.to_owned(),
            SubOptions {
                qos,
                ..SubOptions::default()
            },
        )
    }

    #[test]
    fn qos_is_the_lower_of_message_and_subscription() {
        let subs = [sub("t/#", 2)];
        for (published, router, out) in [(0, 2, 0), (1, 2, 1), (2, 2, 2), (2, 1, 1), (0, 1, 0)] {
            assert_eq!(
                decide(
                    b"t/x",
                    router,
                    false,
                    Some(&origin(published, false, "p")),
                    "c",
                    &subs
                ),
                Verdict::Deliver {
                    qos: out,
                    retain: false
                },
                "published {published}, granted {router}"
            );
        }
        // No origin (not routed by a session): the router's QoS.
        assert_eq!(
            decide(b"t/x", 1, false, None, "c", &subs),
            Verdict::Deliver {
                qos: 1,
                retain: false
            }
        );
    }

    #[test]
    fn shared_subscriptions_match_by_their_inner_filter_and_route_per_filter() {
        assert_eq!(shared_inner("$share/g/t/#"), Some("t/#"));
        assert_eq!(shared_inner("t/#"), None);
        assert_eq!(router_filter("t/#"), "t/#");
        let a = router_filter("$share/g/t/a");
        let b = router_filter("$share/g/t/b");
        assert!(a.starts_with("$share/g\0") && a.ends_with("/t/a"), "{a}");
        assert_ne!(a, b, "one rumqttd group per filter");
        assert_eq!(a, router_filter("$share/g/t/a"), "stable");
        let mut subs = vec![sub("$share/g/t/#", 1)];
        subs[0].1.retain_as_published = true;
        assert_eq!(
            decide(b"t/x", 1, false, Some(&origin(1, true, "p")), "c", &subs),
            Verdict::Deliver {
                qos: 1,
                retain: true
            },
            "the options of the shared subscription apply"
        );
    }

    #[test]
    fn no_local_drops_only_the_own_messages_of_that_subscription() {
        let mut subs = vec![sub("t/#", 1)];
        subs[0].1.no_local = true;
        let own = origin(1, false, "c");
        assert_eq!(
            decide(b"t/x", 1, false, Some(&own), "c", &subs),
            Verdict::Drop
        );
        assert!(matches!(
            decide(
                b"t/x",
                1,
                false,
                Some(&origin(1, false, "other")),
                "c",
                &subs
            ),
            Verdict::Deliver { .. }
        ));
        // A second, overlapping subscription without No Local (granted
        // QoS 0) still gets its copy.
        subs.push(sub("t/x", 0));
        assert!(matches!(
            decide(b"t/x", 0, false, Some(&own), "c", &subs),
            Verdict::Deliver { qos: 0, .. }
        ));
        assert_eq!(
            decide(b"t/x", 1, false, Some(&own), "c", &subs),
            Verdict::Drop
        );
    }

    #[test]
    fn retain_flag_follows_retain_as_published_and_replays() {
        let mut subs = vec![sub("t/#", 1)];
        let retained = origin(1, true, "p");
        let deliver = |retain| Verdict::Deliver { qos: 1, retain };
        assert_eq!(
            decide(b"t/x", 1, false, Some(&retained), "c", &subs),
            deliver(false),
            "live: RETAIN 0 without Retain As Published"
        );
        assert_eq!(
            decide(b"t/x", 1, true, Some(&retained), "c", &subs),
            deliver(true),
            "sent because of the SUBSCRIBE: RETAIN 1"
        );
        subs[0].1.retain_as_published = true;
        assert_eq!(
            decide(b"t/x", 1, false, Some(&retained), "c", &subs),
            deliver(true)
        );
        assert_eq!(
            decide(b"t/x", 1, false, Some(&origin(1, false, "p")), "c", &subs),
            deliver(false)
        );
        subs[0].1.skip_retained = true;
        assert_eq!(
            decide(b"t/x", 1, true, Some(&retained), "c", &subs),
            Verdict::Drop,
            "Retain Handling says no retained messages"
        );
        assert_eq!(
            decide(b"t/x", 1, false, Some(&retained), "c", &subs),
            deliver(true),
            "live messages still flow"
        );
    }
}
