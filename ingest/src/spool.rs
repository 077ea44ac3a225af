//! The durable spool: append-only segment files holding records that could
//! not (yet) reach the database, replayed in order when it returns.
//!
//! A segment is `seg-<seq>.spool`: the 8-byte magic `GHSPOOL1`, then frames
//! `[u32 body length][u32 CRC-32 of body][body]` (little-endian), one record
//! per frame. The body is `i64 unit, i64 received_us, u32+bytes gateway code,
//! u32+bytes topic, u32+bytes payload`. A *unit* is a group of records written
//! together (one batch); the database ledger records committed units, so a
//! replay never commits a unit twice.
//!
//! One writer thread owns the active segment: it takes everything appended
//! since its last round, writes it, fsyncs once (group commit) and only then
//! resolves the acks. Segments are sealed at `spool_segment_bytes` (or when
//! the replay has caught up with them) and deleted only after every unit in
//! them has been committed to the database.
//!
//! At start-up existing segments are scanned: a torn or corrupt tail (crash
//! mid-write, bit rot) ends the segment there; the records before it are
//! replayed, the rest is reported and skipped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use gatehouse_config::WhenSpoolFull;

use crate::ack::{Ack, AckError, Durability, resolve_all};
use crate::decode::Item;
use crate::metrics::{DropReason, Metrics};
use crate::record::{Record, unix_micros};

const MAGIC: &[u8; 8] = b"GHSPOOL1";
pub(crate) const HEADER_LEN: u64 = MAGIC.len() as u64;
const FRAME_HEAD: usize = 8;
/// No legitimate record comes near this; a larger length is corruption.
const MAX_BODY: u32 = 256 << 20;

/// Spool limits and policy.
#[derive(Debug, Clone)]
pub(crate) struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub when_full: WhenSpoolFull,
    /// Largest unit of overflow records (keeps replay batches bounded).
    pub unit_rows: usize,
}

#[derive(Debug)]
struct Seg {
    /// Durable, valid length (header included).
    len: u64,
    sealed: bool,
    records: u64,
}

#[derive(Debug, Default)]
struct State {
    pending: Vec<u8>,
    pending_acks: Vec<Ack>,
    pending_records: u64,
    /// Current unit for records spooled one by one (`when_full = "spool"`).
    overflow_unit: Option<(i64, usize)>,
    segments: BTreeMap<u64, Seg>,
    /// Bytes in segments plus pending.
    bytes: u64,
    rotate: bool,
    shutdown: bool,
    writer_done: bool,
}

#[derive(Debug)]
struct Inner {
    cfg: SpoolConfig,
    metrics: Metrics,
    state: Mutex<State>,
    /// Wakes the writer thread.
    work: Condvar,
    /// Wakes whoever waits for the writer to finish.
    done: Condvar,
    /// Wakes the replay task when new durable data exists.
    replay: tokio::sync::Notify,
    next_unit: AtomicI64,
    node: String,
}

/// Cheap to clone; all clones share one spool.
#[derive(Debug, Clone)]
pub(crate) struct Spool {
    inner: Arc<Inner>,
}

/// A piece of a segment read for replay.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    /// `(unit, record)` in file order.
    pub records: Vec<(i64, Record)>,
    /// Offset just past the last frame read.
    pub end: u64,
}

/// What the replay should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Read segment `seq` from `from` up to `len`.
    Read { seq: u64, from: u64, len: u64 },
    /// Segment `seq` is sealed and fully replayed: delete it.
    Finished { seq: u64 },
    /// Everything durable has been replayed.
    Idle,
}

