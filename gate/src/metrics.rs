//! The metrics both shapes expose, defined once: names, help, labels and
//! every label value (registered at start, so a dashboard sees a zero rather
//! than a missing series).

use gatehouse_acl::{Action, Kind};
use gatehouse_auth::CrlStatusSnapshot;
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::outcome::{ConnectRefusal, Handshake};

/// Names of every metric [`GateMetrics`] registers: the embedded broker and
/// the Mosquitto plugin both expose exactly these, with the same labels and
/// label values (their other metrics are their own).
pub const SHARED_METRICS: [&str; 9] = [
    "gatehouse_sessions_active",
    "gatehouse_handshakes_total",
    "gatehouse_connect_refused_total",
    "gatehouse_acl_denials_total",
    "gatehouse_revocation_kicks_total",
    "gatehouse_crl_reloads_total",
    "gatehouse_crl_entries",
    "gatehouse_crl_stale",
    "gatehouse_config_reloads_total",
];

/// `Content-Type` of a [`render`]ed body (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

const KINDS: [Kind; 2] = [Kind::Operational, Kind::Bootstrap];
const ACTIONS: [Action; 3] = [Action::Publish, Action::Subscribe, Action::Receive];
const CRL_RESULTS: [&str; 3] = ["ok", "failed", "rollback"];
const RELOAD_RESULTS: [&str; 2] = ["ok", "failed"];

/// The shared metrics, registered in a shape's registry.
#[derive(Debug, Clone)]
pub struct GateMetrics {
    sessions_active: IntGaugeVec,
    handshakes: IntCounterVec,
    connect_refused: IntCounterVec,
    acl_denials: IntCounterVec,
    revocation_kicks: IntCounter,
    crl_reloads: IntCounterVec,
    crl_entries: IntGauge,
    crl_stale: IntGauge,
    config_reloads: IntCounterVec,
}

impl GateMetrics {
    /// Registers every shared metric in `r` with all its label values.
    /// Fails only when `r` already holds one of [`SHARED_METRICS`].
    pub fn register(r: &Registry) -> Result<GateMetrics, prometheus::Error> {
        fn reg<C: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            c: C,
        ) -> Result<C, prometheus::Error> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let m = GateMetrics {
            sessions_active: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        SHARED_METRICS[0],
                        "Open MQTT sessions of identified clients, by certificate kind",
                    ),
                    &["kind"],
                )?,
            )?,
            handshakes: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        SHARED_METRICS[1],
                        "Client certificate checks (chain, identity, validity, revocation), by result",
                    ),
                    &["result"],
                )?,
            )?,
            connect_refused: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        SHARED_METRICS[2],
                        "CONNECTs refused after a good certificate, by reason",
                    ),
                    &["reason"],
                )?,
            )?,
            acl_denials: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        SHARED_METRICS[3],
                        "Requests refused by the topic rules, by certificate kind and action",
                    ),
                    &["kind", "action"],
                )?,
            )?,
            revocation_kicks: reg(
                r,
                IntCounter::new(
                    SHARED_METRICS[4],
                    "Open sessions disconnected because their certificate was revoked",
                )?,
            )?,
            crl_reloads: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        SHARED_METRICS[5],
                        "CRL reloads, by result (rollback: an older CRL refused)",
                    ),
                    &["result"],
                )?,
            )?,
            crl_entries: reg(
                r,
                IntGauge::new(SHARED_METRICS[6], "Revoked serials in the CRL in force")?,
            )?,
            crl_stale: reg(
                r,
                IntGauge::new(
                    SHARED_METRICS[7],
                    "1 when the CRL in force is past its nextUpdate",
                )?,
            )?,
            config_reloads: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        SHARED_METRICS[8],
                        "Reloads of [identity] and [acl] on SIGHUP, by result (failed: the rules in force were kept)",
                    ),
                    &["result"],
                )?,
            )?,
        };
        for kind in KINDS {
            m.sessions_active.with_label_values(&[kind.as_str()]);
            for action in ACTIONS {
                m.acl_denials(kind, action);
            }
        }
        for h in Handshake::ALL {
            m.handshakes.with_label_values(&[h.label()]);
        }
        for c in ConnectRefusal::ALL {
            m.connect_refused.with_label_values(&[c.label()]);
        }
        for result in CRL_RESULTS {
            m.crl_reloads.with_label_values(&[result]);
        }
        for result in RELOAD_RESULTS {
            m.config_reloads.with_label_values(&[result]);
        }
        Ok(m)
    }

    /// Counts one certificate check.
    pub fn handshake(&self, outcome: Handshake) {
        self.handshakes.with_label_values(&[outcome.label()]).inc();
    }

    /// Counts one CONNECT refused after a good certificate.
    pub fn connect_refused(&self, why: ConnectRefusal) {
        self.connect_refused.with_label_values(&[why.label()]).inc();
    }

    /// The denial counter of `kind` and `action` (a session keeps its own
    /// three to count without a lookup).
    pub fn acl_denials(&self, kind: Kind, action: Action) -> IntCounter {
        self.acl_denials
            .with_label_values(&[kind.as_str(), action.as_str()])
    }

    /// The open-sessions gauge of `kind`.
    pub fn sessions_active(&self, kind: Kind) -> IntGauge {
        self.sessions_active.with_label_values(&[kind.as_str()])
    }

    /// Counts one reload of the rules (`ok`: new rules in force; else the
    /// old ones were kept).
    pub fn config_reloaded(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[RELOAD_RESULTS[usize::from(!ok)]])
            .inc();
    }

    /// Counts one session cut because its certificate was revoked.
    pub fn revocation_kicked(&self) {
        self.revocation_kicks.inc();
    }

    /// Brings the CRL metrics up to the watcher's `status` (counters only
    /// move forward).
    pub fn crl_status(&self, status: &CrlStatusSnapshot) {
        for (result, total) in [
            ("ok", status.reloads_ok),
            ("failed", status.reloads_failed),
            ("rollback", status.reloads_rollback),
        ] {
            let c = self.crl_reloads.with_label_values(&[result]);
            let seen = c.get();
            if total > seen {
                c.inc_by(total - seen);
            }
        }
        self.crl_entries
            .set(i64::try_from(status.entries).unwrap_or(i64::MAX));
        self.crl_stale.set(i64::from(status.stale));
    }
}

