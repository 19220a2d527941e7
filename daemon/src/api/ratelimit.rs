//! Request rate limits per TCP client address and per API key
//! (`server.client_requests_per_minute` / `server.key_requests_per_minute`,
//! with their bursts): GCRA buckets from the `governor` crate, one per
//! address or key, refused with 429 + Retry-After.
//!
//! Owns: the buckets and their memory bound. A key's bucket is found by a
//! keyed hash of the key (SipHash with a per-process random key), so no
//! secret is held here. At most [`MAX_TRACKED`] buckets per kind: beyond
//! that the idle ones are dropped first, and if none is idle the request is
//! refused (a flood of distinct addresses cannot grow memory).
//! Must not: decide which requests are limited (the router does).

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Buckets of one kind kept at most.
pub const MAX_TRACKED: usize = 10_000;

/// Why a request was refused, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    /// Whole seconds, at least 1 (Retry-After).
    pub retry_after_secs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Client,
    Key,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Client => "client address",
            Scope::Key => "API key",
        }
    }
}

/// Both limits; either may be off.
pub struct RateLimits {
    clients: Option<DefaultKeyedRateLimiter<IpAddr>>,
    keys: Option<DefaultKeyedRateLimiter<u64>>,
    /// Hashes keys to their bucket id.
    hasher: std::collections::hash_map::RandomState,
    clock: DefaultClock,
}

fn quota(per_minute: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_minute)?;
    Some(Quota::per_minute(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)))
}

impl RateLimits {
    pub fn new(client_per_minute: u32, client_burst: u32, key_per_minute: u32, key_burst: u32) -> RateLimits {
        RateLimits {
            clients: quota(client_per_minute, client_burst).map(DefaultKeyedRateLimiter::dashmap),
            keys: quota(key_per_minute, key_burst).map(DefaultKeyedRateLimiter::dashmap),
            hasher: std::collections::hash_map::RandomState::new(),
            clock: DefaultClock::default(),
        }
    }

    /// One request from this TCP client address.
    pub fn check_client(&self, ip: IpAddr) -> Result<(), Limited> {
        let Some(l) = &self.clients else { return Ok(()) };
        self.check(l, &ip.to_canonical(), Scope::Client)
    }

    /// One request with this (verified) API key.
    pub fn check_key(&self, key: &str) -> Result<(), Limited> {
        let Some(l) = &self.keys else { return Ok(()) };
        self.check(l, &self.hasher.hash_one(key), Scope::Key)
    }

    fn check<K: Clone + Hash + Eq>(&self, l: &DefaultKeyedRateLimiter<K>, k: &K, scope: Scope) -> Result<(), Limited> {
        if l.len() >= MAX_TRACKED {
            l.retain_recent();
            l.shrink_to_fit();
            if l.len() >= MAX_TRACKED {
                return Err(Limited { scope, retry_after_secs: 1 });
            }
        }
        l.check_key(k).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Limited { scope, retry_after_secs: whole_secs(wait) }
        })
    }
}

/// A wait as Retry-After: whole seconds, rounded up, at least 1.
fn whole_secs(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_applies_per_client_and_per_key() {
        let r = RateLimits::new(60, 3, 120, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(r.check_client(a), Ok(()));
        }
        let refused = r.check_client(a).unwrap_err();
        assert_eq!(refused.scope, Scope::Client);
        assert!((1..=2).contains(&refused.retry_after_secs), "{refused:?}");
        assert_eq!(r.check_client(b), Ok(()), "another client has its own bucket");
        // The IPv4-mapped form of a is a.
        assert!(r.check_client("::ffff:10.0.0.1".parse().unwrap()).is_err());

        assert_eq!(r.check_key("app-one"), Ok(()));
        assert_eq!(r.check_key("app-one"), Ok(()));
        assert_eq!(r.check_key("app-one").map_err(|l| l.scope), Err(Scope::Key));
        assert_eq!(r.check_key("app-two"), Ok(()));
    }

    #[test]
    fn zero_means_no_limit() {
        let r = RateLimits::new(0, 10, 0, 10);
        for _ in 0..1000 {
            assert_eq!(r.check_client(IpAddr::from([10, 0, 0, 1])), Ok(()));
            assert_eq!(r.check_key("app-x"), Ok(()));
        }
    }

    #[test]
    fn distinct_clients_beyond_the_bound_are_refused_not_stored() {
        let r = RateLimits::new(60, 1, 0, 1);
        for i in 0..MAX_TRACKED as u32 {
            assert_eq!(r.check_client(IpAddr::from((0x0a00_0000u32 + i).to_be_bytes())), Ok(()));
        }
        // All are recent: one more distinct address is refused, and memory stays bounded.
        assert!(r.check_client(IpAddr::from([192, 168, 0, 1])).is_err());
        assert!(r.clients.as_ref().is_some_and(|l| l.len() <= MAX_TRACKED));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(whole_secs(Duration::from_millis(1)), 1);
        assert_eq!(whole_secs(Duration::from_millis(1000)), 1);
        assert_eq!(whole_secs(Duration::from_millis(1001)), 2);
        assert_eq!(whole_secs(Duration::ZERO), 1);
    }
}
