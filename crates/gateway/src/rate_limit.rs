//! A token bucket per API key: `burst` requests at once, refilled at `per_second`.
//! Answers carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a request
//! over the limit gets 429 with `Retry-After`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};
use mercato_platform::{ApiError, auth::Caller, settings::RateLimitSettings};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The outcome of asking for one token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds until the next token, when refused.
    pub retry_after_secs: u64,
}

#[derive(Clone)]
pub struct RateLimiter {
    settings: RateLimitSettings,
    buckets: Arc<Mutex<HashMap<Uuid, Bucket>>>,
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings) -> Self {
        Self {
            settings,
            buckets: Arc::default(),
        }
    }

    pub fn check(&self, key: Uuid, now: Instant) -> Decision {
        let burst = f64::from(self.settings.burst.max(1));
        let rate = self.settings.per_second.max(f64::MIN_POSITIVE);
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        Decision {
            allowed,
            limit: self.settings.burst,
            remaining: bucket.tokens.floor() as u32,
            reset_secs: ((burst - bucket.tokens) / rate).ceil() as u64,
            retry_after_secs: if allowed {
                0
            } else {
                ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64
            },
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }
}

fn write_headers(headers: &mut HeaderMap, d: &Decision) {
    headers.insert("ratelimit-limit", HeaderValue::from(d.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(d.reset_secs));
}

/// Middleware after authentication: counts the request against its key.
pub async fn limit(State(limiter): State<RateLimiter>, req: Request, next: Next) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().copied() else {
        return next.run(req).await;
    };
    if !limiter.enabled() {
        return next.run(req).await;
    }
    let decision = limiter.check(caller.key_id(), Instant::now());
    let mut response = if decision.allowed {
        next.run(req).await
    } else {
        metrics::counter!("rate_limited_total").increment(1);
        ApiError::RateLimited {
            retry_after_secs: decision.retry_after_secs,
        }
        .into_response()
    };
    write_headers(response.headers_mut(), &decision);
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimitSettings {
            enabled: true,
            per_second,
            burst,
        })
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let l = limiter(2.0, 3);
        let key = Uuid::new_v4();
        let t0 = Instant::now();
        for remaining in [2, 1, 0] {
            let d = l.check(key, t0);
            assert!(d.allowed);
            assert_eq!(d.remaining, remaining);
        }
        let refused = l.check(key, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, 1);
        // Half a second at 2/s buys one more request.
        assert!(l.check(key, t0 + Duration::from_millis(500)).allowed);
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let l = limiter(1.0, 1);
        let t0 = Instant::now();
        assert!(l.check(Uuid::new_v4(), t0).allowed);
        assert!(l.check(Uuid::new_v4(), t0).allowed);
    }
}
