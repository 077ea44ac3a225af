//! `gatehouse-mosquitto` builds `libgatehouse_mosquitto.so`, a Mosquitto 2.x
//! plugin (plugin API v5) that gives an existing Mosquitto the same identity,
//! topic rules and live revocation as Gatehouse's embedded broker, from the
//! same `gatehouse.toml` (`plugin_opt_config`).
//!
//! * **Identity at CONNECT** (`MOSQ_EVT_BASIC_AUTH`): the client certificate
//!   from `mosquitto_client_certificate()` is DER-encoded and classified by
//!   `gatehouse-auth`; validity, revocation and the client-id policy of
//!   `gatehouse-acl` are checked; a refusal is CONNACK "not authorized" with
//!   one log line; on success the username becomes the CN and the identity is
//!   cached per client id until `MOSQ_EVT_DISCONNECT`. With
//!   `use_identity_as_username true` Mosquitto skips BASIC_AUTH, so the same
//!   checks run at the client's first ACL check instead.
//! * **Topic rules** (`MOSQ_EVT_ACL_CHECK`): `gatehouse_acl::Acl::decide`,
//!   write → publish, read → receive, subscribe → subscribe.
//! * **Live CRL** (`MOSQ_EVT_TICK`): `gatehouse-auth`'s `CrlWatcher` polls
//!   the CRL on its own thread; each tick applies new revocations by kicking
//!   the sessions that use a revoked serial.
//! * **Reload** (`MOSQ_EVT_RELOAD`, SIGHUP): re-reads the rules.
//! * **Telemetry ingest** (`MOSQ_EVT_MESSAGE`): accepted PUBLISHes on
//!   `ingest.topic_filter` are copied and handed to `gatehouse-ingest`,
//!   which runs on a tokio runtime the plugin owns; the hand-off never waits
//!   (a full queue spools or drops, counted).
//! * **Metrics**: optional `/metrics` listener (`[plugin] metrics`).
//!
//! It does not terminate TLS or verify certificate chains (Mosquitto and
//! OpenSSL do, with the listener's `cafile` and `require_certificate true`),
//! and it never blocks Mosquitto's network thread on the database.
//!
//! This is the only crate of the workspace with `unsafe` code. The FFI fence:
//! [`sys`] holds the raw bindings (bindgen, allowlisted, plus `i2d_X509` and
//! `X509_free`); [`ffi`] is the safe layer (null checks, return codes, the
//! `X509` guard, `catch_unwind`); [`plugin`] holds the logic in safe Rust; the
//! `extern "C"` entry points below only decode pointers and delegate.

mod error;
mod ffi;
mod log;
mod metrics;
mod plugin;
mod sys;
mod telemetry;

use std::ffi::c_void;
use std::os::raw::c_int;

use crate::ffi::{Callback, Level, PluginId, event};
use crate::plugin::Plugin;

/// What `userdata` points to between init and cleanup.
#[derive(Debug)]
struct Loaded {
    id: PluginId,
    plugin: Plugin,
    registered: Vec<(c_int, Callback, &'static str)>,
}

/// The callbacks registered at init; MESSAGE only when the plugin ingests
/// (Mosquitto then skips the per-message event entirely).
fn callbacks(ingest: bool) -> Vec<(c_int, Callback, &'static str)> {
    let mut list = vec![
        (event::BASIC_AUTH, on_basic_auth as Callback, "BASIC_AUTH"),
        (event::ACL_CHECK, on_acl_check as Callback, "ACL_CHECK"),
        (event::TICK, on_tick as Callback, "TICK"),
        (event::DISCONNECT, on_disconnect as Callback, "DISCONNECT"),
        (event::RELOAD, on_reload as Callback, "RELOAD"),
    ];
    if ingest {
        list.push((event::MESSAGE, on_message as Callback, "MESSAGE"));
    }
    list
}

/// Plugin API negotiation: Gatehouse speaks version 5 only.
///
/// # Safety
/// `supported_versions` is NULL or points to `supported_version_count` ints
/// (Mosquitto passes its own static list).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_version(
    supported_version_count: c_int,
    supported_versions: *const c_int,
) -> c_int {
    ffi::guard(-1, || {
        if supported_versions.is_null() || !(1..=64).contains(&supported_version_count) {
            return -1;
        }
        // SAFETY: non-null, and Mosquitto guarantees `supported_version_count`
        // readable ints (checked to be a small positive count above).
        let versions = unsafe {
            std::slice::from_raw_parts(supported_versions, supported_version_count as usize)
        };
        if versions.contains(&5) { 5 } else { -1 }
    })
}

