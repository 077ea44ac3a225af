use std::fs::OpenOptions;
use std::io::Write;

use super::*;
use crate::decode::{Decoder, Item};

fn cfg(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 30,
        segment_bytes: 1 << 20,
        when_full: WhenSpoolFull::DropNewest,
        unit_rows: 1000,
    }
}

fn metrics() -> Metrics {
    Metrics::new(None).unwrap()
}

fn items(range: std::ops::Range<u32>) -> Vec<Item> {
    let d = Decoder::new(None, gatehouse_config::TimeFormat::Auto);
    range
        .map(|i| {
            d.decode(Record::new(
                "GW-1",
                "telemetry/GW-1/data",
                format!("{{\"seq\":{i}}}"),
            ))
        })
        .collect()
}

/// Appends, waits for the fsync via acks.
fn append(spool: &Spool, unit: i64, items: &[Item]) {
    let (ack, waiter) = Ack::new();
    assert!(spool.append_batch(unit, items, vec![ack]));
    assert_eq!(waiter.blocking_wait(), Ok(Durability::Spooled));
}

/// Every record left in the spool, in replay order, as (unit, seq payload).
fn replay_all(spool: &Spool) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        match spool.next(cursor) {
            Next::Idle => break,
            Next::Finished { seq } => {
                spool.finish_segment(seq).unwrap();
                cursor = None;
            }
            Next::Read { seq, from, len } => {
                let chunk = spool.read(seq, from, len, 7, 1 << 20).unwrap();
                out.extend(
                    chunk
                        .records
                        .into_iter()
                        .map(|(u, r)| (u, String::from_utf8(r.payload).unwrap())),
                );
                cursor = Some((seq, chunk.end));
            }
        }
    }
    out
}

fn seqs(v: &[(i64, String)]) -> Vec<String> {
    v.iter().map(|(_, p)| p.clone()).collect()
}

fn expected(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{{\"seq\":{i}}}")).collect()
}

fn only_segment(dir: &Path) -> PathBuf {
    let segs = list_segments(dir).unwrap();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs[0].1.clone()
}

#[test]
fn records_survive_a_restart_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(cfg(dir.path()), metrics()).unwrap();
    append(&spool, 1, &items(0..10));
    append(&spool, 2, &items(10..25));
    spool.shutdown();
    let spool = Spool::open(cfg(dir.path()), metrics()).unwrap();
    assert_eq!(spool.backlog().0, 25);
    let got = replay_all(&spool);
    assert_eq!(seqs(&got), expected(0..25));
    // Chunks end on unit boundaries: unit 1 whole, then unit 2 whole.
    assert!(got[..10].iter().all(|(u, _)| *u == 1));
    assert!(got[10..].iter().all(|(u, _)| *u == 2));
    assert!(
        list_segments(dir.path()).unwrap().is_empty(),
        "replayed segment deleted"
    );
    spool.shutdown();
}

#[test]
fn torn_tail_keeps_every_complete_record() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(cfg(dir.path()), metrics()).unwrap();
    append(&spool, 1, &items(0..20));
    spool.shutdown();
    let path = only_segment(dir.path());
    // Simulate a crash mid-write: half a frame at the end.
    let mut frame = Vec::new();
    encode_frame(&mut frame, 2, 0, "GW-1", "t", b"{\"seq\":20}");
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&frame[..frame.len() / 2]).unwrap();
    drop(f);

    let m = metrics();
    let spool = Spool::open(cfg(dir.path()), m.clone()).unwrap();
    assert_eq!(m.spool_corrupt.get(), 1, "torn tail reported");
    assert_eq!(seqs(&replay_all(&spool)), expected(0..20));
    spool.shutdown();
}

#[test]
fn torn_frame_header_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(cfg(dir.path()), metrics()).unwrap();
    append(&spool, 1, &items(0..3));
    spool.shutdown();
    let path = only_segment(dir.path());
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[9, 0, 0]).unwrap();
    drop(f);
    let m = metrics();
    let spool = Spool::open(cfg(dir.path()), m.clone()).unwrap();
    assert_eq!(m.spool_corrupt.get(), 1);
    assert_eq!(seqs(&replay_all(&spool)), expected(0..3));
    spool.shutdown();
}

#[test]
fn corrupt_record_ends_the_segment_without_losing_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(cfg(dir.path()), metrics()).unwrap();
    append(&spool, 1, &items(0..10));
    append(&spool, 2, &items(10..20));
    spool.shutdown();
    let path = only_segment(dir.path());
    // Flip a payload byte inside record 12 (a bit-rotted frame).
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = b"{\"seq\":12}";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at + 7] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let m = metrics();
    let spool = Spool::open(cfg(dir.path()), m.clone()).unwrap();
    assert_eq!(m.spool_corrupt.get(), 1, "checksum mismatch reported");
    assert_eq!(seqs(&replay_all(&spool)), expected(0..12));
    spool.shutdown();
}

