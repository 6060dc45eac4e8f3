//! Authentication and the rate limit, in one middleware, so the limit is
//! keyed by who the caller really is.
//!
//! A request whose bearer token verifies is limited per token subject: a
//! client cannot get a fresh budget by changing its token, since only
//! tokens we signed verify. Every other request — no token, or one that
//! fails verification — is limited per peer address: the socket's, or the
//! client named in `X-Forwarded-For` when the socket's peer is a configured
//! trusted proxy (never otherwise: the header is the client's to forge).
//! IPv6 peers are keyed by their /64, which one host usually holds whole.
//!
//! The verified caller is left in the request's extensions, where the
//! [`crate::auth::Caller`] extractor takes it, so a token is verified once.
//!
//! Memory is bounded: keys are subjects we issued tokens to and peer
//! addresses, never raw headers, and buckets that are full again (idle
//! keys) are dropped every [`RETAIN_EVERY`] and whenever the map grows past
//! its capacity.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;

use crate::auth::{bearer_token, AuthKeys, Caller};
use crate::error::ApiError;

/// How often buckets of idle keys are dropped.
pub const RETAIN_EVERY: Duration = Duration::from_secs(10);

/// Keys kept before idle ones are dropped at once rather than at the next
/// periodic sweep.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Whom a request is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The subject of a verified token.
    Subject(String),
    /// A peer address (an IPv6 address cut to its /64).
    Peer(IpAddr),
}

/// The rate limit of one process: a token bucket per [`ClientKey`].
pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<ClientKey>,
    capacity: usize,
    /// Nanoseconds since `started` of the last sweep.
    last_sweep: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("keys", &self.limiter.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl RateLimiter {
    /// `per_second` requests a second on average per key, `burst` at once;
    /// `None` when `per_second` is 0 (no limit).
    #[must_use]
    pub fn new(per_second: u64, burst: u32, capacity: usize) -> Option<Self> {
        let per_second = NonZeroU32::new(u32::try_from(per_second).unwrap_or(u32::MAX))?;
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Some(Self {
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ),
            capacity: capacity.max(1),
            last_sweep: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// Takes one request from `key`'s bucket; `Err` holds how long until it
    /// would be allowed.
    ///
    /// # Errors
    /// The bucket is empty.
    pub fn check(&self, key: &ClientKey) -> Result<(), Duration> {
        if self.limiter.len() > self.capacity {
            self.sweep_at_most_every(Duration::from_secs(1));
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Keys with a bucket.
    #[must_use]
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }

    /// Drops the buckets that are full again: a key seen again starts full,
    /// as it would have anyway.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_sweep.store(now, Ordering::Relaxed);
    }

    fn sweep_at_most_every(&self, every: Duration) {
        let now = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let last = self.last_sweep.load(Ordering::Relaxed);
        let every = u64::try_from(every.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) >= every
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep();
        }
    }

    /// Sweeps every [`RETAIN_EVERY`] on the current Tokio runtime, until
    /// the limiter is dropped; does nothing outside a runtime.
    pub fn sweep_in_background(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(RETAIN_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.sweep();
            }
        });
    }
}

