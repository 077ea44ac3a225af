//! What the gate decided, told once: each event counts itself in
//! [`GateMetrics`] and writes its one log line, with the same words and
//! fields in both shapes (the broker's log is `tracing`'s; the plugin's
//! `tracing` subscriber writes into Mosquitto's log). A shape says *that*
//! something happened by emitting the event; it never formats the line or
//! picks the counter itself.
//!
//! ```text
//! metrics.emit(Refused { client_id: Some("GW1-EEFF"), peer: None, stage: Stage::Connect, refusal: &why });
//! ```

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;

use gatehouse_auth::Serial;
use gatehouse_config::Config;

use crate::admission::Refusal;
use crate::metrics::GateMetrics;
use crate::outcome::{ConnectRefusal, Handshake};
use crate::policy::whole_tree_warnings;

/// Something the gate decided that is counted and logged.
pub trait GateEvent {
    /// Counts the event in `metrics` and writes its log line.
    fn emit(self, metrics: &GateMetrics);
}

impl GateMetrics {
    /// Counts and logs `event` (see [`GateEvent`]).
    pub fn emit(&self, event: impl GateEvent) {
        event.emit(self);
    }
}

/// A client certificate passed every check (chain, identity, validity,
/// revocation). Counted; not logged (the session's own lines follow).
#[derive(Debug, Clone, Copy)]
pub struct CertificateAccepted;

impl GateEvent for CertificateAccepted {
    fn emit(self, m: &GateMetrics) {
        m.handshake(Handshake::Ok);
    }
}

/// Where in the admission a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The embedded broker's TLS handshake (no client id known yet).
    Handshake,
    /// The CONNECT packet.
    Connect,
    /// The first request of a session Mosquitto admitted without asking
    /// the plugin (`use_identity_as_username`).
    FirstRequest,
}

impl Stage {
    fn words(self) -> &'static str {
        match self {
            Stage::Handshake => "at the TLS handshake",
            Stage::Connect => "at CONNECT",
            Stage::FirstRequest => "at its first request",
        }
    }
}

/// Why a client was refused: a step of the ordered admission, or a check
/// only a shape makes (the broker's will and protocol checks, Mosquitto
/// failing to take the username).
#[derive(Clone, Copy)]
pub enum Why<'a> {
    /// A step of the ordered admission refused.
    Admission(&'a Refusal),
    /// The certificate check failed with `outcome` (the broker's TLS layer
    /// decides these before the gate sees a certificate).
    Certificate {
        outcome: Handshake,
        detail: &'a (dyn Display + Sync),
    },
    /// A good certificate, but the CONNECT was refused for `reason`.
    Connect {
        reason: ConnectRefusal,
        detail: &'a (dyn Display + Sync),
    },
}

impl Why<'_> {
    /// `Err`: a failed certificate check; `Ok`: a CONNECT refused after a
    /// good certificate (as [`Refusal::outcome`]).
    pub fn outcome(&self) -> Result<ConnectRefusal, Handshake> {
        match self {
            Why::Admission(r) => r.outcome(),
            Why::Certificate { outcome, .. } => Err(*outcome),
            Why::Connect { reason, .. } => Ok(*reason),
        }
    }
}

impl std::fmt::Debug for Why<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Why({:?}: {self})", self.outcome())
    }
}

impl Display for Why<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Admission(r) => r.fmt(f),
            Why::Certificate { detail, .. } | Why::Connect { detail, .. } => detail.fmt(f),
        }
    }
}

/// A client not admitted. Counted in `gatehouse_handshakes_total{result}`
/// or, after a good certificate (which is then counted as `ok`), in
/// `gatehouse_connect_refused_total{reason}`; logged at WARN as
/// `refused client "ID" at CONNECT: why` (a handshake that is not TLS at all
/// only at DEBUG: port scanners are not news).
#[derive(Debug, Clone, Copy)]
pub struct Refused<'a> {
    /// The client id, once the CONNECT was read.
    pub client_id: Option<&'a str>,
    /// The peer address, where the shape knows it.
    pub peer: Option<SocketAddr>,
    pub stage: Stage,
    pub why: Why<'a>,
}

