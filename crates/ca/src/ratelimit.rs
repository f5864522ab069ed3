//! Per-user and per-device rate limits: at most N requests in any sliding minute per key,
//! in memory (a restart forgets them; several replicas each count their own).

use std::collections::{HashMap, VecDeque};
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
}
