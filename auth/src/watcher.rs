//! Live CRL: a std thread polls the CRL file, reloads it on change and
//! publishes the new [`RevocationSet`] lock-free.
//!
//! A std thread (not a tokio task) so the same code runs in the tokio broker
//! and inside Mosquitto's process. Change detection compares the file's
//! length, mtime, ctime, inode and device, which also catches the
//! write-temp-then-rename publication used by provisioning.
//!
//! A reload never goes back in time: a validly signed CRL that is older than
//! the one in force (lower cRLNumber, same number with other entries, or no
//! number at all; see [`CrlRollback`](crate::CrlRollback)) is refused, the
//! CRL in force is kept, one warning names the file and both numbers, and
//! [`CrlStatusSnapshot::reloads_rollback`] counts it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::crl::{CrlError, CrlVerifier, RevocationSet};
use crate::serial::Serial;

/// Capacity of the revocation broadcast channel.
const UPDATE_CHANNEL_CAPACITY: usize = 64;

/// How [`CrlWatcher`] polls and enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// How often the file's metadata is checked.
    pub poll_interval: Duration,
    /// When the CRL is past its nextUpdate, refuse every certificate
    /// ([`RevocationError::CrlExpired`]) instead of serving the last set.
    pub fail_closed: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll_interval: Duration::from_secs(1),
            fail_closed: false,
        }
    }
}

impl WatchOptions {
    /// From `[tls] crl_poll_interval` and `crl_fail_closed`.
    pub fn from_settings(tls: &gatehouse_config::TlsSettings) -> WatchOptions {
        WatchOptions {
            poll_interval: tls.crl_poll_interval,
            fail_closed: tls.crl_fail_closed,
        }
    }
}

/// Why a certificate is refused by the revocation check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("certificate serial {serial} is revoked (listed in the CRL)")]
    Revoked { serial: Serial },

    #[error(
        "the CRL expired at {next_update} (nextUpdate) and [tls] crl_fail_closed is set, so every \
         client is refused: publish a fresh CRL"
    )]
    CrlExpired { next_update: OffsetDateTime },
}

/// Sent to subscribers after each successful reload.
///
/// Delivered through a bounded `tokio::sync::broadcast` channel: a subscriber
/// that receives `RecvError::Lagged` has missed updates and must rescan its
/// open sessions against [`RevocationHandle::current`].
#[derive(Debug, Clone)]
pub struct RevocationUpdate {
    /// Serials in the new set that were not in the previous one (may be
    /// empty). Sessions using them must be disconnected.
    pub newly_revoked: Arc<[Serial]>,
    /// The set now in force.
    pub set: Arc<RevocationSet>,
}

/// Counters for metrics, read without locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlStatusSnapshot {
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Valid CRLs refused because they are older than the one in force
    /// (`gatehouse_crl_reloads_total{result="rollback"}`).
    pub reloads_rollback: u64,
    /// The set in force is past its nextUpdate.
    pub stale: bool,
    /// Revoked serials in the set in force.
    pub entries: usize,
    /// Why the last failed reload failed (cleared by a successful one).
    pub last_error: Option<String>,
    /// When the set in force was loaded.
    pub last_reload: Option<SystemTime>,
}

struct Shared {
    set: ArcSwap<RevocationSet>,
    fail_closed: bool,
    /// Dropped (set to `None`) when the watcher stops, closing the channel.
    updates: Mutex<Option<broadcast::Sender<RevocationUpdate>>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    reloads_rollback: AtomicU64,
    stale: AtomicBool,
    entries: AtomicUsize,
    last_error: ArcSwapOption<String>,
    /// Nanoseconds since the Unix epoch; 0 = never.
    last_reload_nanos: AtomicU64,
}

impl Shared {
    fn new(set: RevocationSet, fail_closed: bool) -> Shared {
        let (updates, _) = broadcast::channel(UPDATE_CHANNEL_CAPACITY);
        let stale = set.is_stale(OffsetDateTime::now_utc());
        Shared {
            entries: AtomicUsize::new(set.len()),
            set: ArcSwap::from_pointee(set),
            fail_closed,
            updates: Mutex::new(Some(updates)),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            reloads_rollback: AtomicU64::new(0),
            stale: AtomicBool::new(stale),
            last_error: ArcSwapOption::empty(),
            last_reload_nanos: AtomicU64::new(0),
        }
    }

