//! Per-source-IP sliding-window rate limit of the registration endpoint, and
//! the client address behind trusted proxies.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows `limit` requests per `window` per IP.
#[derive(Debug)]
pub struct RateLimiter {
    limit: usize,
    window: Duration,
    hits: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            limit: limit as usize,
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request from `ip`; `false` when it is over the limit.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut hits = self.hits.lock().expect("rate limiter lock");
        if hits.len() > 100_000 {
            let window = self.window;
            hits.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let q = hits.entry(ip).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.len() >= self.limit {
            return false;
        }
        q.push_back(now);
        true
    }
}

/// The client address: the TCP peer, unless the peer is a trusted proxy, in
/// which case the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    let canon = |ip: IpAddr| ip.to_canonical();
    let peer = canon(peer);
    if !trusted.iter().any(|t| canon(*t) == peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut candidate = peer;
    for part in header.rsplit(',') {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) => {
                candidate = canon(ip);
                if !trusted.iter().any(|t| canon(*t) == candidate) {
                    return candidate;
                }
            }
            // A malformed entry: stop trusting the chain here.
            Err(_) => return candidate,
        }
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window() {
        let rl = RateLimiter::new(2, Duration::from_secs(10));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(rl.allow(ip, t0));
        assert!(rl.allow(ip, t0));
        assert!(!rl.allow(ip, t0 + Duration::from_secs(1)));
        assert!(rl.allow(other, t0), "limits are per IP");
        assert!(rl.allow(ip, t0 + Duration::from_secs(11)), "window slides");
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(stranger, Some("203.0.113.7"), &[proxy]), stranger);
        assert_eq!(client_ip(proxy, Some("203.0.113.7"), &[proxy]), client);
        assert_eq!(
            client_ip(proxy, Some("1.1.1.1, 203.0.113.7"), &[proxy]),
            client,
            "right-most untrusted"
        );
        assert_eq!(
            client_ip(proxy, Some("203.0.113.7, 10.0.0.9"), &[proxy]),
            client
        );
        assert_eq!(client_ip(proxy, Some("garbage"), &[proxy]), proxy);
        assert_eq!(client_ip(proxy, None, &[proxy]), proxy);
    }
}
