//! The plugin's state and its event handlers, in safe Rust. `lib.rs` turns
//! Mosquitto's C callbacks into calls on [`Plugin`]; nothing here touches a
//! raw pointer.
//!
//! Threads: every handler runs on Mosquitto's single network thread. The CRL
//! watcher (from `gatehouse-auth`) and the metrics listener run on their own
//! threads and share only lock-free handles and atomics with the handlers.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_acl::{Action, Subject};
use gatehouse_auth::{CrlWatcher, Identity, Kind, RevocationHandle, RevocationUpdate, Serial};
use gatehouse_config::Config;
use gatehouse_gate::{
    CertificateAccepted, CrlEvent, Policy, PolicyHandle, Refused, ReloadRefused, RevokedSessionCut,
    RulesInForce, SessionIndex, Stage, start_revocation,
};
use time::OffsetDateTime;
use tokio::sync::broadcast::{Receiver, error::TryRecvError};

use crate::error::{PluginError, Refusal};
use crate::ffi::{self, Access, AclCheck, Client, Level, Message, Rc};
use crate::log;
use crate::metrics::{Metrics, MetricsServer};
use crate::telemetry::Telemetry;

/// How often CRL counters are copied into the metrics.
const CRL_METRICS_EVERY: Duration = Duration::from_secs(1);

/// An identified client, cached by client id until DISCONNECT.
#[derive(Debug)]
struct Session {
    /// The `struct mosquitto *` it was identified on (as a number).
    key: usize,
    /// Username when identified (with `use_identity_as_username`, the CN
    /// Mosquitto set): guards against a reused client object.
    username: Option<String>,
    kind: Kind,
    cn: String,
    serial: Serial,
}

#[derive(Debug)]
struct State {
    sessions: HashMap<String, Session>,
    /// The same sessions by certificate serial (client ids): whom a CRL
    /// change cuts.
    by_serial: SessionIndex<String>,
    /// Client objects refused at an ACL check (use_identity_as_username):
    /// denied without re-logging until they are gone.
    refused: HashSet<usize>,
    /// Client ids to disconnect on the next TICK.
    pending_kicks: Vec<String>,
    updates: Receiver<RevocationUpdate>,
    crl_metrics_at: Instant,
}

impl State {
    /// Caches `session` under `client_id`; the session it replaces, if any.
    fn add(&mut self, client_id: String, session: Session) -> Option<Session> {
        self.by_serial.insert(session.serial, client_id.clone());
        let old = self.sessions.insert(client_id.clone(), session)?;
        self.by_serial.remove(&old.serial, |id| *id == client_id);
        Some(old)
    }

    /// Forgets the session of `client_id`.
    fn take(&mut self, client_id: &str) -> Option<Session> {
        let s = self.sessions.remove(client_id)?;
        self.by_serial.remove(&s.serial, |id| id == client_id);
        Some(s)
    }
}

/// Settings that take effect only at start-up, to warn when RELOAD sees
/// them changed.
#[derive(Debug, PartialEq)]
struct Fixed {
    crl: Option<PathBuf>,
    ca: PathBuf,
    plugin: gatehouse_config::PluginSettings,
    ingest: gatehouse_config::IngestSettings,
}

impl Fixed {
    fn of(config: &Config) -> Fixed {
        Fixed {
            crl: config.tls.crl.clone(),
            ca: config.tls.ca.clone(),
            plugin: config.plugin.clone(),
            ingest: config.ingest.clone(),
        }
    }

    /// The sections of `new` that differ from these and that a reload does
    /// not apply.
    fn changed_in(&self, new: &Config) -> Vec<&'static str> {
        let new = Fixed::of(new);
        [
            ("[tls] ca/crl", (&self.ca, &self.crl) != (&new.ca, &new.crl)),
            ("[plugin]", self.plugin != new.plugin),
            ("[ingest]", self.ingest != new.ingest),
        ]
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect()
    }
}