impl Spool {
    /// Opens (creating) the spool directory, scans existing segments and
    /// starts the writer thread.
    pub(crate) fn open(cfg: SpoolConfig, metrics: Metrics) -> std::io::Result<Spool> {
        gatehouse_config::secure_fs::ensure_private_dir(&cfg.dir)?;
        let node = node_id(&cfg.dir)?;
        let mut state = State::default();
        for (seq, path) in list_segments(&cfg.dir)? {
            let scan = scan_segment(&path)?;
            if let Some(why) = &scan.corrupt {
                metrics.spool_corrupt.inc();
                tracing::warn!(
                    segment = %path.display(),
                    kept_records = scan.records,
                    skipped_bytes = scan.file_len.saturating_sub(scan.valid_len),
                    "ingest spool: {why}; keeping the records before it, skipping the rest"
                );
            }
            if scan.valid_len < HEADER_LEN {
                let bad = path.with_extension("corrupt");
                tracing::warn!(segment = %path.display(), "ingest spool: segment header unreadable; renamed to {}", bad.display());
                std::fs::rename(&path, &bad)?;
                continue;
            }
            state.bytes += scan.valid_len;
            state.segments.insert(
                seq,
                Seg {
                    len: scan.valid_len,
                    sealed: true,
                    records: scan.records,
                },
            );
        }
        if !state.segments.is_empty() {
            tracing::info!(
                segments = state.segments.len(),
                bytes = state.bytes,
                "ingest spool: found records from a previous run; they will be replayed"
            );
        }
        let inner = Arc::new(Inner {
            cfg,
            metrics,
            state: Mutex::new(state),
            work: Condvar::new(),
            done: Condvar::new(),
            replay: tokio::sync::Notify::new(),
            next_unit: AtomicI64::new(unix_micros(std::time::SystemTime::now())),
            node,
        });
        inner.publish_gauges(&inner.lock());
        let writer = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("gatehouse-spool".into())
            .spawn(move || writer.run_writer())?;
        Ok(Spool { inner })
    }

    /// This spool's identity in the database ledger.
    pub(crate) fn node(&self) -> &str {
        &self.inner.node
    }

