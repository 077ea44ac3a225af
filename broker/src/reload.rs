//! SIGHUP: re-read the config file and put its `[identity]` and `[acl]` in
//! force for every open and future session, as the Mosquitto plugin does. A
//! broken file is refused with one line and the rules in force stay.

use gatehouse_config::Config;
use gatehouse_gate::{ReloadRefused, RulesInForce};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::server::Shared;

/// The SIGHUP stream, installed at once so a SIGHUP during start-up does
/// not kill the broker (the default action) but reloads once it runs.
pub(crate) fn install() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler: rules cannot be reloaded without a restart");
            None
        }
    }
}

/// Reloads on every SIGHUP until the stream ends.
pub(crate) async fn on_sighup(mut hup: Signal, shared: std::sync::Arc<Shared>) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading [identity] and [acl]");
        reload(&shared);
    }
}

/// Re-reads `shared.config.source` and swaps in its rules.
pub(crate) fn reload(shared: &Shared) {
    let Some(path) = shared.config.source.as_deref() else {
        shared.metrics.gate.emit(ReloadRefused {
            path: None,
            error: &"gatehouse runs on built-in defaults (no config file); start it with --config FILE to change rules without a restart",
        });
        return;
    };
    match shared.policy.reload(path) {
        Ok(config) => shared.metrics.gate.emit(RulesInForce {
            path: Some(path),
            config: &config,
            reloaded: true,
            restart_needed: &needs_restart(&shared.config, &config),
        }),
        Err(e) => shared.metrics.gate.emit(ReloadRefused {
            path: Some(path),
            error: &e,
        }),
    }
}

/// The sections of `new` that differ from the ones the broker started with
/// and that a reload does not apply.
fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    [
        ("data_dir", running.data_dir != new.data_dir),
        ("[tls]", running.tls != new.tls),
        ("[listeners]", running.listeners != new.listeners),
        ("[mqtt]", running.mqtt != new.mqtt),
        ("[ingest]", running.ingest != new.ingest),
        ("[provisioning]", running.provisioning != new.provisioning),
    ]
    .into_iter()
    .filter_map(|(section, changed)| changed.then_some(section))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sections_a_reload_does_not_apply_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, "[acl.operational]\npublish = [\"x/{cn}\"]\n").unwrap();
        let running = Config::load(&path).unwrap();
        std::fs::write(
            &path,
            "[acl.operational]\npublish = [\"y/{cn}\"]\n[identity]\noperational_client_id = \"any\"\n",
        )
        .unwrap();
        assert!(needs_restart(&running, &Config::load(&path).unwrap()).is_empty());
        std::fs::write(
            &path,
            "[mqtt]\nmax_packet_size = 4096\n[listeners]\nmax_connections = 7\n",
        )
        .unwrap();
        assert_eq!(
            needs_restart(&running, &Config::load(&path).unwrap()),
            ["[listeners]", "[mqtt]"]
        );
    }
}