/// Loads `plugin_opt_config`, starts the background threads and registers
/// the callbacks. Any failure is one log line and an error code, which makes
/// Mosquitto refuse to start.
///
/// # Safety
/// Called by Mosquitto with its plugin identifier, a writable `userdata`
/// slot and its `plugin_opt_*` options (`option_count` entries).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_init(
    identifier: *mut sys::mosquitto_plugin_id_t,
    userdata: *mut *mut c_void,
    options: *mut sys::mosquitto_opt,
    option_count: c_int,
) -> c_int {
    ffi::guard(ffi::ERR_UNKNOWN, || {
        log::install();
        // SAFETY: `identifier` is what Mosquitto passed to this init call.
        let id = unsafe { PluginId::from_raw(identifier) };
        let (Some(id), false) = (id, userdata.is_null()) else {
            ffi::log(
                Level::Err,
                "gatehouse: cannot start: Mosquitto passed a NULL plugin identifier or userdata",
            );
            return ffi::ERR_INVAL;
        };
        // SAFETY: Mosquitto passes `option_count` valid options (or NULL).
        let opts = unsafe { ffi::options(options, option_count) };
        let plugin = match Plugin::start(&opts) {
            Ok(p) => p,
            Err(e) => {
                ffi::log(Level::Err, &format!("gatehouse: cannot start: {e}"));
                log::drain();
                return ffi::ERR_INVAL;
            }
        };
        let ingest = plugin.ingests();
        let loaded = Box::into_raw(Box::new(Loaded {
            id,
            plugin,
            registered: Vec::new(),
        }));
        for (ev, cb, name) in callbacks(ingest) {
            let rc = id.register(ev, cb, loaded.cast());
            if rc != ffi::SUCCESS {
                let e = error::PluginError::Register { event: name, rc };
                ffi::log(Level::Err, &format!("gatehouse: cannot start: {e}"));
                // SAFETY: `loaded` came from Box::into_raw above and Mosquitto
                // has not been given it (init fails), so we own it again.
                let loaded = unsafe { Box::from_raw(loaded) };
                shutdown(*loaded);
                return ffi::ERR_UNKNOWN;
            }
            // SAFETY: `loaded` is our live Box; Mosquitto only reads it from
            // callbacks on this same thread, none of which run during init.
            unsafe { (*loaded).registered.push((ev, cb, name)) };
        }
        // SAFETY: `userdata` is non-null (checked) and writable per the API.
        unsafe { *userdata = loaded.cast() };
        // SAFETY: as above; shared read on this thread.
        let p = unsafe { &(*loaded).plugin };
        ffi::log(
            Level::Notice,
            &format!(
                "gatehouse: plugin ready (config {}, ingest {}, CRL {}, metrics {})",
                p.config_path().display(),
                if ingest { "on" } else { "off" },
                p.crl_path()
                    .map_or("off".into(), |c| c.display().to_string()),
                p.metrics_addr()
                    .map_or("off".into(), |a| format!("http://{a}/metrics")),
            ),
        );
        log::drain();
        ffi::SUCCESS
    })
}

/// Unregisters the callbacks and joins the background threads.
///
/// # Safety
/// `userdata` is the value this plugin stored in `mosquitto_plugin_init`
/// (or NULL); it is not used again after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_cleanup(
    userdata: *mut c_void,
    _options: *mut sys::mosquitto_opt,
    _option_count: c_int,
) -> c_int {
    ffi::guard(ffi::ERR_UNKNOWN, || {
        if userdata.is_null() {
            return ffi::SUCCESS;
        }
        // SAFETY: `userdata` is the Box<Loaded> we leaked in init; Mosquitto
        // calls cleanup once, after which no callback receives it.
        let loaded = unsafe { Box::from_raw(userdata.cast::<Loaded>()) };
        shutdown(*loaded)
    })
}

