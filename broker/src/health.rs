//! What `/healthz` reports: whether this broker can still admit and route.
//! A load balancer or supervisor acts on it, so it must turn unhealthy the
//! moment the router is gone or refuses new sessions.

use std::sync::atomic::{AtomicBool, Ordering};

/// Health flags set by the server and read by `/healthz`.
#[derive(Debug, Default)]
pub(crate) struct Health {
    router_dead: AtomicBool,
    router_refusing: AtomicBool,
}

impl Health {
    pub(crate) fn router_died(&self) {
        self.router_dead.store(true, Ordering::SeqCst);
    }

    /// The router refused (`true`) or accepted (`false`) the latest link.
    pub(crate) fn router_refusing(&self, refusing: bool) {
        self.router_refusing.store(refusing, Ordering::Relaxed);
    }

    /// `None` when healthy, else what is wrong.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if self.router_dead.load(Ordering::SeqCst) {
            Some(
                "the MQTT router thread has died; the broker is exiting so its supervisor restarts it",
            )
        } else if self.router_refusing.load(Ordering::Relaxed) {
            Some("the MQTT router refuses new sessions (router full or failing); see the log")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_until_the_router_fails() {
        let h = Health::default();
        assert_eq!(h.problem(), None);
        h.router_refusing(true);
        assert!(h.problem().unwrap().contains("refuses"));
        h.router_refusing(false);
        assert_eq!(h.problem(), None);
        h.router_died();
        assert!(h.problem().unwrap().contains("died"));
    }
}
