//! Rate limits of the identity layer: failed authentications per client address
//! (`AUTH_FAILURES_PER_MINUTE`), requests per organization (`RATE_LIMIT_PER_ORG`), and how the
//! client address is found behind trusted reverse proxies (`TRUSTED_PROXIES`).
//!
//! Both limits are GCRA (governor): a budget of `n` that refills continuously, one unit every
//! `period / n`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;
use poem::http::{HeaderMap, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use uuid::Uuid;

use crate::error::ApiError;

/// `AUTH_FAILURES_PER_MINUTE` when it is not set.
pub const DEFAULT_AUTH_FAILURES_PER_MINUTE: NonZeroU32 = NonZeroU32::new(20).expect("not zero");

/// Stale keys are dropped once every this many requests, so that memory stays bounded however
/// many addresses or organizations are seen.
const HOUSEKEEPING_EVERY: u64 = 1024;

/// The reverse proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`): a
/// comma-separated list of CIDRs (`10.0.0.0/8`) and single addresses (`::1`). None by default,
/// and then `X-Forwarded-For` is ignored: any client can write it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `TRUSTED_PROXIES`; an empty list means none. The error names the bad item.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{item}` is not an IP address or CIDR"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies. An IPv4-mapped IPv6 address counts as IPv4.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The address of the client: the peer (`None` when the peer is not an IP socket), unless
    /// the peer is a trusted proxy. Then `X-Forwarded-For` is walked from the right, past trusted
    /// proxies, to the first untrusted address (the leftmost when every hop is trusted); a
    /// malformed entry ends the walk at the last good address seen.
    pub fn client_address(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        // Each proxy appends the address it got the request from, so the right end is the
        // closest hop and the only part that trusted proxies wrote.
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            // A value that is not text is malformed: "" ends the walk like any bad entry.
            .flat_map(|value| value.to_str().unwrap_or("").rsplit(','));
        let mut client = peer;
        for hop in hops {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        Some(client)
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        Self::parse(list)
    }
}

/// One `X-Forwarded-For` entry: an address, also accepted with a port (`1.2.3.4:5678`,
/// `[::1]:80`) as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let ip = hop
        .parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()?;
    Some(ip.to_canonical())
}

/// Says once every [`HOUSEKEEPING_EVERY`] calls that stale keys should be dropped.
#[derive(Default)]
struct Housekeeping(AtomicU64);

impl Housekeeping {
    fn due(&self) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed) % HOUSEKEEPING_EVERY == HOUSEKEEPING_EVERY - 1
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold plain values that no panic can leave half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `None` is the one key shared by every request whose peer is not an IP socket.
type ClientKey = Option<IpAddr>;

type FailureLimiter = RateLimiter<
    ClientKey,
    DefaultKeyedStateStore<ClientKey>,
    DefaultClock,
    StateInformationMiddleware,
>;

struct FailureBudget {
    limiter: FailureLimiter,
    /// The addresses whose budget is used up, each with the instant it gets one failure back.
    blocked: Mutex<HashMap<ClientKey, Instant>>,
    refill: Duration,
    proxies: TrustedProxies,
    housekeeping: Housekeeping,
}

impl FailureBudget {
    /// How long `client` must still wait, if its budget is used up. Consumes nothing.
    fn blocked_for(&self, client: ClientKey) -> Option<Duration> {
        let until = *lock(&self.blocked).get(&client)?;
        until
            .checked_duration_since(Instant::now())
            .filter(|wait| !wait.is_zero())
    }

    fn count_failure(&self, client: ClientKey) {
        let until = match self.limiter.check_key(&client) {
            Ok(state) if state.remaining_burst_capacity() > 0 => return,
            // That failure used the last unit. Governor cannot say when the next one conforms
            // without consuming it, but it is within one refill interval (exactly that after a
            // burst): blocking for the whole interval is never looser than the quota.
            Ok(_) => Instant::now() + self.refill,
            // Concurrent failures got past `blocked_for` together; governor refused this one
            // without consuming anything, and knows exactly when the next conforms.
            Err(not_until) => not_until.earliest_possible(),
        };
        let mut blocked = lock(&self.blocked);
        let entry = blocked.entry(client).or_insert(until);
        *entry = (*entry).max(until);
    }

