//! Token buckets by key (an IP address, an API key, a user).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept at most; beyond it the full (idle) ones are dropped.
const MAX_BUCKETS: usize = 100_000;

pub struct RateLimiter {
    rate_per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate_per_s: f64, burst: f64) -> Self {
        RateLimiter { rate_per_s, burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `key`, or says how many seconds until one is free.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.rate_per_s, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate_per_s).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate_per_s).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_burst_then_refusals_with_the_wait() {
        let l = super::RateLimiter::new(1.0 / 60.0, 3.0);
        assert!((0..3).all(|_| l.take("1.2.3.4").is_ok()));
        let wait = l.take("1.2.3.4").unwrap_err();
        assert!((50..=60).contains(&wait), "{wait}");
        assert!(l.take("5.6.7.8").is_ok(), "another key has its own bucket");
    }
}
