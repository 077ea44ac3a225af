//! `gatehouse-ingest` owns the telemetry path from "the broker accepted a
//! PUBLISH" to "the row is committed": decoding JSON payloads (event time
//! from a configured field), batching by rows / bytes / age, writing with
//! binary `COPY` into PostgreSQL (a TimescaleDB hypertable when the extension
//! is available) or into an embedded SQLite file, a durable on-disk spool for
//! when the database is unreachable (replayed in order, exactly once), the
//! reject table for payloads that cannot be stored, acknowledgements that
//! fire when a record is durable, and `gatehouse_ingest_*` metrics.
//!
//! It knows nothing about MQTT, TLS or certificates: callers hand it a
//! [`Record`] (receive time, gateway code, topic, payload) through a
//! cloneable [`IngestHandle`], and decide themselves which topics to ingest
//! (`ingest.topic_filter`).
//!
//! ```no_run
//! # async fn demo(settings: gatehouse_config::IngestSettings) -> Result<(), gatehouse_ingest::IngestError> {
//! let registry = prometheus::Registry::new();
//! let (handle, service) = gatehouse_ingest::start(&settings, Some(&registry)).await?;
//! let (ack, durable) = gatehouse_ingest::Ack::new();
//! handle.submit(gatehouse_ingest::Record::new("GW-1", "telemetry/GW-1/data", r#"{"ts":1700000000,"v":1}"#), Some(ack));
//! durable.await.expect("stored");
//! service.shutdown().await; // flushes what is queued
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod ack;
mod decode;
mod error;
mod handle;
mod metrics;
pub mod pgcopy;
mod record;
mod retry;
mod service;
mod sink;
mod spool;

pub use ack::{Ack, AckError, AckWaiter, Durability};
pub use error::IngestError;
pub use handle::{IngestHandle, Submitted};
pub use metrics::DropReason;
pub use record::Record;
pub use service::{IngestService, start};