    fn tidy(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = Instant::now();
        let mut blocked = lock(&self.blocked);
        blocked.retain(|_, until| *until > now);
        blocked.shrink_to_fit();
    }
}

/// Limits failed authentications per client address (`AUTH_FAILURES_PER_MINUTE`), for the
/// routes that take credentials. A request from an address that has used up its budget is
/// answered 429 with `Retry-After` without reaching the inner endpoint, so no key is looked up;
/// every 401 the inner endpoint answers uses one unit. Clones share the budget.
#[derive(Clone)]
pub struct AuthFailureLimit(Arc<FailureBudget>);

impl AuthFailureLimit {
    /// A budget of `per_minute` failures per address, refilled continuously, with the client
    /// address found through `proxies`.
    pub fn new(per_minute: NonZeroU32, proxies: TrustedProxies) -> Self {
        Self::with_quota(Quota::per_minute(per_minute), proxies)
    }

    fn with_quota(quota: Quota, proxies: TrustedProxies) -> Self {
        Self(Arc::new(FailureBudget {
            limiter: RateLimiter::keyed(quota).with_middleware(),
            blocked: Mutex::default(),
            refill: quota.replenish_interval(),
            proxies,
            housekeeping: Housekeeping::default(),
        }))
    }
}

impl Default for AuthFailureLimit {
    /// [`DEFAULT_AUTH_FAILURES_PER_MINUTE`], no trusted proxies.
    fn default() -> Self {
        Self::new(DEFAULT_AUTH_FAILURES_PER_MINUTE, TrustedProxies::default())
    }
}

impl<E: Endpoint> Middleware<E> for AuthFailureLimit {
    type Output = AuthFailureLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AuthFailureLimitEndpoint {
            inner,
            budget: Arc::clone(&self.0),
        }
    }
}

/// An endpoint wrapped by [`AuthFailureLimit`].
pub struct AuthFailureLimitEndpoint<E> {
    inner: E,
    budget: Arc<FailureBudget>,
}

impl<E: Endpoint> Endpoint for AuthFailureLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let budget = &self.budget;
        if budget.housekeeping.due() {
            budget.tidy();
        }
        let peer = req.remote_addr().as_socket_addr().map(SocketAddr::ip);
        let client = budget.proxies.client_address(peer, req.headers());
        if let Some(wait) = budget.blocked_for(client) {
            return Err(ApiError::rate_limited(
                "too many failed authentications from this address",
                wait,
            )
            .into());
        }
        let outcome = self.inner.call(req).await.map(IntoResponse::into_response);
        // An error keeps its own status; it stays an error so that the outer layers still
        // render it as problem+json.
        let status = match &outcome {
            Ok(response) => response.status(),
            Err(err) => err.status(),
        };
        if status == StatusCode::UNAUTHORIZED {
            budget.count_failure(client);
        }
        outcome
    }
}

type OrgLimiter = RateLimiter<Uuid, DefaultKeyedStateStore<Uuid>, DefaultClock>;

/// Limits the requests of each organization (`RATE_LIMIT_PER_ORG`, per second), with a burst
/// of the same size.
pub struct OrgRateLimit {
    limiter: OrgLimiter,
    housekeeping: Housekeeping,
}

