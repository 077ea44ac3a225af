//! Which database errors are worth retrying, and how long to wait.

use std::time::Duration;

/// What to do after a failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The database is unreachable or temporarily unable: spool and retry later.
    Retriable,
    /// The database refused the data itself (schema mismatch, bad value):
    /// retrying cannot help, so the rows go to the reject path.
    Fatal,
}

/// Explicit classification of `sqlx` errors.
///
/// Retriable: I/O and TLS failures, pool timeouts, protocol breakage (a
/// connection cut mid-message), a closed pool, and database errors that say
/// "not now": PostgreSQL SQLSTATE classes 08 (connection exception), 53
/// (insufficient resources: disk full, out of memory, too many connections),
/// 57P01-57P03 (shutdown / crash / cannot connect now), 40001/40P01
/// (serialization failure, deadlock), 55P03 (lock not available), 58030
/// (I/O error); SQLite BUSY, LOCKED, IOERR, FULL, CANTOPEN, PROTOCOL.
///
/// Also retriable: a table or schema that does not exist (42P01
/// undefined_table, 3F000 invalid_schema_name; see [`schema_missing`]). The
/// database came back empty (recreated, restored, a new server): the
/// PostgreSQL sink recreates its tables and retries at once; if even that
/// fails (say the configured schema namespace itself is gone), the records
/// wait in the spool instead of being dropped.
///
/// Everything else is fatal: other 42xxx errors (an existing table with
/// other columns, 42703, goes to the reject table), data exceptions (22xxx),
/// constraint violations (23xxx), decode errors.
pub(crate) fn classify(e: &sqlx::Error) -> ErrorClass {
    use sqlx::Error as E;
    match e {
        E::Io(_)
        | E::Tls(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::Protocol(_)
        | E::WorkerCrashed => ErrorClass::Retriable,
        E::Database(db) => match db.code() {
            Some(code) if retriable_code(&code) || missing_code(&code) => ErrorClass::Retriable,
            _ => ErrorClass::Fatal,
        },
        _ => ErrorClass::Fatal,
    }
}

/// True when `e` says a table or schema ingest writes to does not exist.
pub(crate) fn schema_missing(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().is_some_and(|c| missing_code(&c)),
        _ => false,
    }
}

fn missing_code(code: &str) -> bool {
    matches!(code, "42P01" | "3F000")
}

fn retriable_code(code: &str) -> bool {
    // PostgreSQL SQLSTATEs are exactly five characters; SQLite codes are
    // (extended) result codes of at most four digits.
    if code.len() != 5 {
        return code
            .parse::<i64>()
            // The primary result code is the low byte of the extended code.
            .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13 | 14 | 15));
    }
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03" | "58030"
        )
}

/// Capped exponential backoff: min, 2·min, 4·min, ... up to max.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[test]
    fn codes() {
        for c in [
            "08006", "08001", "57P01", "53100", "40P01", "5", "517", "10", "13",
        ] {
            assert!(retriable_code(c), "{c}");
        }
        for c in ["42P01", "42703", "22P02", "23505", "1", "19", "2067"] {
            assert!(!retriable_code(c), "{c}");
        }
        // A missing table or schema is waited out (and recreated), never
        // sent to the reject path.
        for c in ["42P01", "3F000"] {
            assert!(missing_code(c), "{c}");
        }
        for c in ["42703", "42804", "22P03", "1"] {
            assert!(!missing_code(c), "{c}");
        }
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), ErrorClass::Retriable);
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(classify(&sqlx::Error::Io(io)), ErrorClass::Retriable);
        assert_eq!(classify(&sqlx::Error::RowNotFound), ErrorClass::Fatal);
        assert_eq!(
            classify(&sqlx::Error::ColumnNotFound("x".into())),
            ErrorClass::Fatal
        );
    }
}