/// The `/metrics` body of `registry`, in the Prometheus text format
/// ([`CONTENT_TYPE`]). Every shape serves its registry through this.
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding into a Vec fails only for malformed families, which
    // registration already refused.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn series(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_string())
            .collect()
    }

    #[test]
    fn every_shared_metric_and_label_value_is_visible_from_the_start() {
        let r = Registry::new();
        GateMetrics::register(&r).expect("register");
        let text = String::from_utf8(render(&r)).expect("utf-8");
        let names: BTreeSet<_> = r.gather().iter().map(|f| f.name().to_string()).collect();
        let want: BTreeSet<_> = SHARED_METRICS.iter().map(|s| s.to_string()).collect();
        assert_eq!(names, want);
        let s = series(&text);
        for h in Handshake::ALL {
            let line = format!("gatehouse_handshakes_total{{result=\"{}\"}}", h.label());
            assert!(s.contains(&line), "{line} missing in\n{text}");
        }
        for c in ConnectRefusal::ALL {
            let line = format!(
                "gatehouse_connect_refused_total{{reason=\"{}\"}}",
                c.label()
            );
            assert!(s.contains(&line), "{line} missing");
        }
        assert!(s.contains("gatehouse_acl_denials_total{action=\"receive\",kind=\"bootstrap\"}"));
        assert!(s.contains("gatehouse_sessions_active{kind=\"operational\"}"));
        assert!(s.contains("gatehouse_crl_reloads_total{result=\"rollback\"}"));
        // 2 kinds + 10 results + 6 reasons + 6 denials + 1 + 3 + 1 + 1 + 2
        assert_eq!(s.len(), 32, "{text}");
    }

    #[test]
    fn a_second_registration_in_one_registry_is_refused() {
        let r = Registry::new();
        GateMetrics::register(&r).expect("first");
        assert!(GateMetrics::register(&r).is_err());
    }

    #[test]
    fn counts_land_on_their_labels() {
        let r = Registry::new();
        let m = GateMetrics::register(&r).expect("register");
        m.handshake(Handshake::CrlExpired);
        m.connect_refused(ConnectRefusal::ClientId);
        m.acl_denials(Kind::Bootstrap, Action::Subscribe).inc();
        m.sessions_active(Kind::Operational).inc();
        m.revocation_kicked();
        m.config_reloaded(false);
        let text = String::from_utf8(render(&r)).expect("utf-8");
        for line in [
            "gatehouse_handshakes_total{result=\"crl_expired\"} 1",
            "gatehouse_handshakes_total{result=\"ok\"} 0",
            "gatehouse_connect_refused_total{reason=\"client_id\"} 1",
            "gatehouse_acl_denials_total{action=\"subscribe\",kind=\"bootstrap\"} 1",
            "gatehouse_acl_denials_total{action=\"publish\",kind=\"bootstrap\"} 0",
            "gatehouse_sessions_active{kind=\"operational\"} 1",
            "gatehouse_revocation_kicks_total 1",
            "gatehouse_config_reloads_total{result=\"failed\"} 1",
            "gatehouse_config_reloads_total{result=\"ok\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn crl_counters_follow_the_watcher_and_never_go_back() {
        let r = Registry::new();
        let m = GateMetrics::register(&r).expect("register");
        let mut s = CrlStatusSnapshot {
            reloads_ok: 3,
            reloads_failed: 0,
            reloads_rollback: 1,
            stale: true,
            entries: 7,
            last_error: None,
            last_reload: None,
        };
        m.crl_status(&s);
        s.reloads_ok = 2; // a lower figure never moves a counter back
        m.crl_status(&s);
        let text = String::from_utf8(render(&r)).expect("utf-8");
        for line in [
            "gatehouse_crl_reloads_total{result=\"ok\"} 3",
            "gatehouse_crl_reloads_total{result=\"rollback\"} 1",
            "gatehouse_crl_reloads_total{result=\"failed\"} 0",
            "gatehouse_crl_entries 7",
            "gatehouse_crl_stale 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
