//! The client's address, for throttling and the audit log: the TCP peer, unless the
//! peer is a proxy trusted by configuration (`BEACON_TRUSTED_PROXIES`: IP addresses or
//! CIDR ranges, comma-separated; none by default), in which case the address that
//! proxy wrote into `X-Forwarded-For` is believed. Anyone else's `X-Forwarded-For` is
//! ignored, so a client cannot choose the address it is throttled under.
//!
//! The header is read from the right: each trusted proxy appends the peer it saw, so
//! the rightmost entry that is not a trusted proxy is the client. Entries further left
//! were written by the client itself and are never read.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, Request},
    http::{HeaderMap, HeaderName},
    middleware::Next,
    response::Response,
};
use ipnet::IpNet;

use crate::config;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 192.0.2.7, fd00::/8`.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR range"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// `var` (e.g. `BEACON_TRUSTED_PROXIES`), empty when unset.
    pub fn from_env(var: &str) -> config::Result<Self> {
        config::optional::<String>(var)?
            .map(|v| Self::parse(&v).map_err(|e| config::ConfigError::new(var, e)))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`: `peer` itself unless it is trusted, else the rightmost
    /// address in `X-Forwarded-For` that is not a trusted proxy (a malformed entry stops
    /// the walk at the last address known to be good).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        let hops = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|v| v.to_str().unwrap_or("?").rsplit(','));
        for hop in hops {
            let Some(ip) = parse_hop(hop.trim()) else {
                break;
            };
            client = ip.to_canonical();
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// `192.0.2.1`, `192.0.2.1:1234`, `2001:db8::1` or `[2001:db8::1]:1234`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The resolved client address, put into every request's extensions by [`layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Middleware (`axum::middleware::from_fn_with_state(trusted, client_addr::layer)`):
/// resolves the client address of each request once, into [`ClientAddr`].
pub async fn layer(
    axum::extract::State(trusted): axum::extract::State<TrustedProxies>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let client = trusted.client_ip(peer.ip(), request.headers());
        request.extensions_mut().insert(ClientAddr(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let none = TrustedProxies::default();
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.0.2.7").unwrap();
        let forged = headers(&["203.0.113.9"]);
        // An untrusted caller is keyed on its own address, whatever it sends.
        assert_eq!(none.client_ip(ip("10.1.2.3"), &forged), ip("10.1.2.3"));
        assert_eq!(
            proxies.client_ip(ip("198.51.100.1"), &forged),
            ip("198.51.100.1")
        );
        // A trusted proxy's header is read from the right, past other trusted proxies;
        // what the client wrote further left is never read.
        assert_eq!(
            proxies.client_ip(ip("192.0.2.7"), &forged),
            ip("203.0.113.9")
        );
        let chain = headers(&["1.1.1.1, 203.0.113.9", "10.0.0.5"]);
        assert_eq!(proxies.client_ip(ip("10.9.9.9"), &chain), ip("203.0.113.9"));
        // Ports, IPv6, IPv4-mapped IPv6 peers.
        let v6 = headers(&["[2001:db8::1]:4711"]);
        assert_eq!(
            proxies.client_ip(ip("::ffff:10.0.0.1"), &v6),
            ip("2001:db8::1")
        );
        assert_eq!(
            proxies.client_ip(ip("10.0.0.1"), &headers(&["203.0.113.9:80"])),
            ip("203.0.113.9")
        );
        // Garbage stops the walk at the last good address; no header: the peer.
        let garbage = headers(&["203.0.113.9, nonsense"]);
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &garbage), ip("10.0.0.1"));
        assert_eq!(
            proxies.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        // Only trusted proxies all the way: the leftmost of them.
        let internal = headers(&["10.0.0.2"]);
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &internal), ip("10.0.0.2"));
    }

    #[test]
    fn the_list_is_parsed_strictly() {
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
        assert!(
            TrustedProxies::parse("127.0.0.1, ::1/128")
                .unwrap()
                .contains(ip("::1"))
        );
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("localhost").is_err());
    }
}