impl OrgRateLimit {
    /// `per_second` requests per second for each organization.
    pub fn new(per_second: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second)),
            housekeeping: Housekeeping::default(),
        }
    }

    /// Counts one request of `org_id`; 429 with `Retry-After` when it is over the limit (and then
    /// it is not counted).
    pub fn check(&self, org_id: Uuid) -> Result<(), ApiError> {
        if self.housekeeping.due() {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&org_id).map_err(|not_until| {
            ApiError::rate_limited(
                "too many requests for this organization",
                not_until.wait_time_from(self.limiter.clock().now()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::atomic::AtomicUsize;

    use poem::http::uri::Scheme;
    use poem::web::{LocalAddr, RemoteAddr};
    use poem::{Addr, Body, RequestParts};

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("a test address")
    }

    fn proxies(list: &str) -> TrustedProxies {
        TrustedProxies::parse(list).expect("a valid list")
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().expect("a header value"));
        }
        headers
    }

    #[test]
    fn parses_trusted_proxies() {
        assert!(proxies("").is_empty());
        assert!(proxies(" , ").is_empty());
        let list = proxies("10.0.0.0/8, 192.168.1.7,::1, fd00::/8,");
        assert!(list.is_trusted(ip("10.20.30.40")));
        assert!(list.is_trusted(ip("192.168.1.7")));
        assert!(!list.is_trusted(ip("192.168.1.8")));
        assert!(list.is_trusted(ip("::1")));
        assert!(list.is_trusted(ip("fd12::5")));
        assert!(list.is_trusted(ip("::ffff:10.1.2.3")));
        assert!(!list.is_trusted(ip("2001:db8::1")));
        assert_eq!(
            TrustedProxies::parse("10.0.0.1, 10.0.0/8"),
            Err("`10.0.0/8` is not an IP address or CIDR".to_owned())
        );
        assert_eq!(
            "proxy".parse::<TrustedProxies>(),
            Err("`proxy` is not an IP address or CIDR".to_owned())
        );
    }

    #[test]
    fn without_trusted_proxies_forwarded_for_is_ignored() {
        let none = TrustedProxies::default();
        let headers = forwarded(&["1.1.1.1"]);
        assert_eq!(
            none.client_address(Some(ip("10.0.0.1")), &headers),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(none.client_address(None, &headers), None);
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof_its_address() {
        let list = proxies("10.0.0.0/8");
        let headers = forwarded(&["1.1.1.1, 10.0.0.2"]);
        assert_eq!(
            list.client_address(Some(ip("203.0.113.9")), &headers),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop_from_the_right() {
        let list = proxies("10.0.0.0/8");
        let peer = Some(ip("10.0.0.1"));
        // The client's own (spoofed) entries sit left of the real one.
        let headers = forwarded(&["6.6.6.6, 203.0.113.9, 10.0.0.3"]);
        assert_eq!(list.client_address(peer, &headers), Some(ip("203.0.113.9")));
        // Several header lines are one list, in order.
        let headers = forwarded(&["6.6.6.6", "203.0.113.9", "10.0.0.3"]);
        assert_eq!(list.client_address(peer, &headers), Some(ip("203.0.113.9")));
        // Every hop trusted: the leftmost.
        let headers = forwarded(&["10.0.0.7, 10.0.0.3"]);
        assert_eq!(list.client_address(peer, &headers), Some(ip("10.0.0.7")));
        // No header: the peer.
        assert_eq!(list.client_address(peer, &HeaderMap::new()), peer);
        // With a port, as some proxies write it.
        let headers = forwarded(&["203.0.113.9:5123"]);
        assert_eq!(list.client_address(peer, &headers), Some(ip("203.0.113.9")));
    }

    #[test]
    fn a_malformed_entry_ends_the_walk() {
        let list = proxies("10.0.0.0/8");
        let peer = Some(ip("10.0.0.1"));
        let headers = forwarded(&["203.0.113.9, bogus, 10.0.0.3"]);
        assert_eq!(list.client_address(peer, &headers), Some(ip("10.0.0.3")));
        let headers = forwarded(&["203.0.113.9, 10.0.0.3, "]);
        assert_eq!(list.client_address(peer, &headers), peer);
        let headers = forwarded(&["203.0.113.9,,10.0.0.3"]);
        assert_eq!(list.client_address(peer, &headers), Some(ip("10.0.0.3")));
    }

    #[test]
    fn ipv6_peers_and_hops() {
        let list = proxies("2001:db8:1::/48, 10.0.0.0/8");
        let headers = forwarded(&["2001:db8:ffff::42, 2001:db8:1::9"]);
        assert_eq!(
            list.client_address(Some(ip("2001:db8:1::1")), &headers),
            Some(ip("2001:db8:ffff::42"))
        );
        let headers = forwarded(&["[2001:db8:ffff::42]:443"]);
        assert_eq!(
            list.client_address(Some(ip("2001:db8:1::1")), &headers),
            Some(ip("2001:db8:ffff::42"))
        );
        // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6.
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(
            list.client_address(Some(mapped), &headers),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            TrustedProxies::default()
                .client_address(Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), &headers),
            Some(ip("::1"))
        );
    }

    /// Answers the status named by `x-outcome` (`401`, `401-err` for a 401 error, else 200) and
    /// counts its calls.
    struct Inner(Arc<AtomicUsize>);

    impl Endpoint for Inner {
        type Output = Response;

        async fn call(&self, req: Request) -> poem::Result<Response> {
            self.0.fetch_add(1, Ordering::SeqCst);
            match req.header("x-outcome") {
                Some("401") => Ok(StatusCode::UNAUTHORIZED.into_response()),
                Some("401-err") => Err(ApiError::unauthenticated().into()),
                _ => Ok(StatusCode::OK.into_response()),
            }
        }
    }

    fn request(peer: Option<IpAddr>, outcome: &str) -> Request {
        let (parts, ()) = poem::http::Request::builder()
            .header("x-outcome", outcome)
            .body(())
            .expect("a request")
            .into_parts();
        let remote = RemoteAddr(peer.map_or_else(Addr::default, |ip| {
            Addr::SocketAddr(SocketAddr::new(ip, 40000))
        }));
        let parts = RequestParts::from((parts, LocalAddr::default(), remote, Scheme::HTTP));
        Request::from_parts(parts, Body::empty())
    }

    async fn send(
        ep: &impl Endpoint<Output = Response>,
        peer: Option<IpAddr>,
        outcome: &str,
    ) -> Response {
        ep.call(request(peer, outcome))
            .await
            .unwrap_or_else(poem::Error::into_response)
    }

    fn limited(quota: Quota) -> (AuthFailureLimitEndpoint<Inner>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let limit = AuthFailureLimit::with_quota(quota, TrustedProxies::default());
        (limit.transform(Inner(Arc::clone(&calls))), calls)
    }

    #[tokio::test]
    async fn failures_beyond_the_budget_are_refused_before_the_inner_endpoint() {
        let (ep, calls) = limited(Quota::per_minute(NonZeroU32::new(3).expect("not zero")));
        let (a, b) = (Some(ip("203.0.113.1")), Some(ip("203.0.113.2")));
        assert_eq!(send(&ep, a, "200").await.status(), StatusCode::OK);
        assert_eq!(send(&ep, a, "401").await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            send(&ep, a, "401-err").await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(send(&ep, a, "401").await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        let refused = send(&ep, a, "200").await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("a Retry-After in seconds");
        assert!((1..=20).contains(&retry_after), "{retry_after}");
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        assert_eq!(send(&ep, b, "401").await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(send(&ep, b, "200").await.status(), StatusCode::OK);
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn successes_do_not_count() {
        let (ep, calls) = limited(Quota::per_minute(NonZeroU32::new(1).expect("not zero")));
        for _ in 0..10 {
            assert_eq!(send(&ep, None, "200").await.status(), StatusCode::OK);
        }
        // Peers that are not IP sockets share one key.
        assert_eq!(
            send(&ep, None, "401").await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&ep, None, "200").await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(calls.load(Ordering::SeqCst), 11);
    }

    #[tokio::test]
    async fn the_budget_refills() {
        let quota = Quota::with_period(Duration::from_millis(100))
            .expect("a period")
            .allow_burst(NonZeroU32::new(3).expect("not zero"));
        let (ep, calls) = limited(quota);
        let a = Some(ip("203.0.113.1"));
        for _ in 0..3 {
            assert_eq!(send(&ep, a, "401").await.status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(
            send(&ep, a, "401").await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(send(&ep, a, "401").await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            send(&ep, a, "401").await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        // Once refilled, the address is indistinguishable from a new one and is dropped.
        tokio::time::sleep(Duration::from_millis(500)).await;
        ep.budget.tidy();
        assert!(ep.budget.limiter.is_empty());
        assert!(lock(&ep.budget.blocked).is_empty());
    }

    #[test]
    fn org_rate_limit_is_per_organization() {
        let limit = OrgRateLimit::new(NonZeroU32::new(5).expect("not zero"));
        let (org, other) = (Uuid::now_v7(), Uuid::now_v7());
        for _ in 0..5 {
            assert!(limit.check(org).is_ok());
        }
        let refused = limit
            .check(org)
            .expect_err("the sixth is refused")
            .into_response();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            refused
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        assert!(limit.check(other).is_ok());
    }
}
