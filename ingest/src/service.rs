//! The pipeline behind the handle: batcher → writers → sink, with the spool
//! and its replay task for when the database is away.
//!
//! ```text
//! submit ─▶ queue ─▶ batcher (decode, rows/bytes/age) ─▶ writers (N) ─▶ COPY + ledger, commit ─▶ acks
//!              │ full: when_full        │ database down                 │ retriable error
//!              ▼                        ▼                               ▼
//!            spool ◀────────────────── spool ◀───────────────────────── spool ─▶ replay (in order, backoff)
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use gatehouse_config::IngestSettings;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinHandle;

use crate::IngestError;
use crate::ack::{Ack, AckError, Durability, resolve_all};
use crate::decode::{Decoder, Item, Kind};
use crate::handle::{IngestHandle, Msg, Shared};
use crate::metrics::{DropReason, Metrics};
use crate::retry::{Backoff, ErrorClass, classify};
use crate::sink::Sink;
use crate::spool::{Next, Spool, SpoolConfig};

/// A batch on its way to the database.
#[derive(Debug)]
struct Batch {
    unit: i64,
    items: Vec<Item>,
    acks: Vec<(Ack, bool)>,
    bytes: usize,
}

impl Batch {
    fn new(unit: i64) -> Batch {
        Batch {
            unit,
            items: Vec::new(),
            acks: Vec::new(),
            bytes: 0,
        }
    }
}

/// State shared by the pipeline tasks.
#[derive(Debug)]
struct Core {
    sink: Sink,
    spool: Spool,
    metrics: Metrics,
    decoder: Decoder,
    settings: IngestSettings,
    /// False after a retriable failure until a write succeeds again: batches
    /// go straight to the spool meanwhile.
    healthy: AtomicBool,
    stopping: AtomicBool,
    stop: Notify,
}

/// The running pipeline. Call [`IngestService::shutdown`] to stop it: it
/// flushes what is queued (to the database, or to the spool if the database
/// is down) before returning.
#[derive(Debug)]
pub struct IngestService {
    core: Arc<Core>,
    shared: Arc<Shared>,
    batcher: JoinHandle<()>,
    writers: Vec<JoinHandle<()>>,
    replay: JoinHandle<()>,
    batcher_stop: Arc<Notify>,
}

/// Starts ingest: opens the sink (without needing the database to be up),
/// scans the spool (replaying what a previous run left), and spawns the
/// batcher, the writers and the replay task on the current tokio runtime.
/// Metrics are registered into `registry` when given.
pub async fn start(
    settings: &IngestSettings,
    registry: Option<&prometheus::Registry>,
) -> Result<(IngestHandle, IngestService), IngestError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| IngestError::NoRuntime)?;
    let metrics = Metrics::new(registry)?;
    let spool = Spool::open(
        SpoolConfig {
            dir: settings.spool_dir.clone(),
            max_bytes: settings.spool_max_bytes,
            segment_bytes: settings.spool_segment_bytes,
            when_full: settings.when_spool_full,
            unit_rows: settings.batch_rows,
        },
        metrics.clone(),
    )
    .map_err(|source| IngestError::SpoolDir {
        path: settings.spool_dir.clone(),
        source,
    })?;
    let sink = Sink::open(settings, spool.node()).await?;
    let core = Arc::new(Core {
        sink,
        spool: spool.clone(),
        metrics: metrics.clone(),
        decoder: Decoder::new(settings.time_field.clone(), settings.time_format),
        settings: settings.clone(),
        healthy: AtomicBool::new(true),
        stopping: AtomicBool::new(false),
        stop: Notify::new(),
    });
    let (tx, rx) = mpsc::channel(settings.queue_capacity);
    let shared = Arc::new(Shared {
        tx,
        when_full: settings.when_full,
        block_timeout: settings.block_timeout,
        ack: settings.ack,
        spool,
        metrics,
        runtime,
        closed: AtomicBool::new(false),
    });
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(settings.writers * 2);
    let batch_rx = Arc::new(Mutex::new(batch_rx));
    let batcher_stop = Arc::new(Notify::new());
    let batcher = tokio::spawn(run_batcher(
        Arc::clone(&core),
        rx,
        batch_tx,
        Arc::clone(&batcher_stop),
    ));
    let writers = (0..settings.writers)
        .map(|_| tokio::spawn(run_writer(Arc::clone(&core), Arc::clone(&batch_rx))))
        .collect();
    let replay = tokio::spawn(run_replay(Arc::clone(&core)));
    tracing::info!(
        sink = ?settings.database,
        table = %settings.table,
        writers = settings.writers,
        when_full = ?settings.when_full,
        ack = ?settings.ack,
        "ingest started"
    );
    Ok((
        IngestHandle {
            shared: Arc::clone(&shared),
        },
        IngestService {
            core,
            shared,
            batcher,
            writers,
            replay,
            batcher_stop,
        },
    ))
}