impl GateEvent for Refused<'_> {
    fn emit(self, m: &GateMetrics) {
        let outcome = self.why.outcome();
        match outcome {
            Err(handshake) => m.handshake(handshake),
            Ok(reason) => {
                m.handshake(Handshake::Ok);
                m.connect_refused(reason);
            }
        }
        let label = match outcome {
            Err(h) => h.label(),
            Ok(r) => r.label(),
        };
        let stage = self.stage.words();
        let why = self.why;
        let peer = self.peer.map(tracing::field::display);
        match self.client_id {
            Some(id) => {
                tracing::warn!(
                    peer,
                    outcome = label,
                    "refused client {id:?} {stage}: {why}"
                )
            }
            None if outcome == Err(Handshake::Failed) => {
                tracing::debug!(peer, outcome = label, "refused a connection {stage}: {why}")
            }
            None => tracing::warn!(peer, outcome = label, "refused a client {stage}: {why}"),
        }
    }
}

/// An open session cut because its certificate was revoked. Counted in
/// `gatehouse_revocation_kicks_total`; logged at WARN.
#[derive(Debug, Clone, Copy)]
pub struct RevokedSessionCut<'a> {
    pub client_id: &'a str,
    pub serial: &'a Serial,
    /// The session had already ended when the cut reached it.
    pub already_gone: bool,
}

impl GateEvent for RevokedSessionCut<'_> {
    fn emit(self, m: &GateMetrics) {
        m.revocation_kicked();
        let id = self.client_id;
        let serial = self.serial;
        let gone = if self.already_gone {
            " (already gone)"
        } else {
            ""
        };
        tracing::warn!("disconnected client {id:?}: certificate serial {serial} was revoked{gone}");
    }
}

/// `[identity]` and `[acl]` of `path` are in force (at start, or after a
/// reload). Warns about every rule granting `#`; after a reload, counted in
/// `gatehouse_config_reloads_total{result="ok"}` and logged, naming the
/// changed sections that only a restart applies.
#[derive(Debug, Clone, Copy)]
pub struct RulesInForce<'a> {
    pub path: Option<&'a Path>,
    pub config: &'a Config,
    /// `false` at start.
    pub reloaded: bool,
    /// Sections that changed but take effect only after a restart.
    pub restart_needed: &'a [&'a str],
}

impl GateEvent for RulesInForce<'_> {
    fn emit(self, m: &GateMetrics) {
        for line in whole_tree_warnings(self.config) {
            tracing::warn!("{line}");
        }
        if !self.reloaded {
            return;
        }
        m.config_reloaded(true);
        let path = self.path.map(|p| tracing::field::display(p.display()));
        if self.restart_needed.is_empty() {
            tracing::info!(path, "reloaded: new [identity] and [acl] rules in force");
        } else {
            let later = self.restart_needed.join(", ");
            tracing::warn!(
                path,
                "reloaded: new [identity] and [acl] rules in force; changes to {later} take effect only after a restart"
            );
        }
    }
}

/// A reload that kept the rules in force (`error` says what to fix).
/// Counted in `gatehouse_config_reloads_total{result="failed"}`; logged at
/// ERROR.
#[derive(Clone, Copy)]
pub struct ReloadRefused<'a> {
    pub path: Option<&'a Path>,
    pub error: &'a (dyn Display + Sync),
}

impl std::fmt::Debug for ReloadRefused<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadRefused")
            .field("path", &self.path)
            .field("error", &self.error.to_string())
            .finish()
    }
}

