//! Who the client is when a proxy stands in between: `TRUSTED_PROXIES` and the forwarding
//! headers, one rule for both transports (HTTP headers and gRPC metadata carry the same names).
//!
//! Behind the shipped ingress every TCP peer is the ingress controller, so without this every
//! customer shares one login bucket and one `client_ip`. But the headers are the client's to
//! write: they are believed only when the TCP peer is a trusted proxy, and then only as far
//! back as the chain stays trusted. The client is the rightmost address that is not itself a
//! trusted proxy (each proxy appends the address it saw, so everything left of the first
//! untrusted hop may be forged). `Forwarded` (RFC 7239) wins over `X-Forwarded-For` when both
//! are present.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// The address a request's throttling, session and log line are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// `TRUSTED_PROXIES`: CIDR blocks (or single addresses) of the proxies in front of the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// A comma-separated list: `10.0.0.0/8, 192.168.1.7, fd00::/8`. Empty: trust nobody.
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                IpNet::from_str(entry)
                    .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                    .map_err(|_| {
                        format!("`{entry}` is not an address or a CIDR block like 10.0.0.0/8")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request from TCP `peer`, given the values of its `Forwarded` and
    /// `X-Forwarded-For` headers (all of them, in order).
    pub fn client_address<'a>(
        &self,
        peer: IpAddr,
        forwarded: impl IntoIterator<Item = &'a str>,
        x_forwarded_for: impl IntoIterator<Item = &'a str>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded: Vec<&str> = forwarded.into_iter().collect();
        let hops: Vec<Option<IpAddr>> = if !forwarded.is_empty() {
            forwarded
                .iter()
                .flat_map(|value| value.split(','))
                .map(forwarded_for)
                .collect()
        } else {
            x_forwarded_for
                .into_iter()
                .flat_map(|value| value.split(','))
                .map(|hop| parse_hop(hop.trim()))
                .collect()
        };
        // From the nearest hop back: skip trusted proxies; the first other address is the
        // client. An unreadable entry ends the walk at the proxy that reported it.
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) if self.trusts(*ip) => client = *ip,
                Some(ip) => return *ip,
                None => return client,
            }
        }
        client
    }
}

/// The client of a request from `peer` with these headers (HTTP) or metadata (gRPC: the same
/// names): what both adapters call.
pub fn client_from_headers(
    proxies: &TrustedProxies,
    peer: IpAddr,
    headers: &http::HeaderMap,
) -> IpAddr {
    if proxies.is_empty() {
        return canonical(peer);
    }
    let values = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    proxies.client_address(peer, values("forwarded"), values("x-forwarded-for"))
}

/// An IPv4 address that arrived mapped into IPv6 (`::ffff:10.0.0.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// One `Forwarded` element's `for=` address, if it has a readable one.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_hop(value.trim().trim_matches('"')))
            .flatten()
    })
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(hop) {
        return Some(canonical(ip));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return IpAddr::from_str(inside).ok().map(canonical);
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    IpAddr::from_str(host).ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(s: &str) -> TrustedProxies {
        TrustedProxies::parse(s).unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_address(ip("203.0.113.9"), [], ["1.1.1.1"]),
            ip("203.0.113.9")
        );
        let some = proxies("10.0.0.0/8");
        assert_eq!(
            some.client_address(ip("203.0.113.9"), ["for=1.1.1.1"], ["1.1.1.1"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
        let p = proxies("10.0.0.0/8, 192.168.7.7");
        // The client forged the first entry; the ingress appended the address it saw.
        assert_eq!(
            p.client_address(ip("10.1.2.3"), [], ["6.6.6.6, 198.51.100.4"]),
            ip("198.51.100.4")
        );
        // Two trusted hops (a load balancer, then the ingress): walked past.
        assert_eq!(
            p.client_address(
                ip("10.1.2.3"),
                [],
                ["198.51.100.4, 192.168.7.7", "10.9.9.9"]
            ),
            ip("198.51.100.4")
        );
        // Only trusted hops: the farthest one is the best we know.
        assert_eq!(
            p.client_address(ip("10.1.2.3"), [], ["10.0.0.5"]),
            ip("10.0.0.5")
        );
        // No header at all: the proxy itself.
        assert_eq!(p.client_address(ip("10.1.2.3"), [], []), ip("10.1.2.3"));
    }

    #[test]
    fn forwarded_wins_and_its_syntax_is_read() {
        let p = proxies("10.0.0.0/8");
        assert_eq!(
            p.client_address(
                ip("10.1.2.3"),
                ["for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\""],
                ["6.6.6.6"],
            ),
            ip("2001:db8:cafe::17")
        );
        // An obfuscated or unknown hop ends the walk at the proxy that reported it.
        assert_eq!(
            p.client_address(ip("10.1.2.3"), ["for=unknown"], []),
            ip("10.1.2.3")
        );
        assert_eq!(
            p.client_address(ip("10.1.2.3"), [], ["198.51.100.4:5555"]),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn mapped_ipv4_and_bad_lists() {
        let p = proxies("10.0.0.0/8");
        assert_eq!(
            p.client_address(ip("::ffff:10.0.0.1"), [], ["198.51.100.4"]),
            ip("198.51.100.4")
        );
        assert!(TrustedProxies::parse("10.0.0.0/8, nonsense").is_err());
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(!proxies("127.0.0.1").is_empty());
    }
}
