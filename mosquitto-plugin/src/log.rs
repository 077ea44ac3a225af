//! `tracing` → Mosquitto's log. The crates the plugin uses (`gatehouse-auth`'s
//! CRL watcher, for one) log with `tracing`; this subscriber writes their
//! events (INFO and above) to Mosquitto's log with `mosquitto_log_printf`.
//!
//! Mosquitto's logger is not meant to be called from foreign threads, so
//! events from the plugin's own threads are queued (bounded) and written on
//! the next TICK, from Mosquitto's thread.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::ffi;

/// Queued lines beyond this are dropped (and counted in the next line).
const QUEUE_LIMIT: usize = 1000;

static MAIN_THREAD: OnceLock<ThreadId> = OnceLock::new();
static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    lines: VecDeque::new(),
    dropped: 0,
});

struct Queue {
    lines: VecDeque<(ffi::Level, String)>,
    dropped: u64,
}

/// Installs the subscriber (once per process) and records the calling
/// thread, Mosquitto's, as the one that may write directly.
pub(crate) fn install() {
    let _ = MAIN_THREAD.set(std::thread::current().id());
    // Fails if something already installed one; then we keep theirs.
    let _ = tracing::subscriber::set_global_default(MosquittoLog);
}

/// Writes queued lines from other threads. Call on Mosquitto's thread.
pub(crate) fn drain() {
    let (lines, dropped) = {
        let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
        if q.lines.is_empty() && q.dropped == 0 {
            return;
        }
        (std::mem::take(&mut q.lines), std::mem::take(&mut q.dropped))
    };
    for (level, line) in lines {
        ffi::log(level, &line);
    }
    if dropped > 0 {
        ffi::log(
            ffi::Level::Warning,
            &format!("gatehouse: {dropped} log lines from background threads were dropped"),
        );
    }
}

/// Writes `line` now if on Mosquitto's thread, else queues it.
pub(crate) fn write(level: ffi::Level, line: String) {
    if MAIN_THREAD.get() == Some(&std::thread::current().id()) {
        ffi::log(level, &line);
        return;
    }
    let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    if q.lines.len() >= QUEUE_LIMIT {
        q.dropped += 1;
    } else {
        q.lines.push_back((level, line));
    }
}

#[derive(Debug)]
struct MosquittoLog;

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for MosquittoLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::INFO
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields {
            message: String::new(),
            rest: String::new(),
        };
        event.record(&mut fields);
        let level = match *event.metadata().level() {
            Level::ERROR => ffi::Level::Err,
            Level::WARN => ffi::Level::Warning,
            Level::INFO => ffi::Level::Info,
            _ => ffi::Level::Debug,
        };
        write(
            level,
            format!("gatehouse: {}{}", fields.message, fields.rest),
        );
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}
