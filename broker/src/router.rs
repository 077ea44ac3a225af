//! The rumqttd router, used only through `rumqttd::local` links: it runs on
//! its own thread and does the MQTT routing (subscriptions, retained
//! messages, QoS 1 delivery, persistent sessions). Our front door owns the
//! sockets, TLS, the codecs and every policy decision.

use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::{Notification, RouterConfig};

/// Bytes of recent messages the router keeps per topic log, times
/// [`SEGMENTS`]. Bounds memory per active topic; a persistent session that
/// is offline for longer than the log holds misses the oldest messages.
const SEGMENT_BYTES: usize = 64 * 1024;
const SEGMENTS: usize = 2;

/// A link, or why the router refused it.
pub(crate) type Link = Result<(LinkTx, LinkRx, Notification), String>;

type MakeLink = dyn Fn(&str, bool) -> Link + Send + Sync;

/// Creates links to the running router.
pub(crate) struct RouterHandle {
    make: Box<MakeLink>,
}

impl std::fmt::Debug for RouterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouterHandle")
    }
}

impl RouterHandle {
    /// Starts the router thread.
    pub(crate) fn start(max_connections: usize) -> RouterHandle {
        let config = RouterConfig {
            max_connections: max_connections + 1,
            max_outgoing_packet_count: 1000,
            max_segment_size: SEGMENT_BYTES,
            max_segment_count: SEGMENTS,
            ..Default::default()
        };
        // The sender's type is private to rumqttd: keep it inside a closure.
        let tx = rumqttd::Router::new(0, config).spawn();
        RouterHandle {
            make: Box::new(move |client_id, clean| {
                LinkBuilder::new(client_id, tx.clone())
                    .clean_session(clean)
                    // Publishing on a topic nobody subscribes to must not be
                    // an error (rumqttd disconnects the publisher otherwise).
                    .dynamic_filters(true)
                    // We refuse client topic aliases and use none outwards,
                    // so every topic the ACL sees is the real one.
                    .topic_alias_max(0)
                    .build()
                    .map_err(|e: LinkError| e.to_string())
            }),
        }
    }

    /// Registers a session with the router. Blocks until the router answers:
    /// call it from a blocking thread.
    pub(crate) fn link(&self, client_id: &str, clean_session: bool) -> Link {
        (self.make)(client_id, clean_session)
    }
}