    fn mark_reloaded(&self) {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos().max(1) as u64);
        self.last_reload_nanos.store(nanos, Ordering::Relaxed);
    }
}

/// Cheap, cloneable read side of the revocation state.
#[derive(Clone)]
pub struct RevocationHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RevocationHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationHandle")
            .field("set", &*self.shared.set.load())
            .field("fail_closed", &self.shared.fail_closed)
            .finish()
    }
}

impl RevocationHandle {
    /// A handle over a set that never changes (no CRL configured, tests).
    /// Never fails closed.
    pub fn fixed(set: RevocationSet) -> RevocationHandle {
        let shared = Shared::new(set, false);
        shared.mark_reloaded();
        RevocationHandle {
            shared: Arc::new(shared),
        }
    }

    /// The set in force (lock-free).
    pub fn current(&self) -> Arc<RevocationSet> {
        self.shared.set.load_full()
    }

    /// Whether `serial` is listed in the set in force (lock-free, no
    /// allocation, no reference count touched: the per-message check).
    pub fn is_revoked(&self, serial: &Serial) -> bool {
        self.shared.set.load().contains(serial)
    }

    /// Admission check for a certificate serial.
    ///
    /// `Revoked` if listed; otherwise, only when `fail_closed` is set and the
    /// set is past its nextUpdate, `CrlExpired`. Lock-free and allocation-free.
    pub fn check(&self, serial: &Serial) -> Result<(), RevocationError> {
        let set = self.shared.set.load();
        if set.contains(serial) {
            return Err(RevocationError::Revoked { serial: *serial });
        }
        if self.shared.fail_closed {
            if let Some(next_update) = set.next_update {
                if OffsetDateTime::now_utc() > next_update {
                    return Err(RevocationError::CrlExpired { next_update });
                }
            }
        }
        Ok(())
    }

    /// Receives a [`RevocationUpdate`] after every successful reload.
    ///
    /// A receiver that falls behind gets `RecvError::Lagged`: it has missed
    /// updates and must rescan all its open sessions against
    /// [`RevocationHandle::current`]. `RecvError::Closed` means the watcher
    /// stopped. `try_recv` works without a tokio runtime (Mosquitto tick).
    pub fn subscribe(&self) -> broadcast::Receiver<RevocationUpdate> {
        match &*self
            .shared
            .updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            Some(tx) => tx.subscribe(),
            // Watcher already stopped: a receiver that reports `Closed`.
            None => broadcast::channel(1).1,
        }
    }

    /// Counters for metrics.
    pub fn status(&self) -> CrlStatusSnapshot {
        let s = &self.shared;
        let nanos = s.last_reload_nanos.load(Ordering::Relaxed);
        CrlStatusSnapshot {
            reloads_ok: s.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: s.reloads_failed.load(Ordering::Relaxed),
            reloads_rollback: s.reloads_rollback.load(Ordering::Relaxed),
            stale: s.stale.load(Ordering::Relaxed),
            entries: s.entries.load(Ordering::Relaxed),
            last_error: s.last_error.load_full().map(|e| (*e).clone()),
            last_reload: (nanos != 0).then(|| UNIX_EPOCH + Duration::from_nanos(nanos)),
        }
    }
}

/// Identity of a file version, from its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

/// What the poll loop last saw at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    File(FileStamp),
    Missing(String),
}

