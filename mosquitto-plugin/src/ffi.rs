//! The safe layer over [`crate::sys`]: every raw Mosquitto/OpenSSL call the
//! plugin makes goes through a function here, which checks pointers and
//! return codes. Callers above this module hold no `unsafe`.

use std::ffi::{CStr, CString, c_void};
use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::sys;

/// A Mosquitto return code (`MOSQ_ERR_*`).
pub(crate) type Rc = c_int;

pub(crate) const SUCCESS: Rc = sys::MOSQ_ERR_SUCCESS;
pub(crate) const ERR_AUTH: Rc = sys::MOSQ_ERR_AUTH;
pub(crate) const ERR_ACL_DENIED: Rc = sys::MOSQ_ERR_ACL_DENIED;
pub(crate) const ERR_UNKNOWN: Rc = sys::MOSQ_ERR_UNKNOWN;
pub(crate) const ERR_INVAL: Rc = sys::MOSQ_ERR_INVAL;
pub(crate) const ERR_NOT_FOUND: Rc = sys::MOSQ_ERR_NOT_FOUND;

/// Runs `f`, turning a panic into `on_panic` (a Mosquitto error code): a
/// panic must never unwind into Mosquitto's C frames.
pub(crate) fn guard(on_panic: Rc, f: impl FnOnce() -> Rc) -> Rc {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(rc) => rc,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into())
                .escape_debug()
                .to_string();
            // Logging itself must not panic again here.
            let _ = catch_unwind(|| {
                log(
                    Level::Err,
                    &format!(
                        "gatehouse: internal error (panic: {what}); the callback returned error code {on_panic} to Mosquitto"
                    ),
                )
            });
            on_panic
        }
    }
}

/// Mosquitto log levels the plugin uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Debug,
    Info,
    Notice,
    Warning,
    Err,
}

impl Level {
    fn raw(self) -> c_int {
        (match self {
            Level::Debug => sys::MOSQ_LOG_DEBUG,
            Level::Info => sys::MOSQ_LOG_INFO,
            Level::Notice => sys::MOSQ_LOG_NOTICE,
            Level::Warning => sys::MOSQ_LOG_WARNING,
            Level::Err => sys::MOSQ_LOG_ERR,
        }) as c_int
    }
}

/// Writes one line to Mosquitto's log. Call only from Mosquitto's own
/// thread (plugin callbacks); other threads queue through `crate::log`.
pub(crate) fn log(level: Level, message: &str) {
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: the format is a static NUL-terminated "%s" and the single
    // variadic argument is a valid NUL-terminated C string that outlives the
    // call; mosquitto_log_printf copies what it formats.
    unsafe { sys::mosquitto_log_printf(level.raw(), c"%s".as_ptr(), text.as_ptr()) };
}

/// Copies a C string; `None` for NULL or non-UTF-8.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string valid for the call.
unsafe fn string_from(ptr: *const std::os::raw::c_char) -> Option<String> {
    // SAFETY: the same contract; the borrow ends here with the copy.
    unsafe { str_from(ptr) }.map(str::to_owned)
}

/// # Safety
/// As [`string_from`], and the returned borrow must not outlive the string
/// (for Mosquitto's strings: the current callback).
unsafe fn str_from<'a>(ptr: *const std::os::raw::c_char) -> Option<&'a str> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per this function's contract.
    unsafe { CStr::from_ptr(ptr) }.to_str().ok()
}

/// A borrowed `struct mosquitto *` handed to a callback; valid for the
/// duration of that callback only (never stored: the plugin keys its state
/// by [`Client::key`], a plain number).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client {
    ptr: *mut sys::mosquitto,
}

impl Client {
    /// # Safety
    /// `ptr` is NULL or the client pointer Mosquitto passed to the current
    /// callback, and the returned value is used only during that callback.
    pub(crate) unsafe fn from_raw(ptr: *mut sys::mosquitto) -> Option<Client> {
        (!ptr.is_null()).then_some(Client { ptr })
    }

    /// Identity of the client object, for matching cached state.
    pub(crate) fn key(&self) -> usize {
        self.ptr as usize
    }