impl GateEvent for ReloadRefused<'_> {
    fn emit(self, m: &GateMetrics) {
        m.config_reloaded(false);
        let error = self.error;
        let path = self.path.map(|p| tracing::field::display(p.display()));
        tracing::error!(path, "reload refused, keeping the previous rules: {error}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use gatehouse_acl::ClientIdError;
    use prometheus::Registry;
    use tracing::field::{Field, Visit};
    use tracing::{Event, Metadata, Subscriber};

    use super::*;
    use crate::metrics::render;

    /// Lines as `LEVEL message key=value...`, captured from `tracing`.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);

    struct Line(String);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0.push_str(&format!(" {value:?}"));
            } else {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut line = Line(event.metadata().level().to_string());
            event.record(&mut line);
            self.0.lock().unwrap().push(line.0);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    fn emitted(event: impl GateEvent) -> (Vec<String>, String) {
        let r = Registry::new();
        let m = GateMetrics::register(&r).unwrap();
        let capture = Capture::default();
        tracing::subscriber::with_default(capture.clone(), || m.emit(event));
        let lines = capture.0.lock().unwrap().clone();
        let text = String::from_utf8(render(&r)).unwrap();
        let counted = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("\n");
        (lines, counted)
    }

    #[test]
    fn a_client_id_refusal_counts_a_good_certificate_and_the_reason() {
        let refusal = Refusal::ClientId(ClientIdError::Unsafe {
            client_id: "a+b".into(),
        });
        let (lines, counted) = emitted(Refused {
            client_id: Some("a+b"),
            peer: None,
            stage: Stage::Connect,
            why: Why::Admission(&refusal),
        });
        assert_eq!(
            counted,
            "gatehouse_connect_refused_total{reason=\"client_id\"} 1\n\
             gatehouse_handshakes_total{result=\"ok\"} 1"
        );
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(&format!(
                "WARN refused client \"a+b\" at CONNECT: {refusal}"
            )),
            "{lines:?}"
        );
        assert!(lines[0].ends_with("outcome=\"client_id\""), "{lines:?}");
    }

    #[test]
    fn a_certificate_refusal_counts_its_result_and_names_the_peer() {
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let (lines, counted) = emitted(Refused {
            client_id: None,
            peer: Some(peer),
            stage: Stage::Handshake,
            why: Why::Certificate {
                outcome: Handshake::Revoked,
                detail: &"certificate serial 0a is revoked",
            },
        });
        assert_eq!(counted, "gatehouse_handshakes_total{result=\"revoked\"} 1");
        assert_eq!(
            lines,
            [
                "WARN refused a client at the TLS handshake: certificate serial 0a is revoked peer=192.0.2.7:40000 outcome=\"revoked\""
            ]
        );
    }

    #[test]
    fn a_connection_that_is_not_tls_is_counted_but_only_logged_at_debug() {
        let (lines, counted) = emitted(Refused {
            client_id: None,
            peer: None,
            stage: Stage::Handshake,
            why: Why::Certificate {
                outcome: Handshake::Failed,
                detail: &"not TLS",
            },
        });
        assert_eq!(counted, "gatehouse_handshakes_total{result=\"failed\"} 1");
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("DEBUG "), "{lines:?}");
    }

    #[test]
    fn a_cut_counts_one_kick_and_says_which_serial() {
        let serial = Serial::from_u64(0x0a0b);
        let (lines, counted) = emitted(RevokedSessionCut {
            client_id: "GW1-EEFF",
            serial: &serial,
            already_gone: true,
        });
        assert_eq!(counted, "gatehouse_revocation_kicks_total 1");
        assert_eq!(
            lines,
            [format!(
                "WARN disconnected client \"GW1-EEFF\": certificate serial {serial} was revoked (already gone)"
            )]
        );
    }

    #[test]
    fn rules_in_force_at_start_only_warn_and_after_a_reload_also_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, "[acl.operational]\nsubscribe = [\"#\"]\n").unwrap();
        let config = Config::load(&path).unwrap();
        let start = RulesInForce {
            path: Some(&path),
            config: &config,
            reloaded: false,
            restart_needed: &[],
        };
        let (lines, counted) = emitted(start);
        assert_eq!(counted, "");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("WARN ") && lines[0].contains('#'),
            "{lines:?}"
        );

        let (lines, counted) = emitted(RulesInForce {
            reloaded: true,
            restart_needed: &["[mqtt]", "[ingest]"],
            ..start
        });
        assert_eq!(counted, "gatehouse_config_reloads_total{result=\"ok\"} 1");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[1].starts_with(
                "WARN reloaded: new [identity] and [acl] rules in force; changes to [mqtt], [ingest] take effect only after a restart"
            ),
            "{lines:?}"
        );
    }

    #[test]
    fn a_refused_reload_counts_failed_and_says_why() {
        let (lines, counted) = emitted(ReloadRefused {
            path: None,
            error: &"line 3: unknown key",
        });
        assert_eq!(
            counted,
            "gatehouse_config_reloads_total{result=\"failed\"} 1"
        );
        assert_eq!(
            lines,
            ["ERROR reload refused, keeping the previous rules: line 3: unknown key"]
        );
    }
}