/// Everything the plugin owns between `mosquitto_plugin_init` and
/// `mosquitto_plugin_cleanup`.
#[derive(Debug)]
pub(crate) struct Plugin {
    config_path: PathBuf,
    /// `[identity]` and `[acl]` in force, swapped as a whole on RELOAD.
    policy: PolicyHandle,
    fixed: Fixed,
    revocation: RevocationHandle,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    watcher: Option<CrlWatcher>,
    server: Option<MetricsServer>,
    telemetry: Option<Telemetry>,
}

impl Plugin {
    /// Reads the options and the config file, starts the CRL watcher and the
    /// metrics listener.
    pub(crate) fn start(options: &[(String, String)]) -> Result<Plugin, PluginError> {
        let mut config_path = None;
        for (key, value) in options {
            match key.as_str() {
                "config" => config_path = Some(PathBuf::from(value)),
                other => return Err(PluginError::UnknownOption(other.to_string())),
            }
        }
        let config_path = config_path
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or(PluginError::NoConfigOption)?;
        let config = Config::load(&config_path)?;
        let policy = PolicyHandle::new(Policy::from_config(&config)?);

        let (revocation, watcher) = start_revocation(&config.tls)?;
        let metrics = Arc::new(Metrics::new());
        metrics.gate.emit(RulesInForce {
            path: Some(&config_path),
            config: &config,
            reloaded: false,
            restart_needed: &[],
        });
        let server = match config.plugin.metrics {
            Some(addr) => Some(MetricsServer::start(addr, metrics.clone())?),
            None => None,
        };
        metrics.crl_status(&revocation.status());
        let telemetry = if config.ingest.enabled {
            Some(Telemetry::start(&config.ingest, metrics.registry())?)
        } else {
            tracing::info!("[ingest] enabled = false: telemetry is not stored by this broker");
            None
        };
        let state = State {
            sessions: HashMap::new(),
            by_serial: SessionIndex::default(),
            refused: HashSet::new(),
            pending_kicks: Vec::new(),
            updates: revocation.subscribe(),
            crl_metrics_at: Instant::now(),
        };
        Ok(Plugin {
            config_path,
            policy,
            fixed: Fixed::of(&config),
            revocation,
            metrics,
            state: Mutex::new(state),
            watcher,
            server,
            telemetry,
        })
    }