fn shutdown(loaded: Loaded) -> c_int {
    let mut rc = ffi::SUCCESS;
    for (ev, cb, name) in &loaded.registered {
        let r = loaded.id.unregister(*ev, *cb);
        if r != ffi::SUCCESS {
            ffi::log(
                Level::Warning,
                &format!("gatehouse: unregistering the {name} callback failed (error {r})"),
            );
            rc = r;
        }
    }
    loaded.plugin.stop();
    rc
}

/// # Safety
/// `userdata` is NULL or the `Loaded` registered with the callback.
unsafe fn plugin<'a>(userdata: *mut c_void) -> Option<&'a Plugin> {
    // SAFETY: per the contract, a non-null pointer is our live Loaded, which
    // outlives every callback (cleanup unregisters before freeing it).
    unsafe { userdata.cast::<Loaded>().as_ref() }.map(|l| &l.plugin)
}

unsafe extern "C" fn on_basic_auth(
    _event: c_int,
    data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    ffi::guard(ffi::ERR_AUTH, || {
        // SAFETY: Mosquitto passes the userdata we registered and the
        // BASIC_AUTH event struct for this call.
        let (Some(plugin), Some(client)) = (unsafe { plugin(userdata) }, unsafe {
            ffi::basic_auth_client(data)
        }) else {
            return ffi::ERR_AUTH;
        };
        plugin.basic_auth(client)
    })
}

unsafe extern "C" fn on_acl_check(
    _event: c_int,
    data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    ffi::guard(ffi::ERR_ACL_DENIED, || {
        // SAFETY: our userdata and the ACL_CHECK event struct for this call.
        let (Some(plugin), Some(check)) = (unsafe { plugin(userdata) }, unsafe {
            ffi::acl_check_event(data)
        }) else {
            return ffi::ERR_ACL_DENIED;
        };
        plugin.acl_check(check)
    })
}

unsafe extern "C" fn on_tick(_event: c_int, _data: *mut c_void, userdata: *mut c_void) -> c_int {
    ffi::guard(ffi::ERR_UNKNOWN, || {
        // SAFETY: our userdata.
        if let Some(plugin) = unsafe { plugin(userdata) } {
            plugin.tick();
        }
        ffi::SUCCESS
    })
}

unsafe extern "C" fn on_disconnect(
    _event: c_int,
    data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    ffi::guard(ffi::ERR_UNKNOWN, || {
        // SAFETY: our userdata and the DISCONNECT event struct for this call.
        if let (Some(plugin), Some(client)) = (unsafe { plugin(userdata) }, unsafe {
            ffi::disconnect_client(data)
        }) {
            plugin.disconnect(client);
        }
        ffi::SUCCESS
    })
}

unsafe extern "C" fn on_reload(_event: c_int, _data: *mut c_void, userdata: *mut c_void) -> c_int {
    ffi::guard(ffi::ERR_UNKNOWN, || {
        // SAFETY: our userdata. (Mosquitto 2.0 passes no options on reload;
        // the config path from init is used.)
        if let Some(plugin) = unsafe { plugin(userdata) } {
            plugin.reload();
        }
        ffi::SUCCESS
    })
}

unsafe extern "C" fn on_message(_event: c_int, data: *mut c_void, userdata: *mut c_void) -> c_int {
    // A failure here must not refuse the message: ingest is a copy.
    ffi::guard(ffi::SUCCESS, || {
        // SAFETY: our userdata and the MESSAGE event struct for this call.
        if let (Some(plugin), Some(message)) = (unsafe { plugin(userdata) }, unsafe {
            ffi::message_event(data)
        }) {
            plugin.message(message);
        }
        ffi::SUCCESS
    })
}