    /// The MQTT client id (`None` before CONNECT has set one).
    pub(crate) fn id(&self) -> Option<String> {
        // SAFETY: `self.ptr` is a live client (see `from_raw`); the returned
        // string is owned by Mosquitto and copied before the callback returns.
        unsafe { string_from(sys::mosquitto_client_id(self.ptr)) }
    }

    /// The client id without copying it (the hot ACL path); the borrow
    /// lasts no longer than this `Client`, i.e. the callback.
    pub(crate) fn id_str(&self) -> Option<&str> {
        // SAFETY: `self.ptr` is a live client (see `from_raw`); the string is
        // Mosquitto's and outlives the callback this `Client` belongs to.
        unsafe { str_from(sys::mosquitto_client_id(self.ptr)) }
    }

    /// The username without copying it; as [`Client::id_str`].
    pub(crate) fn username_str(&self) -> Option<&str> {
        // SAFETY: as for `id_str`.
        unsafe { str_from(sys::mosquitto_client_username(self.ptr)) }
    }

    /// The username Mosquitto holds for this client.
    pub(crate) fn username(&self) -> Option<String> {
        // SAFETY: as for `id`.
        unsafe { string_from(sys::mosquitto_client_username(self.ptr)) }
    }

    /// Replaces the client's username (the plugin sets it to the CN).
    pub(crate) fn set_username(&self, username: &str) -> Result<(), Rc> {
        let name = CString::new(username).map_err(|_| ERR_INVAL)?;
        // SAFETY: `self.ptr` is live; Mosquitto copies `name`.
        let rc = unsafe { sys::mosquitto_set_username(self.ptr, name.as_ptr()) };
        if rc == SUCCESS { Ok(()) } else { Err(rc) }
    }

    /// The client's TLS certificate, DER-encoded; `None` when it presented
    /// none (or the connection is already closed).
    pub(crate) fn certificate_der(&self) -> Result<Option<Vec<u8>>, CertError> {
        // SAFETY: `self.ptr` is live. The function returns NULL or a new
        // reference to an X509, which the guard releases with X509_free.
        let raw = unsafe { sys::mosquitto_client_certificate(self.ptr) };
        match X509Guard::new(raw.cast()) {
            None => Ok(None),
            Some(cert) => cert.to_der().map(Some),
        }
    }
}

/// DER encoding of the client certificate failed.
#[derive(Debug, thiserror::Error)]
#[error("OpenSSL could not DER-encode the client certificate (i2d_X509 returned {0})")]
pub(crate) struct CertError(c_int);

/// Owns one reference to an OpenSSL `X509`; `X509_free` on drop.
struct X509Guard(*mut sys::X509);

impl X509Guard {
    fn new(ptr: *mut sys::X509) -> Option<X509Guard> {
        (!ptr.is_null()).then_some(X509Guard(ptr))
    }

    fn to_der(&self) -> Result<Vec<u8>, CertError> {
        // SAFETY: self.0 is a valid X509 (non-null, owned); a NULL `out`
        // asks only for the length.
        let len = unsafe { sys::i2d_X509(self.0, std::ptr::null_mut()) };
        if len <= 0 {
            return Err(CertError(len));
        }
        let mut der = vec![0u8; len as usize];
        let mut out = der.as_mut_ptr();
        // SAFETY: `der` has exactly `len` writable bytes, which is what
        // i2d_X509 reported it will write for this same certificate.
        let written = unsafe { sys::i2d_X509(self.0, &mut out) };
        if written != len {
            return Err(CertError(written));
        }
        Ok(der)
    }
}

impl Drop for X509Guard {
    fn drop(&mut self) {
        // SAFETY: self.0 is the non-null reference we own; freed exactly once.
        unsafe { sys::X509_free(self.0) };
    }
}

/// Disconnects the client with this id, without sending its will. Calls
/// back into the plugin's DISCONNECT handler synchronously, so callers must
/// not hold plugin locks.
pub(crate) fn kick(client_id: &str) -> Rc {
    let Ok(id) = CString::new(client_id) else {
        return ERR_INVAL;
    };
    // SAFETY: `id` is a valid C string for the duration of the call;
    // Mosquitto looks it up and does not keep it. Called on Mosquitto's thread.
    unsafe { sys::mosquitto_kick_client_by_clientid(id.as_ptr(), false) }
}