/// Where requests come from: which peers are proxies whose
/// `X-Forwarded-For` we believe.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Proxies at these addresses or networks.
    #[must_use]
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer`, or — when `peer` is a trusted proxy —
    /// the right-most address of `X-Forwarded-For` that is not a trusted
    /// proxy (each proxy appends the peer it saw, so entries to the left
    /// of the first untrusted one are the client's to write).
    #[must_use]
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                // Not an address: what lies left of it cannot be believed.
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// A network (`10.0.0.0/8`) or one address (`10.0.0.7`), for
/// `--trusted-proxies`.
///
/// # Errors
/// Neither.
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an address or a network such as 10.0.0.0/8"))
}

/// The middleware's state.
#[derive(Clone, Debug)]
pub struct Gate {
    /// Token verification.
    pub auth: Arc<AuthKeys>,
    /// The limit, if any.
    pub limiter: Option<Arc<RateLimiter>>,
    /// Proxies whose `X-Forwarded-For` counts.
    pub proxies: TrustedProxies,
}

/// The key of a peer: the address, an IPv6 one cut to its /64.
#[must_use]
pub fn peer_key(ip: IpAddr) -> ClientKey {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    };
    ClientKey::Peer(ip)
}

/// Verifies the bearer token, if any, leaves the [`Caller`] in the
/// request's extensions, and applies the rate limit to the key it yields
/// (429 with `Retry-After` when the bucket is empty). A missing or bad
/// token is not refused here: routes that need one answer 401.
pub async fn authenticate(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let caller = bearer_token(request.headers())
        .ok()
        .and_then(|token| gate.auth.verify(token).ok())
        .map(|claims| Caller {
            sub: claims.sub,
            role: claims.role,
        });
    if let Some(limiter) = &gate.limiter {
        let key = match &caller {
            Some(caller) => ClientKey::Subject(caller.sub.clone()),
            None => {
                let peer = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
                peer_key(gate.proxies.client(peer, request.headers()))
            }
        };
        if let Err(wait) = limiter.check(&key) {
            metrics::counter!("clinicbook_http_rate_limited_total",
                "by" => if caller.is_some() { "subject" } else { "peer" })
            .increment(1);
            let mut response = ApiError::new(
                crate::error::Code::RateLimited,
                "too many requests; slow down and retry later",
            )
            .into_response();
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
    }
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let none = TrustedProxies::default();
        let spoofed = headers(&["203.0.113.9"]);
        assert_eq!(
            none.client(ip("198.51.100.1"), &spoofed),
            ip("198.51.100.1")
        );

        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        // From an untrusted peer the header is ignored.
        assert_eq!(
            proxies.client(ip("198.51.100.1"), &spoofed),
            ip("198.51.100.1")
        );
        // Behind the proxy: the right-most untrusted hop, whatever the client
        // wrote to its left.
        let forwarded = headers(&["1.1.1.1, 203.0.113.9", "10.0.0.7"]);
        assert_eq!(
            proxies.client(ip("10.0.0.2"), &forwarded),
            ip("203.0.113.9")
        );
        // Garbage stops the walk at the last believable hop.
        let garbage = headers(&["203.0.113.9, nonsense, 10.0.0.7"]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &garbage), ip("10.0.0.7"));
        // No header: the proxy itself.
        assert_eq!(
            proxies.client(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn proxies_are_addresses_or_networks() {
        assert!(parse_network("10.0.0.7").unwrap().contains(&ip("10.0.0.7")));
        assert!(parse_network("10.0.0.0/8")
            .unwrap()
            .contains(&ip("10.9.9.9")));
        assert!(parse_network("::1").unwrap().contains(&ip("::1")));
        assert!(parse_network("proxy.local").is_err());
    }

    #[test]
    fn an_ipv6_peer_is_keyed_by_its_64() {
        assert_eq!(
            peer_key(ip("2001:db8:1:2:aaaa::1")),
            peer_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            peer_key(ip("2001:db8:1:2::1")),
            peer_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(peer_key(ip("::ffff:192.0.2.1")), peer_key(ip("192.0.2.1")));
    }

    #[test]
    fn idle_buckets_are_dropped() {
        let limiter = RateLimiter::new(1_000_000, 1, 10).unwrap();
        for i in 0..100_u32 {
            let _ = limiter.check(&ClientKey::Subject(i.to_string()));
        }
        assert!(limiter.keys() > 0);
        // At a million a second, every bucket is full again at once.
        std::thread::sleep(Duration::from_millis(5));
        limiter.sweep();
        assert_eq!(limiter.keys(), 0);
    }

    #[test]
    fn a_key_past_its_burst_waits() {
        let limiter = RateLimiter::new(1, 2, 10).unwrap();
        let key = ClientKey::Peer(ip("192.0.2.1"));
        assert!(limiter.check(&key).is_ok());
        assert!(limiter.check(&key).is_ok());
        let wait = limiter.check(&key).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        // Another key has its own bucket.
        assert!(limiter.check(&ClientKey::Peer(ip("192.0.2.2"))).is_ok());
        assert!(RateLimiter::new(0, 5, 10).is_none());
    }
}