    pub(crate) fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub(crate) fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().map(MetricsServer::addr)
    }

    /// Whether telemetry ingest runs (`[ingest] enabled`).
    pub(crate) fn ingests(&self) -> bool {
        self.telemetry.is_some()
    }

    pub(crate) fn crl_path(&self) -> Option<&Path> {
        self.watcher.as_ref().map(CrlWatcher::path)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The gate's ordered admission of the certificate Mosquitto verified:
    /// identity and validity, revocation, client id.
    fn identify(&self, client: &Client, client_id: &str) -> Result<Identity, Refusal> {
        let der = client.certificate_der()?.ok_or(Refusal::NoCertificate)?;
        Ok(self.policy.load().admit(
            &self.revocation,
            &der,
            client_id,
            OffsetDateTime::now_utc(),
        )?)
    }

    fn refuse_log(&self, client_id: &str, stage: Stage, why: &Refusal) {
        self.metrics.gate.emit(Refused {
            client_id: Some(client_id),
            peer: None,
            stage,
            why: why.why(),
        });
    }

    /// MOSQ_EVT_BASIC_AUTH: runs for every CONNECT on a listener without
    /// `use_identity_as_username`. Refusing makes Mosquitto answer CONNACK
    /// "not authorized".
    pub(crate) fn basic_auth(&self, client: Client) -> Rc {
        // No client id is refused by the client-id check like an empty one.
        let client_id = client.id().unwrap_or_default();
        let mut state = self.state();
        let identity = match self.identify(&client, &client_id) {
            Ok(id) => id,
            Err(why) => {
                drop(state);
                self.refuse_log(&client_id, Stage::Connect, &why);
                return ffi::ERR_AUTH;
            }
        };
        if let Err(rc) = client.set_username(&identity.cn) {
            drop(state);
            self.refuse_log(&client_id, Stage::Connect, &Refusal::Username(rc));
            return ffi::ERR_AUTH;
        }
        self.metrics.gate.emit(CertificateAccepted);
        self.insert(&mut state, &client, client_id, identity);
        ffi::SUCCESS
    }

    fn insert(&self, state: &mut State, client: &Client, client_id: String, identity: Identity) {
        self.metrics.session_opened(identity.kind);
        let session = Session {
            key: client.key(),
            username: client.username(),
            kind: identity.kind,
            cn: identity.cn,
            serial: identity.serial,
        };
        if let Some(old) = state.add(client_id, session) {
            self.metrics.session_closed(old.kind);
        }
    }

    /// MOSQ_EVT_ACL_CHECK.
    pub(crate) fn acl_check(&self, check: AclCheck<'_>) -> Rc {
        let action = match check.access {
            Access::Write => Action::Publish,
            Access::Read => Action::Receive,
            Access::Subscribe => Action::Subscribe,
            // Dropping a subscription never widens access.
            Access::Unsubscribe => return ffi::SUCCESS,
            Access::Other(_) => return ffi::ERR_ACL_DENIED,
        };
        let client = check.client;
        // Borrowed, not copied: this runs for every publish and every
        // delivery.
        let Some(client_id) = client.id_str() else {
            return ffi::ERR_ACL_DENIED;
        };
        let mut state = self.state();
        let cached = state.sessions.get(client_id).is_some_and(|s| {
            s.key == client.key() && s.username.as_deref() == client.username_str()
        });
        if !cached {
            // use_identity_as_username: Mosquitto skipped BASIC_AUTH, so this
            // is the first time the plugin sees the client.
            if state.refused.contains(&client.key()) {
                return ffi::ERR_ACL_DENIED;
            }
            match self.identify(&client, client_id) {
                Ok(identity) => {
                    self.metrics.gate.emit(CertificateAccepted);
                    self.insert(&mut state, &client, client_id.to_owned(), identity);
                }
                Err(why) => {
                    state.refused.insert(client.key());
                    state.pending_kicks.push(client_id.to_owned());
                    drop(state);
                    self.refuse_log(client_id, Stage::FirstRequest, &why);
                    return ffi::ERR_ACL_DENIED;
                }
            }
        }
        let Some(session) = state.sessions.get(client_id) else {
            return ffi::ERR_ACL_DENIED;
        };
        // A revoked session is refused even before the TICK that kicks it.
        let subject = Subject::new(session.kind, &session.cn, client_id);
        let decision = self.policy.load().decide(
            &self.revocation,
            &subject,
            &session.serial,
            action,
            check.topic,
        );
        if decision.is_allowed() {
            ffi::SUCCESS
        } else {
            self.metrics.gate.acl_denials(session.kind, action).inc();
            ffi::ERR_ACL_DENIED
        }
    }

    /// MOSQ_EVT_MESSAGE: a PUBLISH Mosquitto accepted. Those on the ingest
    /// topic filter, from an identified client whose rules allow them, are
    /// handed to ingest with the certificate's CN as the gateway code.
    pub(crate) fn message(&self, message: Message) {
        let Some(telemetry) = &self.telemetry else {
            return;
        };
        let Some(topic) = telemetry.ingested(&message.topic) else {
            return;
        };
        let Some(client_id) = message.client.id() else {
            return;
        };
        let cn = {
            let state = self.state();
            let Some(session) = state
                .sessions
                .get(&client_id)
                .filter(|s| s.key == message.client.key())
            else {
                return;
            };
            // ACL_CHECK allowed this publish already; checking again costs
            // ~100 ns and keeps a denied message out of the database even if
            // Mosquitto's event order ever changes.
            let subject = Subject::new(session.kind, &session.cn, &client_id);
            if !self
                .policy
                .load()
                .decide(
                    &self.revocation,
                    &subject,
                    &session.serial,
                    Action::Publish,
                    &message.topic,
                )
                .is_allowed()
            {
                return;
            }
            session.cn.clone()
        };
        telemetry.submit(&cn, topic, message.payload);
    }

    /// MOSQ_EVT_DISCONNECT: forget the client's identity.
    pub(crate) fn disconnect(&self, client: Client) {
        let mut state = self.state();
        state.refused.remove(&client.key());
        let Some(client_id) = client.id() else {
            return;
        };
        if state
            .sessions
            .get(&client_id)
            .is_some_and(|s| s.key == client.key())
        {
            if let Some(s) = state.take(&client_id) {
                self.metrics.session_closed(s.kind);
            }
        }
    }

    /// MOSQ_EVT_TICK: flush queued log lines, apply CRL updates by kicking
    /// revoked sessions, kick clients refused at an ACL check, refresh CRL
    /// metrics.
    pub(crate) fn tick(&self) {
        log::drain();
        let kicks = {
            let mut state = self.state();
            let mut newly_revoked: Vec<Serial> = Vec::new();
            let mut missed = false;
            loop {
                match state.updates.try_recv() {
                    Ok(update) => newly_revoked.extend_from_slice(&update.newly_revoked),
                    Err(TryRecvError::Lagged(_)) => missed = true,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            let mut kicks: Vec<(String, Option<Serial>)> =
                state.pending_kicks.drain(..).map(|id| (id, None)).collect();
            let in_force = self.revocation.current();
            let event = if missed {
                CrlEvent::Missed(&in_force)
            } else {
                CrlEvent::Revoked(&newly_revoked)
            };
            let revoked: Vec<String> = state
                .by_serial
                .to_cut(event)
                .into_iter()
                .map(|(_, id)| id.clone())
                .collect();
            for id in revoked {
                if let Some(s) = state.take(&id) {
                    self.metrics.session_closed(s.kind);
                    kicks.push((id, Some(s.serial)));
                }
            }
            if state.crl_metrics_at.elapsed() >= CRL_METRICS_EVERY {
                state.crl_metrics_at = Instant::now();
                self.metrics.crl_status(&self.revocation.status());
            }
            kicks
        };
        // Kicking re-enters the DISCONNECT handler: no lock held here.
        for (client_id, serial) in kicks {
            let rc = ffi::kick(&client_id);
            match serial {
                Some(serial) => self.metrics.gate.emit(RevokedSessionCut {
                    client_id: &client_id,
                    serial: &serial,
                    already_gone: rc != ffi::SUCCESS,
                }),
                None if rc == ffi::SUCCESS || rc == ffi::ERR_NOT_FOUND => {}
                None => ffi::log(
                    Level::Warning,
                    &format!(
                        "gatehouse: could not disconnect refused client {client_id:?} (error {rc})"
                    ),
                ),
            }
        }
    }

    /// MOSQ_EVT_RELOAD (SIGHUP): re-read gatehouse.toml and swap in the new
    /// identity and topic rules. A bad file is logged and the old rules stay.
    pub(crate) fn reload(&self) {
        let path = Some(self.config_path.as_path());
        match self.policy.reload(&self.config_path) {
            Ok(config) => self.metrics.gate.emit(RulesInForce {
                path,
                config: &config,
                reloaded: true,
                restart_needed: &self.fixed.changed_in(&config),
            }),
            Err(error) => self.metrics.gate.emit(ReloadRefused {
                path,
                error: &error,
            }),
        }
    }

    /// Stops the background threads (CRL watcher, metrics listener, ingest
    /// after flushing what is queued) and waits for them.
    pub(crate) fn stop(mut self) {
        if let Some(t) = self.telemetry.take() {
            t.stop();
        }
        if let Some(w) = self.watcher.take() {
            w.stop();
        }
        drop(self.server.take());
        log::drain();
    }
}
