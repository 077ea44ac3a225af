//! Prometheus metrics, all prefixed `gatehouse_ingest_`, and the reasons a
//! record can be dropped or rejected.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Why a record was not stored at all (counted in `gatehouse_ingest_drops_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `when_full = "drop_newest"` and the queue was full.
    QueueFull,
    /// `when_full = "block"` and no room came within `block_timeout`.
    BlockTimeout,
    /// `when_full = "block"` called from a current-thread runtime, where waiting would deadlock.
    WouldBlock,
    /// The spool reached `spool_max_bytes` (`when_spool_full = "drop_newest"`),
    /// or its write backlog was too long.
    SpoolFull,
    /// An older spool segment was deleted to make room (`when_spool_full = "drop_oldest"`).
    SpoolEvicted,
    /// The spool could not be written (disk error).
    SpoolIo,
    /// The database refused the row and the reject table as well.
    Unwritable,
    /// Submitted after shutdown began.
    Shutdown,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::BlockTimeout => "block_timeout",
            DropReason::WouldBlock => "would_block",
            DropReason::SpoolFull => "spool_full",
            DropReason::SpoolEvicted => "spool_evicted",
            DropReason::SpoolIo => "spool_io",
            DropReason::Unwritable => "unwritable",
            DropReason::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every ingest metric.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub submitted: IntCounter,
    pub rows_written: IntCounter,
    pub batches: IntCounter,
    pub batch_seconds: Histogram,
    pub queue_depth: IntGauge,
    pub spool_bytes: IntGauge,
    pub spool_segments: IntGauge,
    pub spooled_records: IntCounter,
    pub replayed_rows: IntCounter,
    pub spool_corrupt: IntCounter,
    pub retries: IntCounter,
    pub rejects: IntCounterVec,
    pub drops: IntCounterVec,
}

impl Metrics {
    pub(crate) fn new(registry: Option<&Registry>) -> Result<Metrics, prometheus::Error> {
        let c = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help));
        let m = Metrics {
            submitted: c(
                "gatehouse_ingest_submitted_total",
                "Records handed to ingest",
            )?,
            rows_written: c(
                "gatehouse_ingest_rows_written_total",
                "Rows committed to the telemetry table",
            )?,
            batches: c(
                "gatehouse_ingest_batches_total",
                "Batches committed to the database",
            )?,
            batch_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "gatehouse_ingest_batch_write_seconds",
                    "Time to write and commit one batch",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )?,
            queue_depth: IntGauge::new(
                "gatehouse_ingest_queue_depth",
                "Records waiting in the in-memory queue",
            )?,
            spool_bytes: IntGauge::new("gatehouse_ingest_spool_bytes", "Bytes in spool segments")?,
            spool_segments: IntGauge::new(
                "gatehouse_ingest_spool_segments",
                "Spool segment files not yet replayed",
            )?,
            spooled_records: c(
                "gatehouse_ingest_spooled_records_total",
                "Records written to the durable spool",
            )?,
            replayed_rows: c(
                "gatehouse_ingest_replayed_records_total",
                "Spooled records replayed into the database",
            )?,
            spool_corrupt: c(
                "gatehouse_ingest_spool_corrupt_total",
                "Torn or corrupt spool tails detected (and skipped)",
            )?,
            retries: c(
                "gatehouse_ingest_retries_total",
                "Database writes that failed with a retriable error",
            )?,
            rejects: IntCounterVec::new(
                Opts::new(
                    "gatehouse_ingest_rejects_total",
                    "Records written to the reject table, by reason",
                ),
                &["reason"],
            )?,
            drops: IntCounterVec::new(
                Opts::new(
                    "gatehouse_ingest_drops_total",
                    "Records dropped without being stored, by reason",
                ),
                &["reason"],
            )?,
        };
        if let Some(r) = registry {
            r.register(Box::new(m.submitted.clone()))?;
            r.register(Box::new(m.rows_written.clone()))?;
            r.register(Box::new(m.batches.clone()))?;
            r.register(Box::new(m.batch_seconds.clone()))?;
            r.register(Box::new(m.queue_depth.clone()))?;
            r.register(Box::new(m.spool_bytes.clone()))?;
            r.register(Box::new(m.spool_segments.clone()))?;
            r.register(Box::new(m.spooled_records.clone()))?;
            r.register(Box::new(m.replayed_rows.clone()))?;
            r.register(Box::new(m.spool_corrupt.clone()))?;
            r.register(Box::new(m.retries.clone()))?;
            r.register(Box::new(m.rejects.clone()))?;
            r.register(Box::new(m.drops.clone()))?;
        }
        Ok(m)
    }

    pub(crate) fn dropped(&self, reason: DropReason, n: u64) {
        self.drops.with_label_values(&[reason.as_str()]).inc_by(n);
    }
}
