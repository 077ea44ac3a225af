//! Listening ports for the private servers the tests start.
//!
//! Binding `127.0.0.1:0` and closing the socket again is racy: the kernel
//! hands the same number out as the *local* port of the next outgoing
//! connection (a client to PostgreSQL, an HTTP probe…), so a server started a
//! moment later on it fails with "Address already in use". CI saw exactly
//! that. Ports here come from below the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`, 32768–60999 by default), which
//! outgoing connections never use, are never handed out twice by one
//! process, start at an offset derived from the process id (so test binaries
//! running side by side walk different stretches), and are checked free by
//! a bind before they are returned.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// First port of the range used (inclusive).
const LOW: u32 = 20_000;
/// End of the range used (exclusive); at or below the ephemeral range.
const HIGH: u32 = 32_768;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A port on 127.0.0.1 that nobody listens on now, that this process has not
/// handed out before, and that the kernel does not give to outgoing
/// connections.
pub fn free_port() -> u16 {
    let span = HIGH.min(ephemeral_low()) - LOW;
    let start = std::process::id().wrapping_mul(7_919) % span;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + n % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {LOW}..{HIGH}");
}

/// Lowest ephemeral port of this kernel (32768 when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|&low: &u32| low > LOW + 1_000)
        .unwrap_or(HIGH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        for p in &ports {
            assert!((LOW..ephemeral_low().min(HIGH)).contains(&u32::from(*p)));
        }
        TcpListener::bind(("127.0.0.1", ports[199])).expect("the last port is bindable");
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let p = free_port();
        let _held = TcpListener::bind(("127.0.0.1", p + 1)).ok();
        let q = free_port();
        assert_ne!(q, p + 1, "a port with a listener was handed out");
    }
}