impl IngestService {
    /// Records and bytes in the spool not yet replayed into the database.
    pub fn spool_backlog(&self) -> (u64, u64) {
        self.core.spool.backlog()
    }

    /// Stops accepting records, writes out everything queued (database, or
    /// spool when it is down), fsyncs the spool and closes the database pool.
    /// Spooled records stay on disk and are replayed by the next start.
    pub async fn shutdown(self) {
        self.shared.closed.store(true, Ordering::Release);
        self.batcher_stop.notify_one();
        let _ = self.batcher.await;
        for w in self.writers {
            let _ = w.await;
        }
        self.core.stopping.store(true, Ordering::Release);
        self.core.stop.notify_waiters();
        let _ = self.replay.await;
        let spool = self.core.spool.clone();
        let _ = tokio::task::spawn_blocking(move || spool.shutdown()).await;
        let (records, bytes) = self.core.spool.backlog();
        if records > 0 {
            tracing::info!(
                records,
                bytes,
                "ingest stopped; spooled records will be replayed on next start"
            );
        } else {
            tracing::info!("ingest stopped");
        }
        self.core.sink.close().await;
    }
}

async fn run_batcher(
    core: Arc<Core>,
    mut rx: mpsc::Receiver<Msg>,
    out: mpsc::Sender<Batch>,
    stop: Arc<Notify>,
) {
    let s = &core.settings;
    let mut batch = Batch::new(core.spool.next_unit());
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut buf = Vec::with_capacity(1024);
    let mut stopping = false;
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut buf, 1024) => n,
            _ = sleep_until(deadline) => {
                flush(&core, &out, &mut batch).await;
                deadline = None;
                continue;
            }
            _ = stop.notified(), if !stopping => {
                // Refuse new records; drain what is queued.
                stopping = true;
                rx.close();
                continue;
            }
        };
        if n == 0 {
            break;
        }
        for msg in buf.drain(..) {
            let item = core.decoder.decode(msg.record);
            batch.bytes += item.size();
            if let Some(ack) = msg.ack {
                batch
                    .acks
                    .push((ack, matches!(item.kind, Kind::Reject { .. })));
            }
            batch.items.push(item);
            if deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + s.batch_age);
            }
            if batch.items.len() >= s.batch_rows || batch.bytes >= s.batch_bytes {
                flush(&core, &out, &mut batch).await;
                deadline = None;
            }
        }
        core.metrics.queue_depth.set(rx.len() as i64);
    }
    flush(&core, &out, &mut batch).await;
    core.metrics.queue_depth.set(0);
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn flush(core: &Core, out: &mpsc::Sender<Batch>, batch: &mut Batch) {
    if batch.items.is_empty() {
        return;
    }
    let full = std::mem::replace(batch, Batch::new(core.spool.next_unit()));
    if !core.healthy.load(Ordering::Acquire) {
        spool_batch(core, full);
        return;
    }
    if let Err(mpsc::error::SendError(b)) = out.send(full).await {
        spool_batch(core, b);
    }
}

fn spool_batch(core: &Core, batch: Batch) {
    let acks = batch.acks.into_iter().map(|(a, _)| a).collect();
    core.spool.append_batch(batch.unit, &batch.items, acks);
}

async fn run_writer(core: Arc<Core>, rx: Arc<Mutex<mpsc::Receiver<Batch>>>) {
    loop {
        let Some(batch) = rx.lock().await.recv().await else {
            return;
        };
        if !core.healthy.load(Ordering::Acquire) {
            spool_batch(&core, batch);
            continue;
        }
        let started = Instant::now();
        match core.sink.write(&[batch.unit], &batch.items).await {
            Ok(()) => {
                committed(&core, &batch.items, started);
                for (ack, rejected) in batch.acks {
                    ack.resolve(Ok(if rejected {
                        Durability::Rejected
                    } else {
                        Durability::Committed
                    }));
                }
            }
            Err(e) => match classify(&e) {
                ErrorClass::Retriable => {
                    core.metrics.retries.inc();
                    if core.healthy.swap(false, Ordering::AcqRel) {
                        tracing::warn!(error = %e, "ingest: database unavailable; spooling batches to disk until it returns");
                    }
                    spool_batch(&core, batch);
                }
                ErrorClass::Fatal => {
                    let acks = batch.acks.into_iter().map(|(a, _)| a).collect();
                    isolate(&core, &[batch.unit], batch.items, acks, e).await;
                }
            },
        }
    }
}

