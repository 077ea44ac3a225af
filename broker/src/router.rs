//! The rumqttd router, used only through `rumqttd::local` links: it runs on
//! its own thread and does the MQTT routing (subscriptions, retained
//! messages, QoS 1 delivery, persistent sessions). Our front door owns the
//! sockets, TLS, the codecs and every policy decision.

use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::{Notification, RouterConfig};

/// Bytes of one segment of the router's log per subscription filter. The
/// router keeps [`crate::flow::router_segments`] of them per filter: enough
/// that a connected subscriber within `mqtt.max_queued_bytes` never loses a
/// message (see `flow`); a persistent session that is offline for longer
/// than the log holds misses the oldest messages.
pub(crate) const SEGMENT_BYTES: usize = 64 * 1024;

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

/// Client id of the broker's own watchdog link. NUL is refused in client
/// ids at CONNECT (and by the validator in any MQTT string), so no client
/// can take it; rumqttd itself refuses only `+ $ # /`.
const WATCHDOG_CLIENT_ID: &str = "\0gatehouse-watchdog";

/// Resolves when the router thread has died: rumqttd runs its router on a
/// thread of its own and a panic there (a bug in its matcher, say) drops
/// every link. The watchdog holds one idle link; its receiver fails the
/// moment the router's state is gone.
pub(crate) struct RouterWatch {
    probe: (LinkTx, LinkRx),
}

impl std::fmt::Debug for RouterWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouterWatch")
    }
}

impl RouterWatch {
    /// Waits until the router is gone.
    pub(crate) async fn died(self) {
        let (_tx, mut rx) = self.probe;
        loop {
            match rx.next().await {
                Ok(Some(Notification::Unschedule)) => {
                    if rx.wake().await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

impl RouterHandle {
    /// Starts the router thread, and the watchdog link that tells when it
    /// has died.
    pub(crate) fn start(
        max_connections: usize,
        segments: usize,
    ) -> Result<(RouterHandle, RouterWatch), String> {
        let config = RouterConfig {
            // Headroom over the accept limit for the watchdog and will links
            // and the short links that end expired sessions.
            max_connections: max_connections + 8,
            max_outgoing_packet_count: 1000,
            max_segment_size: SEGMENT_BYTES,
            max_segment_count: segments,
            ..Default::default()
        };
        // The sender's type is private to rumqttd: keep it inside a closure.
        let tx = rumqttd::Router::new(0, config).spawn();
        let (probe_tx, probe_rx, _) = LinkBuilder::new(WATCHDOG_CLIENT_ID, tx.clone())
            .clean_session(true)
            .build()
            .map_err(|e| format!("the router refused the watchdog link: {e}"))?;
        let watch = RouterWatch {
            probe: (probe_tx, probe_rx),
        };
        let handle = RouterHandle {
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
        };
        Ok((handle, watch))
    }

    /// Registers a session with the router. Blocks until the router answers:
    /// call it from a blocking thread.
    pub(crate) fn link(&self, client_id: &str, clean_session: bool) -> Link {
        (self.make)(client_id, clean_session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The watchdog notices a router that died of a panic inside rumqttd:
    /// here its topic matcher, fed (through a link, around the front door's
    /// validator) a topic whose first character is not ASCII while a
    /// subscription exists.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchdog_sees_the_router_die() {
        let (handle, watch) = RouterHandle::start(8, 2).expect("router");
        let died = tokio::spawn(watch.died());
        let (mut tx, _rx, _) = handle.link("victim", true).expect("link");
        tx.subscribe("a/#").expect("subscribe");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!died.is_finished(), "the router is alive");
        tx.publish("é/x", "boom").expect("publish");
        tokio::time::timeout(Duration::from_secs(5), died)
            .await
            .expect("watchdog fired within 5 s")
            .expect("watch task");
    }
}