#[test]
fn garbage_length_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(cfg(dir.path()), metrics()).unwrap();
    append(&spool, 1, &items(0..2));
    spool.shutdown();
    let path = only_segment(dir.path());
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 1, 2, 3])
        .unwrap();
    drop(f);
    let spool = Spool::open(cfg(dir.path()), metrics()).unwrap();
    assert_eq!(seqs(&replay_all(&spool)), expected(0..2));
    spool.shutdown();
}

#[test]
fn bad_header_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(segment_path(dir.path(), 5), b"GHSP").unwrap();
    let spool = Spool::open(cfg(dir.path()), metrics()).unwrap();
    assert_eq!(spool.next(None), Next::Idle);
    assert!(
        segment_path(dir.path(), 5)
            .with_extension("corrupt")
            .exists()
    );
    spool.shutdown();
}

#[test]
fn segments_rotate_and_replay_across_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = 300;
    let spool = Spool::open(c, metrics()).unwrap();
    for u in 0..10u32 {
        append(&spool, u as i64, &items(u * 5..u * 5 + 5));
    }
    assert!(list_segments(dir.path()).unwrap().len() >= 5);
    assert_eq!(seqs(&replay_all(&spool)), expected(0..50));
    spool.shutdown();
}

#[test]
fn live_segment_is_replayed_then_sealed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(cfg(dir.path()), metrics()).unwrap();
    append(&spool, 1, &items(0..4));
    let got = replay_all(&spool);
    assert_eq!(seqs(&got), expected(0..4));
    // The active segment is fully read but not sealed: the replay asks for rotation.
    assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
    spool.request_rotate();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let seq = list_segments(dir.path()).unwrap()[0].0;
        if spool.next(Some((seq, u64::MAX))) == (Next::Finished { seq }) {
            spool.finish_segment(seq).unwrap();
            break;
        }
        assert!(std::time::Instant::now() < deadline, "segment never sealed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(list_segments(dir.path()).unwrap().is_empty());
    spool.shutdown();
}

#[test]
fn cap_drop_newest_refuses_and_fails_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_bytes = 1000;
    c.segment_bytes = 1000;
    let m = metrics();
    let spool = Spool::open(c, m.clone()).unwrap();
    append(&spool, 1, &items(0..10));
    let (ack, waiter) = Ack::new();
    assert!(!spool.append_batch(2, &items(10..20), vec![ack]));
    assert_eq!(
        waiter.blocking_wait(),
        Err(AckError::Dropped(DropReason::SpoolFull))
    );
    assert_eq!(m.drops.with_label_values(&["spool_full"]).get(), 10);
    assert_eq!(seqs(&replay_all(&spool)), expected(0..10));
    spool.shutdown();
}

#[test]
fn cap_drop_oldest_evicts_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_bytes = 1200;
    c.segment_bytes = 300;
    c.when_full = WhenSpoolFull::DropOldest;
    let m = metrics();
    let spool = Spool::open(c, m.clone()).unwrap();
    for u in 0..10u32 {
        append(&spool, u as i64, &items(u * 5..u * 5 + 5));
    }
    let evicted = m.drops.with_label_values(&["spool_evicted"]).get();
    assert!(evicted > 0);
    let got = seqs(&replay_all(&spool));
    // The newest records are all there, the oldest were evicted.
    assert_eq!(got.len() as u64 + evicted, 50);
    assert_eq!(got, expected(evicted as u32..50));
    spool.shutdown();
}

#[test]
fn overflow_records_are_grouped_into_bounded_units() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.unit_rows = 3;
    let spool = Spool::open(c, metrics()).unwrap();
    let mut waiters = Vec::new();
    for i in 0..7 {
        let (ack, w) = Ack::new();
        let r = Record::new("GW", "t", format!("{{\"seq\":{i}}}"));
        assert!(spool.append_record(&r, Some(ack)));
        waiters.push(w);
    }
    for w in waiters {
        assert_eq!(w.blocking_wait(), Ok(Durability::Spooled));
    }
    let got = replay_all(&spool);
    assert_eq!(seqs(&got), expected(0..7));
    let mut per_unit = std::collections::BTreeMap::new();
    for (u, _) in &got {
        *per_unit.entry(*u).or_insert(0) += 1;
    }
    assert!(per_unit.values().all(|n| *n <= 3), "{per_unit:?}");
    spool.shutdown();
}

#[test]
fn node_id_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let a = Spool::open(cfg(dir.path()), metrics()).unwrap();
    let id = a.node().to_string();
    a.shutdown();
    let b = Spool::open(cfg(dir.path()), metrics()).unwrap();
    assert_eq!(b.node(), id);
    assert_eq!(id.len(), 32);
    b.shutdown();
}