/// A plugin callback with Mosquitto's generic signature.
pub(crate) type Callback = unsafe extern "C" fn(c_int, *mut c_void, *mut c_void) -> c_int;

/// The plugin identifier from `mosquitto_plugin_init`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PluginId(*mut sys::mosquitto_plugin_id_t);

// SAFETY: the identifier is an opaque token only ever passed back to
// Mosquitto on its own thread; we never dereference it.
unsafe impl Send for PluginId {}
// SAFETY: as above.
unsafe impl Sync for PluginId {}

impl PluginId {
    /// # Safety
    /// `ptr` is the identifier Mosquitto passed to `mosquitto_plugin_init`.
    pub(crate) unsafe fn from_raw(ptr: *mut sys::mosquitto_plugin_id_t) -> Option<PluginId> {
        (!ptr.is_null()).then_some(PluginId(ptr))
    }

    /// Registers `cb` for `event` with `userdata`.
    pub(crate) fn register(&self, event: c_int, cb: Callback, userdata: *mut c_void) -> Rc {
        // SAFETY: the id came from mosquitto_plugin_init; `cb` is an
        // `extern "C"` function of the generic callback type that stays
        // loaded as long as the plugin; `userdata` stays valid until cleanup,
        // which unregisters first. event_data must be NULL for these events.
        unsafe {
            sys::mosquitto_callback_register(self.0, event, Some(cb), std::ptr::null(), userdata)
        }
    }

    /// Unregisters `cb` for `event`.
    pub(crate) fn unregister(&self, event: c_int, cb: Callback) -> Rc {
        // SAFETY: same id and callback as registered.
        unsafe { sys::mosquitto_callback_unregister(self.0, event, Some(cb), std::ptr::null()) }
    }
}

/// Reads `plugin_opt_*` options into (key, value) pairs.
///
/// # Safety
/// `options` is NULL or points to `count` `mosquitto_opt`s whose strings are
/// NULL or NUL-terminated, all valid for the call.
pub(crate) unsafe fn options(
    options: *const sys::mosquitto_opt,
    count: c_int,
) -> Vec<(String, String)> {
    if options.is_null() || count <= 0 {
        return Vec::new();
    }
    // SAFETY: non-null with `count` elements per the contract.
    let opts = unsafe { std::slice::from_raw_parts(options, count as usize) };
    opts.iter()
        .filter_map(|o| {
            // SAFETY: strings are NULL or NUL-terminated per the contract.
            let key = unsafe { string_from(o.key) }?;
            // SAFETY: as above.
            let value = unsafe { string_from(o.value) }.unwrap_or_default();
            Some((key, value))
        })
        .collect()
}

/// Event numbers as the registration API takes them.
pub(crate) mod event {
    use std::os::raw::c_int;

    use crate::sys;

    pub(crate) const BASIC_AUTH: c_int = sys::MOSQ_EVT_BASIC_AUTH as c_int;
    pub(crate) const ACL_CHECK: c_int = sys::MOSQ_EVT_ACL_CHECK as c_int;
    pub(crate) const TICK: c_int = sys::MOSQ_EVT_TICK as c_int;
    pub(crate) const DISCONNECT: c_int = sys::MOSQ_EVT_DISCONNECT as c_int;
    pub(crate) const RELOAD: c_int = sys::MOSQ_EVT_RELOAD as c_int;
    pub(crate) const MESSAGE: c_int = sys::MOSQ_EVT_MESSAGE as c_int;
}

/// What an ACL_CHECK asks for (`MOSQ_ACL_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
    Subscribe,
    Unsubscribe,
    Other(c_int),
}

impl Access {
    pub(crate) fn from_raw(access: c_int) -> Access {
        match access as u32 {
            sys::MOSQ_ACL_READ => Access::Read,
            sys::MOSQ_ACL_WRITE => Access::Write,
            sys::MOSQ_ACL_SUBSCRIBE => Access::Subscribe,
            sys::MOSQ_ACL_UNSUBSCRIBE => Access::Unsubscribe,
            _ => Access::Other(access),
        }
    }
}