fn committed(core: &Core, items: &[Item], started: Instant) {
    let m = &core.metrics;
    m.batch_seconds.observe(started.elapsed().as_secs_f64());
    m.batches.inc();
    let mut rows = 0;
    for item in items {
        match &item.kind {
            Kind::Row { .. } => rows += 1,
            Kind::Reject { label, reason } => {
                m.rejects.with_label_values(&[label]).inc();
                tracing::warn!(gateway = %item.gateway_code, topic = %item.topic, "ingest: rejected a payload: {reason}");
            }
        }
    }
    m.rows_written.inc_by(rows);
}

/// The database refused a batch for a reason retrying cannot fix (schema
/// mismatch, a value it will not store). Bisect to find the refused rows,
/// commit the rest, and send the refused ones to the reject table.
async fn isolate(core: &Core, units: &[i64], items: Vec<Item>, acks: Vec<Ack>, first: sqlx::Error) {
    let s = &core.settings;
    tracing::error!(
        table = %s.table,
        rows = items.len(),
        error = %first,
        "ingest: the database refused a batch; isolating the refused rows into {} (check the table's columns against the documented schema)",
        s.reject_table
    );
    let (rejects, rows): (Vec<Item>, Vec<Item>) = items
        .into_iter()
        .partition(|i| matches!(i.kind, Kind::Reject { .. }));
    let mut refused = rejects;
    let mut todo = vec![rows];
    while let Some(mut part) = todo.pop() {
        if part.is_empty() {
            continue;
        }
        let started = Instant::now();
        match core.sink.write(&[], &part).await {
            Ok(()) => committed(core, &part, started),
            Err(e) => match classify(&e) {
                ErrorClass::Fatal if part.len() == 1 => {
                    let mut item = part.pop().expect("one item");
                    item.kind = Kind::Reject {
                        label: "database",
                        reason: format!("the database refused the row: {e}"),
                    };
                    refused.push(item);
                }
                ErrorClass::Fatal => {
                    let right = part.split_off(part.len() / 2);
                    todo.push(right);
                    todo.push(part);
                }
                ErrorClass::Retriable => {
                    core.metrics.retries.inc();
                    core.healthy.store(false, Ordering::Release);
                    let mut rest: Vec<Item> = todo.into_iter().flatten().collect();
                    rest.extend(part);
                    rest.extend(refused);
                    core.spool.append_batch(core.spool.next_unit(), &rest, acks);
                    return;
                }
            },
        }
    }
    let started = Instant::now();
    match core.sink.write(units, &refused).await {
        Ok(()) => {
            committed(core, &refused, started);
            resolve_all(acks, Ok(Durability::Committed));
        }
        Err(e) if classify(&e) == ErrorClass::Retriable => {
            core.metrics.retries.inc();
            core.healthy.store(false, Ordering::Release);
            core.spool
                .append_batch(core.spool.next_unit(), &refused, acks);
        }
        Err(e) => {
            tracing::error!(
                reject_table = %s.reject_table,
                records = refused.len(),
                error = %e,
                "ingest: the reject table refused these records too; they are lost (fix the reject table's schema)"
            );
            core.metrics
                .dropped(DropReason::Unwritable, refused.len() as u64);
            resolve_all(acks, Err(AckError::Dropped(DropReason::Unwritable)));
        }
    }
}

