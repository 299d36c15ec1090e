//! Who the client is, for the pre-auth limiter.
//!
//! Policy: the socket peer is the client. `Forwarded` (RFC 7239) or, without
//! it, `X-Forwarded-For` are believed only when the peer is a configured
//! trusted proxy, and then the chain is read from the right: the first hop
//! that is not a trusted proxy is the client. A client cannot escape its
//! limit by writing its own header, because the hops it adds sit to the left
//! of the one the trusted proxy appended. An unreadable hop stops the walk at
//! the proxy (the proxy's own bucket, never a client-chosen one).

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Resolves the client address of a request that arrived from `peer`.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let chain = forwarded_chain(headers).unwrap_or_else(|| xff_chain(headers));
    let mut last_trusted = peer;
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => last_trusted = *ip,
            Some(ip) => return *ip,
            None => return last_trusted,
        }
    }
    last_trusted
}

/// The key the per-IP limiter uses: IPv4 as is, IPv6 by its /64 (one
/// subscriber usually holds a whole /64, and rotating inside it must not
/// buy fresh quota).
pub fn limiter_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Hops from `Forwarded: for=...` elements, or `None` when the header is
/// absent. `None` entries are hops that are not an IP (obfuscated, unknown).
fn forwarded_chain(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut chain = Vec::new();
    let mut seen = false;
    for value in headers.get_all("forwarded") {
        seen = true;
        let Ok(text) = value.to_str() else {
            chain.push(None);
            continue;
        };
        for element in text.split(',') {
            let hop = element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| parse_node(v.trim().trim_matches('"')));
            chain.push(hop);
        }
    }
    seen.then_some(chain)
}

fn xff_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut chain = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        match value.to_str() {
            Ok(text) => chain.extend(text.split(',').map(|h| parse_node(h.trim()))),
            Err(_) => chain.push(None),
        }
    }
    chain
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = node.strip_prefix('[') {
        let end = rest.find(']')?;
        return rest[..end].parse::<IpAddr>().ok().map(canonical);
    }
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(resolve(ip("9.9.9.9"), &h, &[]), ip("9.9.9.9"));
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(resolve(ip("9.9.9.9"), &h, &trusted), ip("9.9.9.9"));
    }

    #[test]
    fn a_trusted_proxy_chain_is_read_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client prepended a spoofed hop; the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.2")]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.7"));
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https",
        )]);
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &trusted),
            ip("2001:db8:cafe::17")
        );
        // Forwarded wins over X-Forwarded-For when both are present.
        let h = headers(&[
            ("forwarded", "for=198.51.100.1:80"),
            ("x-forwarded-for", "7.7.7.7"),
        ]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.1"));
    }

    #[test]
    fn an_unreadable_hop_stops_at_the_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("forwarded", "for=6.6.6.6, for=unknown")]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
        let h = headers(&[]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_clients_share_a_key_per_64() {
        assert_eq!(
            limiter_key(ip("2001:db8:1:2:aaaa::1")),
            limiter_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            limiter_key(ip("2001:db8:1:2::1")),
            limiter_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limiter_key(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
    }
}
