//! The SSRF rules for outbound requests (webhook deliveries, mid-call
//! action upstreams, and the URLs `callgate check` accepts).
//!
//! Policy: unless an endpoint is allow-listed (`allow_private`), requests
//! never reach loopback, private (RFC 1918), carrier-grade NAT, link-local
//! (cloud metadata at 169.254.169.254 included), unique-local, multicast,
//! unspecified or broadcast addresses, nor their IPv4-mapped IPv6 forms.
//! `https` is required unless `allow_http`. These are the rules; the HTTP
//! clients apply them to the addresses they actually connect to
//! (`webhooks::ssrf`).

use std::net::{IpAddr, Ipv4Addr};

use url::Url;

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    #[error("`{0}` is not an http(s) URL")]
    Scheme(String),
    #[error("plain http is not allowed for this endpoint (set allow_http)")]
    PlainHttp,
    #[error("refusing to connect to {addr} ({why}); allow-list the endpoint with allow_private")]
    Forbidden { addr: IpAddr, why: &'static str },
    #[error("`{0}` resolves to no address this endpoint may reach")]
    NoAllowedAddress(String),
}

/// Why an address is off limits, or `None` when it is a public one.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                forbidden_v4(Ipv4Addr::new(
                    (hi >> 8) as u8,
                    hi as u8,
                    (lo >> 8) as u8,
                    lo as u8,
                ))
            };
            if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                // IPv4-compatible (deprecated `::a.b.c.d`): judge the IPv4.
                return embedded(s[6], s[7]);
            }
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("unique-local")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if s[0] == 0x2002 {
                // 6to4 embeds an IPv4 address: judge that one.
                forbidden_v4(Ipv4Addr::new(
                    (s[1] >> 8) as u8,
                    s[1] as u8,
                    (s[2] >> 8) as u8,
                    s[2] as u8,
                ))
            } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
                Some("NAT64 local-use")
            } else if s[0] == 0x2001 && s[1] == 0 {
                // Teredo embeds an obfuscated IPv4 address.
                Some("Teredo")
            } else if s[0] == 0x2001 && s[1] == 0xdb8 {
                Some("documentation")
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                // NAT64 well-known prefix.
                forbidden_v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ))
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some(if o == [169, 254, 169, 254] {
            "cloud metadata"
        } else {
            "link-local"
        })
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("carrier-grade NAT")
    } else if o[0] == 0 {
        Some("unspecified")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignments")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking")
    } else if matches!(
        (o[0], o[1], o[2]),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
    ) {
        Some("documentation")
    } else if ip.is_broadcast() || ip.is_multicast() || o[0] >= 240 {
        Some("broadcast, multicast or reserved")
    } else {
        None
    }
}

/// Checks a URL's scheme and, when its host is an IP literal, the address.
pub fn check_url(url: &Url, allow_private: bool, allow_http: bool) -> Result<(), SsrfError> {
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err(SsrfError::PlainHttp),
        other => return Err(SsrfError::Scheme(other.to_owned())),
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        _ => None,
    };
    if let (Some(addr), false) = (literal, allow_private)
        && let Some(why) = forbidden(addr)
    {
        return Err(SsrfError::Forbidden { addr, why });
    }
    Ok(())
}

/// The usual addresses a guard must refuse (for tests and docs).
pub const REFUSED_EXAMPLES: [&str; 6] = [
    "127.0.0.1",
    "10.1.2.3",
    "169.254.169.254",
    "::1",
    "fd00::1",
    "::ffff:192.168.1.1",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused_and_public_ones_pass() {
        for bad in REFUSED_EXAMPLES.iter().chain(&[
            "172.16.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "fe80::1",
            "2002:7f00:1::",
            "64:ff9b::a00:1",
            "224.0.0.1",
            "::7f00:1",
            "::a00:1",
            "64:ff9b:1::1",
            "2001::1",
            "2001:db8::1",
            "192.0.0.8",
            "198.18.0.1",
            "203.0.113.5",
        ]) {
            assert!(
                forbidden(bad.parse().unwrap()).is_some(),
                "{bad} should be refused"
            );
        }
        for good in ["93.184.216.34", "2606:4700:4700::1111", "8.8.8.8"] {
            assert_eq!(forbidden(good.parse().unwrap()), None, "{good}");
        }
        assert_eq!(
            forbidden("169.254.169.254".parse().unwrap()),
            Some("cloud metadata")
        );
    }

    #[test]
    fn urls_need_https_and_public_literals_unless_allowed() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            check_url(&u("http://example.com/"), false, false),
            Err(SsrfError::PlainHttp)
        );
        assert!(check_url(&u("http://example.com/"), false, true).is_ok());
        assert!(check_url(&u("ftp://example.com/"), false, true).is_err());
        assert!(matches!(
            check_url(&u("https://10.0.0.1/x"), false, false),
            Err(SsrfError::Forbidden { .. })
        ));
        assert!(matches!(
            check_url(&u("https://[::1]/x"), false, false),
            Err(SsrfError::Forbidden { .. })
        ));
        assert!(check_url(&u("https://10.0.0.1/x"), true, false).is_ok());
        assert!(check_url(&u("https://example.com/x"), false, false).is_ok());
    }
}