/// Watches a CRL file on its own thread. Stops (and joins) on
/// [`CrlWatcher::stop`] or drop; handles keep the last set afterwards.
pub struct CrlWatcher {
    handle: RevocationHandle,
    path: PathBuf,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for CrlWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlWatcher")
            .field("path", &self.path)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl CrlWatcher {
    /// Loads `path` (this must succeed: the error names the file and the
    /// reason) and starts polling it every `options.poll_interval`.
    pub fn start(
        path: PathBuf,
        verifier: CrlVerifier,
        options: WatchOptions,
    ) -> Result<CrlWatcher, CrlError> {
        let in_file = |e: CrlError| match e {
            e @ CrlError::Io { .. } => e,
            other => CrlError::InFile {
                path: path.clone(),
                source: Box::new(other),
            },
        };
        let meta = std::fs::metadata(&path).map_err(|source| CrlError::Io {
            path: path.clone(),
            source,
        })?;
        let set = RevocationSet::from_crl_file(&path, &verifier).map_err(in_file)?;
        let now = OffsetDateTime::now_utc();
        let stale = set.is_stale(now);
        tracing::info!(
            path = %path.display(),
            entries = set.len(),
            crl_number = set.crl_number.as_deref().unwrap_or("-"),
            next_update = ?set.next_update,
            "CRL loaded"
        );
        if stale {
            tracing::warn!(
                path = %path.display(),
                next_update = ?set.next_update,
                fail_closed = options.fail_closed,
                "CRL is past its nextUpdate: publish a fresh CRL"
            );
        }
        let shared = Arc::new(Shared::new(set, options.fail_closed));
        shared.reloads_ok.store(1, Ordering::Relaxed);
        shared.mark_reloaded();
        let handle = RevocationHandle {
            shared: shared.clone(),
        };
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let mut poller = Poller {
            path: path.clone(),
            verifier,
            shared,
            seen: Seen::File(FileStamp::of(&meta)),
            stale,
        };
        let stop_thread = stop.clone();
        let interval = options.poll_interval.max(Duration::from_millis(10));
        let thread = std::thread::Builder::new()
            .name("gatehouse-crl-watcher".into())
            .spawn(move || {
                let (lock, cvar) = &*stop_thread;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    let (guard, _) = cvar
                        .wait_timeout_while(stopped, interval, |s| !*s)
                        .unwrap_or_else(|p| p.into_inner());
                    stopped = guard;
                    if *stopped {
                        break;
                    }
                    drop(stopped);
                    poller.poll();
                    stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                }
                tracing::debug!(path = %poller.path.display(), "CRL watcher stopped");
            })
            .map_err(|source| CrlError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(CrlWatcher {
            handle,
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// A read handle (cheap to clone, outlives the watcher).
    pub fn handle(&self) -> RevocationHandle {
        self.handle.clone()
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops polling and joins the thread (returns within one reload).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            let (lock, cvar) = &*self.stop;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cvar.notify_all();
            if thread.join().is_err() {
                tracing::error!(path = %self.path.display(), "CRL watcher thread panicked");
            }
            // Close the update channel: subscribers see `Closed`.
            self.handle
                .shared
                .updates
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
    }
}

impl Drop for CrlWatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// State owned by the watcher thread.
struct Poller {
    path: PathBuf,
    verifier: CrlVerifier,
    shared: Arc<Shared>,
    seen: Seen,
    stale: bool,
}

impl Poller {
    fn poll(&mut self) {
        let now_seen = match std::fs::metadata(&self.path) {
            Ok(meta) => Seen::File(FileStamp::of(&meta)),
            Err(e) => Seen::Missing(e.to_string()),
        };
        if now_seen != self.seen {
            self.seen = now_seen.clone();
            match now_seen {
                Seen::File(_) => self.reload(),
                Seen::Missing(reason) => self.fail(format!("cannot read the CRL file: {reason}")),
            }
        }
        self.update_staleness();
    }

    fn reload(&mut self) {
        let new = match RevocationSet::from_crl_file(&self.path, &self.verifier) {
            Ok(set) => Arc::new(set),
            Err(e) => return self.fail(e.to_string()),
        };
        let old = self.shared.set.load_full();
        if let Some(rollback) = new.rollback_from(&old) {
            tracing::warn!(
                path = %self.path.display(),
                in_force = %rollback.in_force,
                offered = rollback.offered.as_deref().unwrap_or("none"),
                "CRL rollback refused in {}: {rollback}; keeping the CRL in force",
                self.path.display()
            );
            self.shared.reloads_rollback.fetch_add(1, Ordering::Relaxed);
            self.shared
                .last_error
                .store(Some(Arc::new(rollback.to_string())));
            return;
        }
        let newly_revoked: Arc<[Serial]> =
            new.iter().filter(|s| !old.contains(s)).copied().collect();
        let s = &self.shared;
        s.set.store(new.clone());
        s.entries.store(new.len(), Ordering::Relaxed);
        s.reloads_ok.fetch_add(1, Ordering::Relaxed);
        s.last_error.store(None);
        s.mark_reloaded();
        tracing::info!(
            path = %self.path.display(),
            entries = new.len(),
            newly_revoked = newly_revoked.len(),
            crl_number = new.crl_number.as_deref().unwrap_or("-"),
            "CRL reloaded"
        );
        if let Some(tx) = &*s.updates.lock().unwrap_or_else(|p| p.into_inner()) {
            // Fails only when nobody subscribed, which is fine.
            let _ = tx.send(RevocationUpdate {
                newly_revoked,
                set: new,
            });
        }
    }

    fn fail(&mut self, reason: String) {
        tracing::warn!(
            path = %self.path.display(),
            error = %reason,
            "CRL reload failed; keeping the last good CRL"
        );
        self.shared.reloads_failed.fetch_add(1, Ordering::Relaxed);
        self.shared.last_error.store(Some(Arc::new(reason)));
    }

    fn update_staleness(&mut self) {
        let set = self.shared.set.load();
        let stale = set.is_stale(OffsetDateTime::now_utc());
        if stale != self.stale {
            self.stale = stale;
            self.shared.stale.store(stale, Ordering::Relaxed);
            if stale {
                tracing::warn!(
                    path = %self.path.display(),
                    next_update = ?set.next_update,
                    fail_closed = self.shared.fail_closed,
                    "CRL is past its nextUpdate: publish a fresh CRL"
                );
            } else {
                tracing::info!(path = %self.path.display(), "CRL is current again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::sync::broadcast::error::TryRecvError;

    use super::*;
    use crate::testutil::*;

    const FAST: WatchOptions = WatchOptions {
        poll_interval: Duration::from_millis(25),
        fail_closed: false,
    };

    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
        ca: TestCa,
        verifier: CrlVerifier,
    }

    fn fixture(initial: &[Serial]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.crl");
        let ca = ca("Fleet CA");
        std::fs::write(&path, ca.crl(&crl_spec(1, initial))).unwrap();
        let verifier = CrlVerifier::from_ca_pem(ca.cert_pem()).unwrap();
        Fixture {
            _dir: dir,
            path,
            ca,
            verifier,
        }
    }

    /// Polls `f` until it returns `Some` or a second passes.
    fn within_a_second<T>(mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "condition not met within 1 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn next_update(rx: &mut broadcast::Receiver<RevocationUpdate>) -> RevocationUpdate {
        within_a_second(|| match rx.try_recv() {
            Ok(u) => Some(u),
            Err(TryRecvError::Empty) => None,
            Err(e) => panic!("{e}"),
        })
    }

    #[test]
    fn reloads_on_in_place_write_and_broadcasts_new_serials() {
        let (a, b) = (synthetic_serial(1), synthetic_serial(2));
        let fx = fixture(&[a]);
        let watcher = CrlWatcher::start(fx.path.clone(), fx.verifier.clone(), FAST).unwrap();
        let handle = watcher.handle();
        let mut rx = handle.subscribe();
        assert!(handle.current().contains(&a));
        assert_eq!(
            handle.check(&a),
            Err(RevocationError::Revoked { serial: a })
        );
        assert_eq!(handle.check(&b), Ok(()));

        std::fs::write(&fx.path, fx.ca.crl(&crl_spec(2, &[a, b]))).unwrap();
        let update = next_update(&mut rx);
        assert_eq!(&*update.newly_revoked, &[b]);
        assert!(update.set.contains(&b));
        assert!(handle.current().contains(&b));
        assert_eq!(
            handle.check(&b),
            Err(RevocationError::Revoked { serial: b })
        );
        let status = handle.status();
        assert_eq!(status.reloads_ok, 2);
        assert_eq!(status.reloads_failed, 0);
        assert_eq!(status.entries, 2);
        assert!(status.last_reload.is_some());
        watcher.stop();
    }

    #[test]
    fn reloads_on_temp_file_rename() {
        let (a, b, c) = (
            synthetic_serial(1),
            synthetic_serial(2),
            synthetic_serial(3),
        );
        let fx = fixture(&[a, b]);
        let watcher = CrlWatcher::start(fx.path.clone(), fx.verifier.clone(), FAST).unwrap();
        let handle = watcher.handle();
        let mut rx = handle.subscribe();

        // Same size as before (two entries): only the inode tells.
        let tmp = fx.path.with_extension("tmp");
        std::fs::write(&tmp, fx.ca.crl(&crl_spec(2, &[a, c]))).unwrap();
        std::fs::rename(&tmp, &fx.path).unwrap();
        let update = next_update(&mut rx);
        assert_eq!(&*update.newly_revoked, &[c]);
        let current = handle.current();
        assert!(current.contains(&c));
        assert!(!current.contains(&b), "un-listed serials leave the set");
        assert_eq!(current.crl_number.as_deref(), Some("02"));
    }

    #[test]
    fn broken_replacement_keeps_last_good_set() {
        let a = synthetic_serial(1);
        let fx = fixture(&[a]);
        let watcher = CrlWatcher::start(fx.path.clone(), fx.verifier.clone(), FAST).unwrap();
        let handle = watcher.handle();
        let mut rx = handle.subscribe();

        std::fs::write(&fx.path, "-----BEGIN X509 CRL-----\ntruncated").unwrap();
        let status = within_a_second(|| {
            let s = handle.status();
            (s.reloads_failed >= 1).then_some(s)
        });
        assert_eq!(status.reloads_failed, 1);
        assert!(
            status.last_error.as_deref().unwrap().contains("END"),
            "{status:?}"
        );
        assert!(
            handle.current().contains(&a),
            "last good set still in force"
        );
        assert_eq!(
            handle.check(&a),
            Err(RevocationError::Revoked { serial: a })
        );
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        // Not retried while the file stays the same.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(handle.status().reloads_failed, 1);

        // A CRL from another CA is "broken" too.
        let other = ca("Other CA");
        std::fs::write(&fx.path, other.crl(&crl_spec(5, &[]))).unwrap();
        within_a_second(|| (handle.status().reloads_failed >= 2).then_some(()));
        assert!(handle.current().contains(&a));

        // Recovery.
        let b = synthetic_serial(2);
        std::fs::write(&fx.path, fx.ca.crl(&crl_spec(3, &[a, b]))).unwrap();
        let update = next_update(&mut rx);
        assert_eq!(&*update.newly_revoked, &[b]);
        let status = handle.status();
        assert_eq!(status.last_error, None);
        assert_eq!(status.reloads_ok, 2);
    }

    #[test]
    fn stale_crl_fails_closed_only_when_asked() {
        let spec = TestCrl {
            this_update: now() - time::Duration::days(2),
            next_update: now() - time::Duration::days(1),
            ..crl_spec(1, &[synthetic_serial(1)])
        };
        let fx = fixture(&[]);
        std::fs::write(&fx.path, fx.ca.crl(&spec)).unwrap();
        let revoked = synthetic_serial(1);
        let good = synthetic_serial(2);

        let closed = CrlWatcher::start(
            fx.path.clone(),
            fx.verifier.clone(),
            WatchOptions {
                fail_closed: true,
                ..FAST
            },
        )
        .unwrap();
        let h = closed.handle();
        assert!(h.status().stale);
        match h.check(&good) {
            Err(RevocationError::CrlExpired { next_update }) => {
                assert_eq!(
                    next_update.unix_timestamp(),
                    spec.next_update.unix_timestamp()
                )
            }
            other => panic!("expected CrlExpired, got {other:?}"),
        }
        assert_eq!(
            h.check(&revoked),
            Err(RevocationError::Revoked { serial: revoked })
        );

        let open = CrlWatcher::start(fx.path.clone(), fx.verifier.clone(), FAST).unwrap();
        assert!(open.handle().status().stale);
        assert_eq!(open.handle().check(&good), Ok(()));

        // A fresh CRL clears staleness.
        std::fs::write(&fx.path, fx.ca.crl(&crl_spec(2, &[revoked]))).unwrap();
        within_a_second(|| (!h.status().stale).then_some(()));
        assert_eq!(h.check(&good), Ok(()));
    }

    #[test]
    fn stop_and_drop_join_promptly() {
        let fx = fixture(&[]);
        let slow = WatchOptions {
            poll_interval: Duration::from_secs(30),
            fail_closed: false,
        };
        let watcher = CrlWatcher::start(fx.path.clone(), fx.verifier.clone(), slow).unwrap();
        let handle = watcher.handle();
        let mut rx = handle.subscribe();
        let t = Instant::now();
        watcher.stop();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        // Handles outlive the watcher; subscribers see the channel close.
        assert!(handle.current().is_empty());
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Closed)));

        let watcher = CrlWatcher::start(fx.path.clone(), fx.verifier.clone(), slow).unwrap();
        let t = Instant::now();
        drop(watcher);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn start_errors_name_the_file() {
        let fx = fixture(&[]);
        let missing = fx.path.with_file_name("missing.crl");
        let err = CrlWatcher::start(missing, fx.verifier.clone(), FAST).unwrap_err();
        assert!(matches!(err, CrlError::Io { .. }));
        assert!(err.to_string().contains("missing.crl"), "{err}");

        std::fs::write(&fx.path, "garbage").unwrap();
        let err = CrlWatcher::start(fx.path.clone(), fx.verifier.clone(), FAST).unwrap_err();
        match &err {
            CrlError::InFile { path, source } => {
                assert_eq!(path, &fx.path);
                assert!(matches!(**source, CrlError::Malformed { .. }));
            }
            other => panic!("expected InFile, got {other:?}"),
        }
        assert!(err.to_string().contains("fleet.crl"), "{err}");
    }

    /// Waits for the watcher to refuse `n` rollbacks in total.
    fn rollbacks(handle: &RevocationHandle, n: u64) -> CrlStatusSnapshot {
        within_a_second(|| {
            let s = handle.status();
            (s.reloads_rollback >= n).then_some(s)
        })
    }

    #[test]
    fn older_crl_does_not_replace_newer_one() {
        let (a, b) = (synthetic_serial(1), synthetic_serial(2));
        let fx = fixture(&[a]);
        let watcher = CrlWatcher::start(fx.path.clone(), fx.verifier.clone(), FAST).unwrap();
        let handle = watcher.handle();
        let mut rx = handle.subscribe();
        std::fs::write(&fx.path, fx.ca.crl(&crl_spec(2, &[a, b]))).unwrap();
        next_update(&mut rx);

        // CRL number 1, validly signed, replayed over number 2.
        std::fs::write(&fx.path, fx.ca.crl(&crl_spec(1, &[a]))).unwrap();
        let status = rollbacks(&handle, 1);
        assert_eq!(
            handle.check(&b),
            Err(RevocationError::Revoked { serial: b }),
            "an older CRL un-revoked {b}"
        );
        assert_eq!(handle.current().crl_number.as_deref(), Some("02"));
        assert_eq!(status.reloads_ok, 2);
        assert_eq!(status.reloads_failed, 0);
        assert_eq!(status.entries, 2);
        let error = status.last_error.unwrap();
        assert!(
            error.contains("CRL number 1 ") && error.contains("CRL number 2 in force"),
            "{error}"
        );
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        // Refused once, not again on every poll.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(handle.status().reloads_rollback, 1);

        // A newer CRL is taken, even one that un-lists a serial, and
        // numbers compare as numbers (0x0100 > 0xFF).
        std::fs::write(&fx.path, fx.ca.crl(&crl_spec(255, &[a, b]))).unwrap();
        next_update(&mut rx);
        std::fs::write(&fx.path, fx.ca.crl(&crl_spec(256, &[b]))).unwrap();
        next_update(&mut rx);
        assert_eq!(handle.check(&a), Ok(()));
        let status = handle.status();
        assert_eq!((status.reloads_ok, status.reloads_rollback), (4, 1));
        assert_eq!(status.last_error, None);
    }

    #[test]
    fn same_number_needs_the_same_entries() {
        let (a, b) = (synthetic_serial(1), synthetic_serial(2));
        let fx = fixture(&[]);
        let first = crl_spec(3, &[a]);
        std::fs::write(&fx.path, fx.ca.crl(&first)).unwrap();
        let watcher = CrlWatcher::start(fx.path.clone(), fx.verifier.clone(), FAST).unwrap();
        let handle = watcher.handle();
        let mut rx = handle.subscribe();

        // Same number, other entries: refused.
        std::fs::write(&fx.path, fx.ca.crl(&crl_spec(3, &[b]))).unwrap();
        let status = rollbacks(&handle, 1);
        assert_eq!(
            handle.check(&a),
            Err(RevocationError::Revoked { serial: a }),
            "a CRL under the same number un-revoked {a}"
        );
        assert!(!handle.current().contains(&b));
        let error = status.last_error.unwrap();
        assert!(error.contains("bump the CRL number"), "{error}");

        // Same number and entries, signed again with later dates (what a
        // node does after NOTIFY gatehouse_crl): accepted.
        let resigned = TestCrl {
            this_update: first.this_update + time::Duration::minutes(10),
            next_update: first.next_update + time::Duration::days(1),
            ..first.clone()
        };
        std::fs::write(&fx.path, fx.ca.crl(&resigned)).unwrap();
        let update = next_update(&mut rx);
        assert!(update.newly_revoked.is_empty());
        assert_eq!(
            handle.current().next_update.unwrap().unix_timestamp(),
            resigned.next_update.unix_timestamp()
        );
        let status = handle.status();
        assert_eq!((status.reloads_ok, status.reloads_rollback), (2, 1));
        assert_eq!(status.last_error, None);
    }

    #[test]
    fn crl_without_number_cannot_replace_numbered_one() {
        let a = synthetic_serial(1);
        let fx = fixture(&[a]);
        let watcher = CrlWatcher::start(fx.path.clone(), fx.verifier.clone(), FAST).unwrap();
        let handle = watcher.handle();
        std::fs::write(&fx.path, crl_without_number(&fx.ca, &crl_spec(9, &[]))).unwrap();
        let status = rollbacks(&handle, 1);
        assert_eq!(
            handle.check(&a),
            Err(RevocationError::Revoked { serial: a }),
            "a CRL without a number un-revoked {a}"
        );
        assert!(
            status.last_error.unwrap().contains("has no CRL number"),
            "{:?}",
            handle.status()
        );
        watcher.stop();

        // Without a number in force nothing can be ordered: any valid CRL
        // of the CA replaces it.
        let watcher = CrlWatcher::start(fx.path.clone(), fx.verifier.clone(), FAST).unwrap();
        let handle = watcher.handle();
        let mut rx = handle.subscribe();
        assert_eq!(handle.current().crl_number, None);
        std::fs::write(&fx.path, crl_without_number(&fx.ca, &crl_spec(1, &[a]))).unwrap();
        next_update(&mut rx);
        std::fs::write(&fx.path, fx.ca.crl(&crl_spec(1, &[]))).unwrap();
        next_update(&mut rx);
        assert_eq!(handle.check(&a), Ok(()));
        assert_eq!(handle.status().reloads_rollback, 0);
    }

    #[test]
    fn fixed_handle() {
        let s = synthetic_serial(5);
        let h = RevocationHandle::fixed(RevocationSet::from_serials([s]));
        assert_eq!(h.check(&s), Err(RevocationError::Revoked { serial: s }));
        assert_eq!(h.check(&synthetic_serial(6)), Ok(()));
        let status = h.status();
        assert_eq!(status.entries, 1);
        assert!(!status.stale);
        assert_eq!(status.reloads_failed, 0);
        let h2 = h.clone();
        assert!(Arc::ptr_eq(&h.current(), &h2.current()));
    }
}
