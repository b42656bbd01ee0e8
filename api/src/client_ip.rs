//! Which address a request comes from, for the allowlist, lockouts and the audit trail.
//!
//! The socket peer is the client unless proxy trust is on *and* the peer is a trusted proxy. Then
//! `X-Forwarded-For` is walked from the right (the hop our proxy appended) and the first address
//! that is not itself a trusted proxy is the client. Hops left of it were written by the client and
//! are never believed.

use std::net::IpAddr;

use axum::http::HeaderMap;
use hyperion_vault_core::allowlist::{Allowlist, canonical};

pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// Proxy trust from configuration. `trusted` empty means no proxy is trusted.
#[derive(Debug, Clone, Default)]
pub struct ProxyTrust {
    pub enabled: bool,
    pub trusted: Allowlist,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIpError {
    #[error("X-Forwarded-For is malformed")]
    MalformedHeader,
}

/// The client address of a request whose socket peer is `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trust: &ProxyTrust) -> Result<IpAddr, ClientIpError> {
    let peer = canonical(peer);
    if !trust.enabled || !trust.trusted.allows(peer) {
        return Ok(peer);
    }
    // Several header lines are one list, in order (RFC 9110 §5.3).
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all(FORWARDED_FOR) {
        let text = value.to_str().map_err(|_| ClientIpError::MalformedHeader)?;
        for raw in text.split(',') {
            hops.push(parse_hop(raw.trim()).ok_or(ClientIpError::MalformedHeader)?);
        }
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        client = hop;
        if !trust.trusted.allows(hop) {
            break;
        }
    }
    Ok(client)
}

/// One hop: an IPv4/IPv6 address, optionally bracketed or with a port (some proxies add them).
fn parse_hop(raw: &str) -> Option<IpAddr> {
    if raw.is_empty() || raw.len() > 64 {
        return None;
    }
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = raw.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return inside.parse::<IpAddr>().ok().filter(IpAddr::is_ipv6).map(canonical);
    }
    let (host, port) = raw.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn trust(cidrs: &str) -> ProxyTrust {
        ProxyTrust { enabled: true, trusted: Allowlist::parse(cidrs).unwrap() }
    }

    #[test]
    fn header_ignored_without_trust() {
        let h = headers(&["10.0.0.1"]);
        let off = ProxyTrust { enabled: false, trusted: Allowlist::parse("0.0.0.0/0").unwrap() };
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &off).unwrap(), ip("203.0.113.9"));
        // Trust on, but the peer is not a trusted proxy: a spoofed header from a client.
        let t = trust("192.168.0.0/16");
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &t).unwrap(), ip("203.0.113.9"));
        // Even a garbage header from an untrusted peer is simply ignored.
        let bad = headers(&["not an ip"]);
        assert_eq!(client_ip(ip("203.0.113.9"), &bad, &t).unwrap(), ip("203.0.113.9"));
    }

    #[test]
    fn rightmost_untrusted_hop_wins() {
        let t = trust("10.0.0.0/8");
        // client-supplied "1.1.1.1" is left of the real client 198.51.100.7
        let h = headers(&["1.1.1.1, 198.51.100.7, 10.0.0.3"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &t).unwrap(), ip("198.51.100.7"));
        // the same across several header lines
        let h = headers(&["1.1.1.1", "198.51.100.7,10.0.0.3"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &t).unwrap(), ip("198.51.100.7"));
        // every hop trusted: the left-most one is the best we know
        let h = headers(&["10.1.1.1, 10.0.0.3"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &t).unwrap(), ip("10.1.1.1"));
        // no header from a trusted proxy: the proxy itself
        assert_eq!(client_ip(ip("10.0.0.2"), &HeaderMap::new(), &t).unwrap(), ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_ports_and_mapped_addresses() {
        let t = trust("10.0.0.0/8,fd00::/8");
        let h = headers(&["[2001:db8::1]:443, 198.51.100.7:8080"]);
        assert_eq!(client_ip(ip("fd00::1"), &h, &t).unwrap(), ip("198.51.100.7"));
        let h = headers(&["2001:db8::1"]);
        assert_eq!(client_ip(ip("::ffff:10.0.0.2"), &h, &t).unwrap(), ip("2001:db8::1"));
        let h = headers(&["::ffff:198.51.100.7"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &t).unwrap(), ip("198.51.100.7"));
    }

    #[test]
    fn malformed_from_a_trusted_proxy_is_an_error_not_a_crash() {
        let t = trust("10.0.0.0/8");
        for bad in [
            "",
            "a,b",
            "1.2.3.4,,5.6.7.8",
            "1.2.3.4:99999999",
            "[::1",
            "[1.2.3.4]",
            "unknown",
            "1.2.3.4 5.6.7.8",
        ] {
            let h = headers(&[bad]);
            assert_eq!(client_ip(ip("10.0.0.2"), &h, &t), Err(ClientIpError::MalformedHeader), "{bad:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(FORWARDED_FOR, HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap());
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &t), Err(ClientIpError::MalformedHeader));
    }
}
