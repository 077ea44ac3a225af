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

/// Generates an event callback: the whole body runs under
/// [`ffi::guard`] (a panic returns `guard`'s code to Mosquitto instead of
/// unwinding into C); the userdata and, for events that carry one, the event
/// struct are decoded, and when either is missing the callback returns
/// `missing` without calling the plugin.
macro_rules! event_callback {
    ($name:ident, guard = $on_panic:expr, missing = $missing:expr, data = $decode:path,
     |$plugin:ident, $arg:ident| $body:expr) => {
        unsafe extern "C" fn $name(
            _event: c_int,
            data: *mut c_void,
            userdata: *mut c_void,
        ) -> c_int {
            ffi::guard($on_panic, || {
                // SAFETY: Mosquitto calls a callback with the userdata it was
                // registered with (our live `Loaded`, see `plugin`) and, as
                // `data`, the event struct of the event it was registered
                // for, which is what `$decode` reads.
                let decoded = unsafe { (plugin(userdata), $decode(data)) };
                let (Some($plugin), Some($arg)) = decoded else {
                    return $missing;
                };
                $body
            })
        }
    };
    ($name:ident, guard = $on_panic:expr, |$plugin:ident| $body:expr) => {
        unsafe extern "C" fn $name(
            _event: c_int,
            _data: *mut c_void,
            userdata: *mut c_void,
        ) -> c_int {
            ffi::guard($on_panic, || {
                // SAFETY: Mosquitto calls a callback with the userdata it was
                // registered with (our live `Loaded`, see `plugin`).
                let Some($plugin) = (unsafe { plugin(userdata) }) else {
                    return ffi::SUCCESS;
                };
                $body
            })
        }
    };
}

// A refused or undecodable CONNECT is "not authorized".
event_callback!(
    on_basic_auth,
    guard = ffi::ERR_AUTH,
    missing = ffi::ERR_AUTH,
    data = ffi::basic_auth_client,
    |plugin, client| plugin.basic_auth(client)
);

// Anything undecidable is denied.
event_callback!(
    on_acl_check,
    guard = ffi::ERR_ACL_DENIED,
    missing = ffi::ERR_ACL_DENIED,
    data = ffi::acl_check_event,
    |plugin, check| plugin.acl_check(check)
);

event_callback!(on_tick, guard = ffi::ERR_UNKNOWN, |plugin| {
    plugin.tick();
    ffi::SUCCESS
});

event_callback!(
    on_disconnect,
    guard = ffi::ERR_UNKNOWN,
    missing = ffi::SUCCESS,
    data = ffi::disconnect_client,
    |plugin, client| {
        plugin.disconnect(client);
        ffi::SUCCESS
    }
);

// Mosquitto 2.0 passes no options on reload: the config path from init is used.
event_callback!(on_reload, guard = ffi::ERR_UNKNOWN, |plugin| {
    plugin.reload();
    ffi::SUCCESS
});

// A failure here must not refuse the message: ingest is a copy.
event_callback!(
    on_message,
    guard = ffi::SUCCESS,
    missing = ffi::SUCCESS,
    data = ffi::message_event,
    |plugin, message| {
        plugin.message(message);
        ffi::SUCCESS
    }
);
