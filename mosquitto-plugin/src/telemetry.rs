//! Telemetry hand-off: accepted PUBLISHes on `ingest.topic_filter` go to
//! `gatehouse-ingest`, which runs on a tokio runtime the plugin owns (its
//! own worker threads, never Mosquitto's).
//!
//! Mosquitto calls MESSAGE on its single network thread, so the hand-off
//! must never wait: `when_full = "block"` (the embedded broker's default)
//! would stall every client of the broker behind a slow database, and is
//! replaced by `"spool"` here, with one log line saying so. `spool` and
//! `drop_newest` are used as configured and counted in
//! `gatehouse_ingest_*` metrics.

use std::time::Duration;

use gatehouse_config::{IngestSettings, WhenFull};
use gatehouse_gate::TelemetryTap;
use gatehouse_ingest::{IngestHandle, IngestService, Record};

use crate::error::PluginError;

/// How long cleanup waits for the last batches to be written or spooled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The ingest service and the runtime it runs on.
#[derive(Debug)]
pub(crate) struct Telemetry {
    tap: TelemetryTap,
    handle: IngestHandle,
    service: Option<IngestService>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Starts ingest with `settings` (metrics into `registry`). Does not need
    /// the database to be up: until it is, batches go to the spool.
    pub(crate) fn start(
        settings: &IngestSettings,
        registry: &prometheus::Registry,
    ) -> Result<Telemetry, PluginError> {
        let mut settings = settings.clone();
        if settings.when_full == WhenFull::Block {
            tracing::info!(
                "ingest.when_full = \"block\" would stall Mosquitto's network thread; \
                 the plugin spools instead when the ingest queue is full"
            );
            settings.when_full = WhenFull::Spool;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gatehouse-ingest")
            .enable_all()
            .build()
            .map_err(PluginError::Runtime)?;
        let (handle, service) =
            runtime.block_on(gatehouse_ingest::start(&settings, Some(registry)))?;
        Ok(Telemetry {
            tap: TelemetryTap::new(&settings),
            handle,
            service: Some(service),
            runtime: Some(runtime),
        })
    }

    /// `topic` as text when it is ingested (checked before anything else).
    pub(crate) fn ingested<'t>(&self, topic: &'t [u8]) -> Option<&'t str> {
        self.tap.ingested(topic)
    }

    /// Hands one message on an ingested topic to ingest without waiting.
    pub(crate) fn submit(&self, gateway_code: &str, topic: &str, payload: Vec<u8>) {
        self.handle
            .submit(Record::new(gateway_code, topic, payload), None);
    }

    /// Flushes what is queued (to the database or the spool) and stops the
    /// runtime's threads.
    pub(crate) fn stop(mut self) {
        if let (Some(runtime), Some(service)) = (self.runtime.take(), self.service.take()) {
            if runtime
                .block_on(async { tokio::time::timeout(SHUTDOWN_GRACE, service.shutdown()).await })
                .is_err()
            {
                tracing::warn!(
                    "ingest did not finish flushing within {SHUTDOWN_GRACE:?}; \
                     what was not written stays in the spool for the next start"
                );
            }
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