    /// A fresh unit id (unique for this node across restarts).
    pub(crate) fn next_unit(&self) -> i64 {
        self.inner.next_unit.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends a batch as one unit. Its acks fire `Spooled` after the fsync,
    /// or `Dropped` if the spool refuses it. Returns whether it was accepted.
    pub(crate) fn append_batch(&self, unit: i64, items: &[Item], acks: Vec<Ack>) -> bool {
        let mut frames = Vec::with_capacity(items.iter().map(|i| i.size() + 40).sum());
        for item in items {
            encode_frame(
                &mut frames,
                unit,
                item.received_us,
                &item.gateway_code,
                &item.topic,
                &item.payload,
            );
        }
        let mut st = self.inner.lock();
        if let Err(reason) = self.inner.make_room(&mut st, frames.len() as u64, false) {
            drop(st);
            self.inner.metrics.dropped(reason, items.len() as u64);
            resolve_all(acks, Err(AckError::Dropped(reason)));
            return false;
        }
        st.bytes += frames.len() as u64;
        st.pending.extend_from_slice(&frames);
        st.pending_acks.extend(acks);
        st.pending_records += items.len() as u64;
        drop(st);
        self.inner.work.notify_one();
        true
    }

    /// Appends one record (the queue was full and `when_full = "spool"`).
    /// Never waits for the disk: the writer thread does that.
    pub(crate) fn append_record(&self, record: &Record, ack: Option<Ack>) -> bool {
        let mut st = self.inner.lock();
        let unit = match st.overflow_unit {
            Some((unit, n)) if n < self.inner.cfg.unit_rows => unit,
            _ => self.next_unit(),
        };
        let mut frame = Vec::with_capacity(record.size() + 40);
        encode_frame(
            &mut frame,
            unit,
            unix_micros(record.received_at),
            &record.gateway_code,
            &record.topic,
            &record.payload,
        );
        if let Err(reason) = self.inner.make_room(&mut st, frame.len() as u64, true) {
            drop(st);
            self.inner.metrics.dropped(reason, 1);
            if let Some(ack) = ack {
                ack.resolve(Err(AckError::Dropped(reason)));
            }
            return false;
        }
        let n = match st.overflow_unit {
            Some((u, n)) if u == unit => n,
            _ => 0,
        };
        st.overflow_unit = Some((unit, n + 1));
        st.bytes += frame.len() as u64;
        st.pending.extend_from_slice(&frame);
        st.pending_acks.extend(ack);
        st.pending_records += 1;
        drop(st);
        self.inner.work.notify_one();
        true
    }

    /// What the replay should do next.
    pub(crate) fn next(&self, cursor: Option<(u64, u64)>) -> Next {
        let st = self.inner.lock();
        let Some((&seq, seg)) = st.segments.iter().next() else {
            return Next::Idle;
        };
        let from = match cursor {
            Some((s, off)) if s == seq => off,
            _ => HEADER_LEN,
        };
        if from < seg.len {
            Next::Read {
                seq,
                from,
                len: seg.len,
            }
        } else if seg.sealed {
            Next::Finished { seq }
        } else {
            Next::Idle
        }
    }

    /// True when the only segment is the active one and it is fully
    /// replayed: sealing it lets the replay delete it.
    pub(crate) fn request_rotate(&self) {
        let mut st = self.inner.lock();
        let has_active = st
            .segments
            .values()
            .any(|s| !s.sealed && s.len > HEADER_LEN);
        if has_active {
            st.rotate = true;
            drop(st);
            self.inner.work.notify_one();
        }
    }

    /// Deletes a fully replayed segment.
    pub(crate) fn finish_segment(&self, seq: u64) -> std::io::Result<()> {
        let path = segment_path(&self.inner.cfg.dir, seq);
        let mut st = self.inner.lock();
        if let Some(seg) = st.segments.remove(&seq) {
            st.bytes = st.bytes.saturating_sub(seg.len);
        }
        self.inner.publish_gauges(&st);
        drop(st);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Reads whole units from `seq` between `from` and `len`, stopping at the
    /// first unit boundary after `max_rows` records or `max_bytes` bytes.
    /// Blocking: call from `spawn_blocking`.
    pub(crate) fn read(
        &self,
        seq: u64,
        from: u64,
        len: u64,
        max_rows: usize,
        max_bytes: usize,
    ) -> std::io::Result<Chunk> {
        let path = segment_path(&self.inner.cfg.dir, seq);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            // Evicted under us (drop_oldest): nothing left to read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Chunk {
                    records: Vec::new(),
                    end: len,
                });
            }
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(from))?;
        let mut r = BufReader::with_capacity(1 << 20, file.take(len - from));
        let mut chunk = Chunk {
            records: Vec::new(),
            end: from,
        };
        let mut bytes = 0usize;
        let mut last_unit = None;
        loop {
            let frame_start = chunk.end;
            match read_frame(&mut r)? {
                FrameRead::End => break,
                FrameRead::Bad(why) => {
                    self.inner.metrics.spool_corrupt.inc();
                    tracing::warn!(
                        segment = seq,
                        offset = frame_start,
                        "ingest spool: {why}; skipping the rest of this segment"
                    );
                    chunk.end = len;
                    break;
                }
                FrameRead::Ok { unit, record, size } => {
                    let full = chunk.records.len() >= max_rows || bytes >= max_bytes;
                    if full && last_unit != Some(unit) {
                        break;
                    }
                    last_unit = Some(unit);
                    bytes += record.size();
                    chunk.records.push((unit, record));
                    chunk.end = frame_start + size as u64;
                }
            }
        }
        Ok(chunk)
    }

    /// Resolves when new durable data may be available.
    pub(crate) async fn wait_for_data(&self) {
        self.inner.replay.notified().await;
    }

    /// Records currently in segments not yet deleted (tests and shutdown logs).
    pub(crate) fn backlog(&self) -> (u64, u64) {
        let st = self.inner.lock();
        (st.segments.values().map(|s| s.records).sum(), st.bytes)
    }

    /// Writes and fsyncs everything pending, then stops the writer thread.
    /// Blocking: call from `spawn_blocking`.
    pub(crate) fn shutdown(&self) {
        let mut st = self.inner.lock();
        st.shutdown = true;
        self.inner.work.notify_one();
        while !st.writer_done {
            st = self.inner.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_gauges(&self, st: &State) {
        self.metrics.spool_bytes.set(st.bytes as i64);
        self.metrics.spool_segments.set(st.segments.len() as i64);
    }

    /// Applies the size cap for `extra` more bytes.
    fn make_room(&self, st: &mut State, extra: u64, overflow: bool) -> Result<(), DropReason> {
        if st.shutdown {
            return Err(DropReason::Shutdown);
        }
        // Records spooled one by one must not pile up in memory faster than
        // the disk takes them.
        if overflow && st.pending.len() as u64 + extra > self.cfg.segment_bytes {
            return Err(DropReason::SpoolFull);
        }
        while st.bytes + extra > self.cfg.max_bytes {
            if self.cfg.when_full == WhenSpoolFull::DropNewest {
                return Err(DropReason::SpoolFull);
            }
            let oldest = st
                .segments
                .iter()
                .find(|(_, s)| s.sealed)
                .map(|(seq, _)| *seq);
            let Some(seq) = oldest else {
                return Err(DropReason::SpoolFull);
            };
            let seg = st.segments.remove(&seq).expect("present");
            st.bytes = st.bytes.saturating_sub(seg.len);
            self.metrics.dropped(DropReason::SpoolEvicted, seg.records);
            tracing::warn!(
                segment = seq,
                records = seg.records,
                "ingest spool: full; deleted the oldest segment (when_spool_full = \"drop_oldest\")"
            );
            let _ = std::fs::remove_file(segment_path(&self.cfg.dir, seq));
        }
        Ok(())
    }

    fn run_writer(self: Arc<Self>) {
        let mut active: Option<(u64, File)> = None;
        loop {
            let mut st = self.lock();
            while st.pending.is_empty() && !st.rotate && !st.shutdown {
                st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            let buf = std::mem::take(&mut st.pending);
            let acks = std::mem::take(&mut st.pending_acks);
            let records = std::mem::take(&mut st.pending_records);
            st.overflow_unit = None;
            let rotate = std::mem::take(&mut st.rotate);
            let shutdown = st.shutdown;
            drop(st);

            if !buf.is_empty() {
                match self.write(&mut active, &buf) {
                    Ok(seq) => {
                        let mut st = self.lock();
                        if let Some(seg) = st.segments.get_mut(&seq) {
                            seg.len += buf.len() as u64;
                            seg.records += records;
                            if seg.len >= self.cfg.segment_bytes {
                                seg.sealed = true;
                                active = None;
                            }
                        }
                        self.publish_gauges(&st);
                        drop(st);
                        self.metrics.spooled_records.inc_by(records);
                        resolve_all(acks, Ok(Durability::Spooled));
                        self.replay.notify_one();
                    }
                    Err(e) => {
                        tracing::error!(dir = %self.cfg.dir.display(), records, error = %e, "ingest spool: write failed; these records are lost (check disk space and permissions)");
                        let mut st = self.lock();
                        st.bytes = st.bytes.saturating_sub(buf.len() as u64);
                        // The active file may hold a partial write: seal it at
                        // its last good length and start a new one.
                        if let Some((seq, _)) = active.take() {
                            if let Some(seg) = st.segments.get_mut(&seq) {
                                seg.sealed = true;
                            }
                        }
                        drop(st);
                        self.metrics.dropped(DropReason::SpoolIo, records);
                        resolve_all(acks, Err(AckError::Dropped(DropReason::SpoolIo)));
                    }
                }
            }
            if rotate {
                if let Some((seq, _)) = active.take() {
                    let mut st = self.lock();
                    if let Some(seg) = st.segments.get_mut(&seq) {
                        seg.sealed = true;
                    }
                    drop(st);
                    self.replay.notify_one();
                }
            }
            if shutdown && self.lock().pending.is_empty() {
                break;
            }
        }
        let mut st = self.lock();
        st.writer_done = true;
        drop(st);
        self.done.notify_all();
    }

    /// Appends `buf` to the active segment (creating it) and fsyncs.
    fn write(&self, active: &mut Option<(u64, File)>, buf: &[u8]) -> std::io::Result<u64> {
        if active.is_none() {
            let mut st = self.lock();
            let now = unix_micros(std::time::SystemTime::now()).max(0) as u64;
            let seq = st
                .segments
                .keys()
                .next_back()
                .map_or(now, |last| now.max(last + 1));
            let path = segment_path(&self.cfg.dir, seq);
            let mut file = gatehouse_config::secure_fs::create_new_append(&path)?;
            file.write_all(MAGIC)?;
            file.sync_data()?;
            File::open(&self.cfg.dir)?.sync_all()?;
            st.segments.insert(
                seq,
                Seg {
                    len: HEADER_LEN,
                    sealed: false,
                    records: 0,
                },
            );
            st.bytes += HEADER_LEN;
            *active = Some((seq, file));
        }
        let (seq, file) = active.as_mut().expect("just created");
        file.write_all(buf)?;
        file.sync_data()?;
        Ok(*seq)
    }
}

pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:020}.spool"))
}

fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(seq) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".spool"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

/// A random id for this spool directory, kept in `node-id`.
fn node_id(dir: &Path) -> std::io::Result<String> {
    use std::hash::{BuildHasher, Hasher};
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(unix_micros(std::time::SystemTime::now()));
    h.write_u32(std::process::id());
    let mut h2 = std::collections::hash_map::RandomState::new().build_hasher();
    h2.write_u64(h.finish());
    let id = format!("{:016x}{:016x}", h.finish(), h2.finish());
    let tmp = dir.join("node-id.tmp");
    let mut f = gatehouse_config::secure_fs::create(&tmp)?;
    f.write_all(id.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(id)
}

pub(crate) fn encode_frame(
    out: &mut Vec<u8>,
    unit: i64,
    received_us: i64,
    gateway_code: &str,
    topic: &str,
    payload: &[u8],
) {
    let body_len = 8 + 8 + 4 + gateway_code.len() + 4 + topic.len() + 4 + payload.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled below
    out.extend_from_slice(&unit.to_le_bytes());
    out.extend_from_slice(&received_us.to_le_bytes());
    for part in [gateway_code.as_bytes(), topic.as_bytes(), payload] {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part);
    }
    let crc = crc32fast::hash(&out[start + FRAME_HEAD..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

enum FrameRead {
    Ok {
        unit: i64,
        record: Record,
        size: usize,
    },
    End,
    Bad(String),
}

fn read_frame(r: &mut impl Read) -> std::io::Result<FrameRead> {
    let mut head = [0u8; FRAME_HEAD];
    let got = read_full(r, &mut head)?;
    if got == 0 {
        return Ok(FrameRead::End);
    }
    if got < FRAME_HEAD {
        return Ok(FrameRead::Bad(format!(
            "torn frame header ({got} of 8 bytes)"
        )));
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len > MAX_BODY {
        return Ok(FrameRead::Bad(format!("implausible frame length {len}")));
    }
    let mut body = vec![0u8; len as usize];
    let got = read_full(r, &mut body)?;
    if got < body.len() {
        return Ok(FrameRead::Bad(format!("torn frame ({got} of {len} bytes)")));
    }
    if crc32fast::hash(&body) != crc {
        return Ok(FrameRead::Bad("frame checksum mismatch".into()));
    }
    match decode_body(&body) {
        Some((unit, record)) => Ok(FrameRead::Ok {
            unit,
            record,
            size: FRAME_HEAD + body.len(),
        }),
        None => Ok(FrameRead::Bad("malformed frame body".into())),
    }
}

fn decode_body(b: &[u8]) -> Option<(i64, Record)> {
    let mut pos = 0;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = b.get(pos..pos + n)?;
        pos += n;
        Some(s)
    };
    let unit = i64::from_le_bytes(take(8)?.try_into().ok()?);
    let received_us = i64::from_le_bytes(take(8)?.try_into().ok()?);
    let mut part = || -> Option<Vec<u8>> {
        let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        Some(take(n)?.to_vec())
    };
    let gateway_code = String::from_utf8(part()?).ok()?;
    let topic = String::from_utf8(part()?).ok()?;
    let payload = part()?;
    if pos != b.len() {
        return None;
    }
    Some((
        unit,
        Record {
            received_at: crate::record::from_unix_micros(received_us),
            gateway_code,
            topic,
            payload,
        },
    ))
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[derive(Debug)]
struct Scan {
    valid_len: u64,
    file_len: u64,
    records: u64,
    corrupt: Option<String>,
}

fn scan_segment(path: &Path) -> std::io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    if read_full(&mut r, &mut magic)? < 8 || &magic != MAGIC {
        return Ok(Scan {
            valid_len: 0,
            file_len,
            records: 0,
            corrupt: Some("bad or missing segment header".into()),
        });
    }
    let mut scan = Scan {
        valid_len: HEADER_LEN,
        file_len,
        records: 0,
        corrupt: None,
    };
    loop {
        match read_frame(&mut r)? {
            FrameRead::End => break,
            FrameRead::Bad(why) => {
                scan.corrupt = Some(format!("{why} at offset {}", scan.valid_len));
                break;
            }
            FrameRead::Ok { size, .. } => {
                scan.valid_len += size as u64;
                scan.records += 1;
            }
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests;