/// The client and the topic bytes of an event; `None` if either is NULL.
///
/// # Safety
/// `client` and `topic` are NULL or the pointers of the current callback's
/// event struct (a live client; a NUL-terminated string owned by Mosquitto),
/// and the topic borrow ends before the callback returns.
unsafe fn client_and_topic<'a>(
    client: *mut sys::mosquitto,
    topic: *const std::os::raw::c_char,
) -> Option<(Client, &'a [u8])> {
    // SAFETY: per the contract, valid for this callback.
    let client = unsafe { Client::from_raw(client) }?;
    if topic.is_null() {
        return None;
    }
    // SAFETY: non-null topic is a NUL-terminated string owned by Mosquitto.
    let topic = unsafe { CStr::from_ptr(topic) }.to_bytes();
    Some((client, topic))
}

/// Decoded `mosquitto_evt_acl_check`.
#[derive(Debug)]
pub(crate) struct AclCheck<'a> {
    pub(crate) client: Client,
    pub(crate) access: Access,
    /// Raw topic bytes (validated as UTF-8 by the ACL), borrowed from
    /// Mosquitto for the callback.
    pub(crate) topic: &'a [u8],
}

/// # Safety
/// `data` is NULL or the `mosquitto_evt_acl_check*` of the current callback,
/// and the result is dropped before the callback returns.
pub(crate) unsafe fn acl_check_event<'a>(data: *mut c_void) -> Option<AclCheck<'a>> {
    let ev = data.cast::<sys::mosquitto_evt_acl_check>();
    if ev.is_null() {
        return None;
    }
    // SAFETY: non-null, points to the event struct for this callback.
    let ev = unsafe { &*ev };
    // SAFETY: both pointers come from this callback's event struct.
    let (client, topic) = unsafe { client_and_topic(ev.client, ev.topic) }?;
    Some(AclCheck {
        client,
        access: Access::from_raw(ev.access),
        topic,
    })
}

/// # Safety
/// `data` is NULL or the `mosquitto_evt_basic_auth*` of the current callback.
pub(crate) unsafe fn basic_auth_client(data: *mut c_void) -> Option<Client> {
    let ev = data.cast::<sys::mosquitto_evt_basic_auth>();
    if ev.is_null() {
        return None;
    }
    // SAFETY: non-null event struct for this callback; its client pointer is
    // valid for the callback.
    unsafe { Client::from_raw((*ev).client) }
}

/// # Safety
/// `data` is NULL or the `mosquitto_evt_disconnect*` of the current callback.
pub(crate) unsafe fn disconnect_client(data: *mut c_void) -> Option<Client> {
    let ev = data.cast::<sys::mosquitto_evt_disconnect>();
    if ev.is_null() {
        return None;
    }
    // SAFETY: as for `basic_auth_client`.
    unsafe { Client::from_raw((*ev).client) }
}

/// Decoded `mosquitto_evt_message`: a PUBLISH Mosquitto accepted from a
/// client, copied out of Mosquitto's buffers.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) client: Client,
    /// Raw topic bytes (validated as UTF-8 by the caller).
    pub(crate) topic: Vec<u8>,
    pub(crate) payload: Vec<u8>,
}

/// # Safety
/// `data` is NULL or the `mosquitto_evt_message*` of the current callback.
pub(crate) unsafe fn message_event(data: *mut c_void) -> Option<Message> {
    let ev = data.cast::<sys::mosquitto_evt_message>();
    if ev.is_null() {
        return None;
    }
    // SAFETY: non-null, points to the event struct for this callback.
    let ev = unsafe { &*ev };
    // SAFETY: both pointers come from this callback's event struct (the
    // client is NULL for messages that do not come from a client).
    let (client, topic) = unsafe { client_and_topic(ev.client, ev.topic) }?;
    let payload = if ev.payload.is_null() || ev.payloadlen == 0 {
        Vec::new()
    } else {
        // SAFETY: Mosquitto's payload buffer holds `payloadlen` bytes for the
        // duration of the callback; they are copied before it returns.
        unsafe { std::slice::from_raw_parts(ev.payload.cast::<u8>(), ev.payloadlen as usize) }
            .to_vec()
    };
    Some(Message {
        client,
        topic: topic.to_vec(),
        payload,
    })
}
