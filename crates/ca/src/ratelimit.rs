//! Rate limits: at most N requests in any sliding minute per key (a user, a device, a client
//! address), in memory (a restart forgets them; several replicas each count their own).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Above this many keys, idle ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// A sliding-window limiter.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: usize,
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// At most `per_minute` requests per key in any 60 seconds.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: usize::try_from(per_minute).unwrap_or(usize::MAX),
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request for `key` at `now`; false when it is over the limit (and then it is
    /// not counted).
    pub fn allow(&self, key: &str, now: Instant) -> bool {
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        if hits.len() > PRUNE_ABOVE {
            hits.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        let queue = hits.entry(key.to_owned()).or_default();
        while queue
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            queue.pop_front();
        }
        if queue.len() >= self.per_minute {
            return false;
        }
        queue.push_back(now);
        true
    }
}

/// What the per-address limit says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allowed,
    /// The first refusal of a burst: record it.
    FirstRefused,
    /// A later refusal of the same burst: answer it, record nothing.
    Refused,
}

/// The per-client-address limit, which tells the first refusal of a burst from the rest, so
/// that a flood costs one audit-log row rather than one per request. A burst ends when a
/// request from the address is allowed again.
#[derive(Debug)]
pub struct AddressLimiter {
    limiter: RateLimiter,
    bursting: Mutex<HashSet<String>>,
}

impl AddressLimiter {
    /// At most `per_minute` requests per address in any 60 seconds.
    pub fn new(per_minute: u32) -> Self {
        Self {
            limiter: RateLimiter::new(per_minute),
            bursting: Mutex::new(HashSet::new()),
        }
    }

    /// Counts a request from `key` (see [`address_key`]) at `now`.
    pub fn check(&self, key: &str, now: Instant) -> Verdict {
        let allowed = self.limiter.allow(key, now);
        let mut bursting = self.bursting.lock().unwrap_or_else(|e| e.into_inner());
        if allowed {
            bursting.remove(key);
            return Verdict::Allowed;
        }
        if bursting.len() > PRUNE_ABOVE {
            // Forgetting only means a burst may be recorded once more.
            bursting.clear();
        }
        if bursting.insert(key.to_owned()) {
            Verdict::FirstRefused
        } else {
            Verdict::Refused
        }
    }
}

/// The key an address is counted under: the IPv4 address, or the /64 of an IPv6 one (a single
/// host usually holds a whole /64). `None` for loopback, which is never limited: such a client
/// is a reverse proxy on this host, speaking for everyone.
pub fn address_key(ip: IpAddr) -> Option<String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        _ if ip.is_loopback() => None,
        IpAddr::V4(v4) => Some(v4.to_string()),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_over_a_sliding_minute() {
        let rl = RateLimiter::new(3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(rl.allow("alice", t0 + Duration::from_secs(i)));
        }
        assert!(!rl.allow("alice", t0 + Duration::from_secs(10)));
        assert!(rl.allow("bob", t0 + Duration::from_secs(10)));
        // The first request leaves the window at t0 + 60 s.
        assert!(!rl.allow("alice", t0 + Duration::from_secs(59)));
        assert!(rl.allow("alice", t0 + Duration::from_secs(60)));
        assert!(!rl.allow("alice", t0 + Duration::from_secs(60)));
        assert!(rl.allow("alice", t0 + Duration::from_secs(61)));
    }

    #[test]
    fn only_the_first_refusal_of_a_burst_is_marked() {
        let rl = AddressLimiter::new(2);
        let t0 = Instant::now();
        assert_eq!(rl.check("a", t0), Verdict::Allowed);
        assert_eq!(rl.check("a", t0), Verdict::Allowed);
        assert_eq!(rl.check("a", t0), Verdict::FirstRefused);
        for _ in 0..100 {
            assert_eq!(rl.check("a", t0 + Duration::from_secs(1)), Verdict::Refused);
        }
        assert_eq!(rl.check("b", t0), Verdict::Allowed);
        // The window frees up: the burst is over, and the next one is recorded again.
        assert_eq!(rl.check("a", t0 + WINDOW), Verdict::Allowed);
        assert_eq!(rl.check("a", t0 + WINDOW), Verdict::Allowed);
        assert_eq!(rl.check("a", t0 + WINDOW), Verdict::FirstRefused);
    }

    #[test]
    fn addresses_are_counted_by_host_and_ipv6_by_64() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.7").as_deref(), Some("203.0.113.7"));
        assert_eq!(key("::ffff:203.0.113.7").as_deref(), Some("203.0.113.7"));
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), key("2001:db8:1:2:ffff::1"));
        assert_eq!(key("2001:db8:1:2::1").as_deref(), Some("2001:db8:1:2::/64"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("127.0.0.1"), None);
        assert_eq!(key("::1"), None);
        assert_eq!(key("::ffff:127.0.0.1"), None);
    }
}