/// Replays the spool in order, with capped exponential backoff while the
/// database is away; also probes the database back to health.
async fn run_replay(core: Arc<Core>) {
    let s = &core.settings;
    let mut backoff = Backoff::new(s.retry_min, s.retry_max);
    let mut cursor: Option<(u64, u64)> = None;
    while !core.stopping.load(Ordering::Acquire) {
        match core.spool.next(cursor) {
            Next::Idle => {
                if !core.healthy.load(Ordering::Acquire) {
                    match stoppable(&core, core.sink.ping()).await {
                        None => return,
                        Some(Ok(())) => {
                            core.healthy.store(true, Ordering::Release);
                            backoff.reset();
                            tracing::info!("ingest: database reachable again");
                            continue;
                        }
                        Some(Err(_)) => {
                            core.metrics.retries.inc();
                            if pause(&core, backoff.next_delay()).await {
                                return;
                            }
                            continue;
                        }
                    }
                }
                core.spool.request_rotate();
                let idle = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    core.spool.wait_for_data(),
                );
                if stoppable(&core, idle).await.is_none() {
                    return;
                }
            }
            Next::Finished { seq } => {
                if let Err(e) = core.spool.finish_segment(seq) {
                    tracing::error!(segment = seq, error = %e, "ingest spool: cannot delete a replayed segment");
                }
                cursor = None;
            }
            Next::Read { seq, from, len } => {
                let spool = core.spool.clone();
                let (rows, bytes) = (s.batch_rows, s.batch_bytes);
                let chunk = match tokio::task::spawn_blocking(move || {
                    spool.read(seq, from, len, rows, bytes)
                })
                .await
                {
                    Ok(Ok(chunk)) => chunk,
                    Ok(Err(e)) => {
                        tracing::error!(segment = seq, error = %e, "ingest spool: cannot read a segment; retrying");
                        if pause(&core, backoff.next_delay()).await {
                            return;
                        }
                        continue;
                    }
                    Err(_) => return,
                };
                match replay_chunk(&core, chunk.records, &mut backoff).await {
                    Some(()) => cursor = Some((seq, chunk.end)),
                    None => return,
                }
            }
        }
    }
}

/// Writes one chunk read from the spool; `None` if stopped meanwhile.
async fn replay_chunk(
    core: &Core,
    records: Vec<(i64, crate::Record)>,
    backoff: &mut Backoff,
) -> Option<()> {
    let mut units: Vec<i64> = Vec::new();
    for (u, _) in &records {
        if units.last() != Some(u) && !units.contains(u) {
            units.push(*u);
        }
    }
    let mut items: Vec<(i64, Item)> = records
        .into_iter()
        .map(|(u, r)| (u, core.decoder.decode(r)))
        .collect();
    loop {
        let started = Instant::now();
        let attempt = async {
            let done: HashSet<i64> = core.sink.committed(&units).await?.into_iter().collect();
            if !done.is_empty() {
                tracing::info!(
                    units = done.len(),
                    "ingest spool: skipping batches already committed before a lost acknowledgement"
                );
                items.retain(|(u, _)| !done.contains(u));
                units.retain(|u| !done.contains(u));
            }
            let plain: Vec<Item> = items.iter().map(|(_, i)| i.clone()).collect();
            core.sink.write(&units, &plain).await.map(|()| plain)
        };
        match stoppable(core, attempt).await? {
            Ok(plain) => {
                committed(core, &plain, started);
                core.metrics.replayed_rows.inc_by(plain.len() as u64);
                if !core.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("ingest: database reachable again; replaying the spool");
                }
                backoff.reset();
                return Some(());
            }
            Err(e) if classify(&e) == ErrorClass::Retriable => {
                core.metrics.retries.inc();
                core.healthy.store(false, Ordering::Release);
                let delay = backoff.next_delay();
                tracing::debug!(error = %e, ?delay, "ingest spool: replay failed; retrying");
                if pause(core, delay).await {
                    return None;
                }
            }
            Err(e) => {
                let plain = items.into_iter().map(|(_, i)| i).collect();
                isolate(core, &units, plain, Vec::new(), e).await;
                return Some(());
            }
        }
    }
}

/// Runs `f` unless ingest is stopping (then `None`).
async fn stoppable<T>(core: &Core, f: impl std::future::Future<Output = T>) -> Option<T> {
    let notified = core.stop.notified();
    tokio::pin!(notified);
    // Register before checking the flag, so a stop in between is not missed.
    notified.as_mut().enable();
    if core.stopping.load(Ordering::Acquire) {
        return None;
    }
    tokio::select! {
        v = f => Some(v),
        _ = notified => None,
    }
}

/// Sleeps `d`; true if ingest started stopping meanwhile.
async fn pause(core: &Core, d: std::time::Duration) -> bool {
    stoppable(core, tokio::time::sleep(d)).await.is_none()
}
